"""`modelfn import-triton REPO --store URI`: a Triton model repository (`<model>/config.pbtxt`,
`<model>/<version>/model.onnx`) published as the same models and versions, so clients keep their model names and
version numbers.

Every model is checked before anything is written: ONNX only (platform `onnxruntime_onnx` or backend
`onnxruntime`; others are refused naming what they are), the config's name is its folder's, its inputs and outputs
(names, data types, dims with -1, `max_batch_size`'s batch dimension, `reshape`) agree with the ONNX model, and
`version_policy` picks the versions Triton would serve (`latest { num_versions }`, Triton's default latest 1;
`all`; `specific { versions }`). Then each version is published through `publish` with its own number. A version
already in the store with the same bytes is left as it is (an import can be re-run after adding a version); with
other bytes it is refused, as versions are immutable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfn.errors import ModelfnError, PublishError
from modelfn.model.signature import TensorSpec
from modelfn.store import ModelRepository, open_store
from modelfn.store.base import file_sha256
from modelfn.store.layout import ARTIFACT, check_name
from modelfn_tools.pbtxt import Message, Value, Word, parse

CONFIG = "config.pbtxt"
ONNX_PLATFORM, ONNX_BACKEND = "onnxruntime_onnx", "onnxruntime"
TYPES = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}
"""Triton's DataType names (model_config.proto) and the KServe v2 datatypes modelfn serves (TYPE_BF16 has none)."""
MODEL_FIELDS = frozenset(
    [
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "batch_input",
        "batch_output",
        "optimization",
        "dynamic_batching",
        "sequence_batching",
        "ensemble_scheduling",
        "instance_group",
        "default_model_filename",
        "cc_model_filenames",
        "metric_tags",
        "parameters",
        "model_warmup",
        "model_operations",
        "model_transaction_policy",
        "model_repository_agents",
        "response_cache",
    ]
)
"""ModelConfig's fields: any other is a typo Triton itself would refuse. Only the ones read here change the import;
the rest (instance groups, batching, optimization) are Triton's serving options, which modelfn has its own of."""
TENSOR_FIELDS = {
    "input": frozenset(
        ["name", "data_type", "format", "dims", "reshape", "is_shape_tensor", "allow_ragged_batch", "optional"]
    ),
    "output": frozenset(["name", "data_type", "dims", "reshape", "label_filename", "is_shape_tensor"]),
}


@dataclass(frozen=True)
class ConfigTensor:
    name: str
    datatype: str
    dims: list[int]
    """What the model sees: `reshape.shape` when given, else `dims`; without the batch dimension when the model
    batches (`max_batch_size` > 0)."""


@dataclass
class TritonModel:
    """A model folder's config as far as the import reads it."""

    name: str
    folder: Path
    platform: str | None = None
    backend: str | None = None
    max_batch_size: int = 0
    inputs: list[ConfigTensor] = field(default_factory=list)
    outputs: list[ConfigTensor] = field(default_factory=list)
    policy: tuple[str, list[int]] = ("latest", [1])
    """("latest", [n]), ("all", []) or ("specific", [versions])."""
    filename: str = ARTIFACT


@dataclass(frozen=True)
class Planned:
    """One version to publish: where its ONNX file is, and whether the store already holds these bytes."""

    name: str
    version: int
    path: Path
    present: bool


# ---- reading config.pbtxt ----------------------------------------------------------------------------------------
def _one(msg: Message, key: str, kind: type, where: str, default: Any = None) -> Any:
    """A singular field of the expected kind (bool is not an int); the default when absent."""
    values = msg.get(key, [])
    if not values:
        return default
    if len(values) > 1:
        raise PublishError(f"{where}: field {key!r} is given {len(values)} times; it takes one value")
    value = values[0]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is str and isinstance(value, Word):
        ok = False
    if not ok:
        raise PublishError(f"{where}: field {key!r} must be {_kind(kind)}, got {value!r}")
    return value


def _kind(kind: type) -> str:
    return {int: "an integer", str: "a quoted string", Word: "an enum value", dict: "a message { ... }"}[kind]


def _ints(values: Sequence[Value], key: str, where: str) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise PublishError(f"{where}: {key} must be integers, got {list(values)}")
    return [int(v) for v in values]  # type: ignore[arg-type]


def _unknown(msg: Message, known: frozenset[str], where: str) -> None:
    unknown = sorted(set(msg) - known)
    if unknown:
        raise PublishError(f"{where}: unknown field(s) {', '.join(unknown)} (not in Triton's model configuration)")


def _tensor(msg: Value, kind: str, where: str) -> ConfigTensor:
    if not isinstance(msg, dict):
        raise PublishError(f"{where}: each {kind} must be a message {{ name: ... data_type: ... dims: [...] }}")
    _unknown(msg, TENSOR_FIELDS[kind], f"{where} {kind}")
    name = _one(msg, "name", str, f"{where} {kind}")
    if name is None:
        raise PublishError(f"{where}: an {kind} has no name")
    at = f"{where} {kind} {name!r}"
    data_type = _one(msg, "data_type", Word, at)
    if data_type is None or data_type not in TYPES:
        known = ", ".join(TYPES)
        raise PublishError(f"{at}: data_type {data_type or '(none)'} is not one modelfn serves ({known})")
    dims = _ints(msg.get("dims", []), "dims", at)
    reshape = _one(msg, "reshape", dict, at)
    if reshape is not None:
        dims = _ints(reshape.get("shape", []), "reshape.shape", at)
    return ConfigTensor(name, TYPES[data_type], dims)


def _policy(msg: Message | None, where: str) -> tuple[str, list[int]]:
    if msg is None:
        return ("latest", [1])  # Triton's default
    if len(msg) != 1 or next(iter(msg)) not in ("latest", "all", "specific"):
        raise PublishError(f"{where}: version_policy is one of latest {{ num_versions: N }}, all {{ }}, specific {{ }}")
    kind = next(iter(msg))
    body = _one(msg, kind, dict, f"{where} version_policy")
    if kind == "all":
        return ("all", [])
    key = "num_versions" if kind == "latest" else "versions"
    numbers = _ints(body.get(key, []), f"version_policy.{kind}.{key}", where)
    if not numbers or any(n < 1 for n in numbers) or (kind == "latest" and len(numbers) != 1):
        raise PublishError(f"{where}: version_policy {kind} needs {key} of positive integers, got {numbers}")
    return (kind, numbers)


def read_config(folder: Path) -> TritonModel:
    """A model folder's config.pbtxt (Triton completes a missing one from an ONNX model: so does this, from the
    model itself, checking nothing but the files)."""
    name = folder.name
    path = folder / CONFIG
    where = str(path)
    msg = parse(path.read_text(encoding="utf-8"), where) if path.is_file() else {}
    _unknown(msg, MODEL_FIELDS, where)
    configured = _one(msg, "name", str, where)
    if configured is not None and configured != name:
        raise PublishError(f"{where}: name {configured!r} is not its folder's name {name!r} (Triton requires both)")
    try:
        check_name(name)
    except ModelfnError as e:
        raise PublishError(f"{folder}: {e.message}") from e
    max_batch = _one(msg, "max_batch_size", int, where, 0)
    if max_batch < 0:
        raise PublishError(f"{where}: max_batch_size must be 0 or more, got {max_batch}")
    return TritonModel(
        name=name,
        folder=folder,
        platform=_one(msg, "platform", str, where),
        backend=_one(msg, "backend", str, where),
        max_batch_size=max_batch,
        inputs=[_tensor(m, "input", where) for m in msg.get("input", [])],
        outputs=[_tensor(m, "output", where) for m in msg.get("output", [])],
        policy=_policy(_one(msg, "version_policy", dict, where), where),
        filename=_one(msg, "default_model_filename", str, where, ARTIFACT),
    )


# ---- checks ------------------------------------------------------------------------------------------------------
def check_onnx(model: TritonModel) -> None:
    """ONNX models only: a config naming another platform or backend is refused, saying which."""
    if model.platform not in (None, ONNX_PLATFORM) or model.backend not in (None, ONNX_BACKEND):
        what = f"platform {model.platform!r}" if model.platform not in (None, ONNX_PLATFORM) else ""
        what = what or f"backend {model.backend!r}"
        raise PublishError(
            f"model {model.name!r}: {what} is not ONNX; modelfn imports ONNX models only (platform "
            f"{ONNX_PLATFORM!r} or backend {ONNX_BACKEND!r}): export it to ONNX first"
        )


def version_folders(model: TritonModel) -> list[int]:
    """The model's version folders, as Triton reads them: positive integers without a leading zero."""
    return sorted(int(p.name) for p in model.folder.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")


def selected_versions(model: TritonModel) -> list[int]:
    """The versions Triton would serve under the model's version_policy."""
    available = version_folders(model)
    if not available:
        raise PublishError(f"model {model.name!r}: {model.folder} has no version folder (1/, 2/, ...)")
    kind, numbers = model.policy
    if kind == "all":
        return available
    if kind == "latest":
        return available[-numbers[0] :]
    missing = sorted(set(numbers) - set(available))
    if missing:
        raise PublishError(
            f"model {model.name!r}: version_policy specific names version(s) {missing}, which {model.folder} has no "
            f"folder for (it has {available})"
        )
    return sorted(set(numbers))


def model_file(model: TritonModel, version: int) -> Path:
    """`<version>/model.onnx` (or the configured default_model_filename); Triton also takes a folder of that name
    holding model.onnx and its external data."""
    path = model.folder / str(version) / model.filename
    if path.is_dir():
        path = path / ARTIFACT
    if not path.is_file():
        raise PublishError(f"model {model.name!r} version {version}: {path} is missing")
    if path.suffix != ".onnx":
        raise PublishError(f"model {model.name!r} version {version}: {path.name} is not an .onnx file")
    return path


def _compare(kind: str, configured: ConfigTensor, actual: TensorSpec, batch: bool, where: str) -> None:
    if configured.datatype != actual.datatype:
        raise PublishError(
            f"{where}: {kind} {configured.name!r} is {_triton(configured.datatype)} in {CONFIG} but "
            f"{_triton(actual.datatype)} in the model"
        )
    shape = list(actual.shape)
    if batch:
        if not shape or shape[0] != -1:
            raise PublishError(
                f"{where}: max_batch_size > 0 needs a variable first dimension, but {kind} {configured.name!r} has "
                f"shape {shape} in the model (set max_batch_size: 0 and give its full dims)"
            )
        shape = shape[1:]
    fits = len(shape) == len(configured.dims) and all(
        c == -1 or a in (-1, c) for c, a in zip(configured.dims, shape, strict=True)
    )
    if not fits:
        batch_note = " after the batch dimension" if batch else ""
        raise PublishError(
            f"{where}: {kind} {configured.name!r} has dims {configured.dims} in {CONFIG} but {shape}{batch_note} "
            f"in the model (-1: any size)"
        )


def _triton(datatype: str) -> str:
    return next(k for k, v in TYPES.items() if v == datatype)


def check_signature(model: TritonModel, version: int, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """The config's inputs and outputs against the ONNX model's (an empty list: Triton completes it from the
    model). Inputs must be the model's, all of them; outputs may be some of the model's."""
    where = f"model {model.name!r} version {version}"
    batch = model.max_batch_size > 0
    for kind, configured, actual in (("input", model.inputs, inputs), ("output", model.outputs, outputs)):
        by_name = {s.name: s for s in actual}
        unknown = [c.name for c in configured if c.name not in by_name]
        if unknown:
            raise PublishError(f"{where}: {kind}(s) {unknown} in {CONFIG} are not the model's ({sorted(by_name)})")
        if kind == "input" and configured:
            missing = sorted(set(by_name) - {c.name for c in configured})
            if missing:
                raise PublishError(f"{where}: the model's input(s) {missing} are not in {CONFIG}")
        for c in configured:
            _compare(kind, c, by_name[c.name], batch, where)
        if batch and not configured:
            for spec in actual:
                _compare(kind, ConfigTensor(spec.name, spec.datatype, [-1] * (len(spec.shape) - 1)), spec, batch, where)


# ---- the import --------------------------------------------------------------------------------------------------
def model_folders(repo: Path) -> list[Path]:
    """The repository's model folders (hidden entries and plain files are not models)."""
    if not repo.is_dir():
        raise PublishError(f"{repo} is not a folder (a Triton model repository holds one folder per model)")
    folders = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise PublishError(f"{repo} holds no model folder")
    return folders


def _present(store: ModelRepository, name: str, version: int, path: Path) -> bool:
    """Whether the store already has this version with these bytes; refused when it has other bytes."""
    if version not in store.versions(name):
        return False
    published = store.manifest(name, version).sha256
    if published != file_sha256(path):
        raise PublishError(
            f"model {name!r} version {version} is already in {store.uri} with other bytes (sha256 {published[:12]}…); "
            f"versions are immutable: import into another store or remove that version first"
        )
    return True


def plan(repo: Path, store_uri: str) -> list[Planned]:
    """Every version to publish, each checked (config, policy, ONNX signature) before anything is written."""
    from modelfn_tools.publish import inspect

    store = ModelRepository(open_store(store_uri))
    planned: list[Planned] = []
    for folder in model_folders(repo):
        model = read_config(folder)
        check_onnx(model)
        for version in selected_versions(model):
            path = model_file(model, version)
            artifact = inspect(path)
            check_signature(model, version, artifact.inputs, artifact.outputs)
            planned.append(Planned(model.name, version, path, _present(store, model.name, version, path)))
    return planned


def import_triton(repo: Path, store_uri: str, progress: bool = False) -> list[dict[str, Any]]:
    """Publish each planned version under its own number; one record per version, publish's own
    ({"name", "version", "sha256", "uri"}) with "status": "published" or "present"."""
    from modelfn_tools.publish import publish

    out = []
    for p in plan(repo, store_uri):
        if p.present:
            out.append({"name": p.name, "version": p.version, "sha256": file_sha256(p.path), "status": "present"})
            continue
        record = publish(p.path, store_uri, p.name, version=p.version, progress=progress)
        out.append({**record, "status": "published"})
    return out
