"""Publishing: verify an ONNX file (and its external data) loads, record its signature, optionally quantize and
sign, upload the data files, the artifact and the signature, then the manifest.

The version number is claimed first (an if-absent write), so two publishers never upload into one version; the
manifest goes last (also if-absent), so a half-published version is never visible. Everything that can be refused
(a bad model, unsafe external data, a taken version) is refused before the first write."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from modelfn.errors import ModelfnError, ModelNotFound, PublishError
from modelfn.model.signature import TensorSpec
from modelfn.settings import Settings
from modelfn.store import Manifest, ModelRepository, ObjectStore, open_store
from modelfn.store.base import Progress, file_sha256
from modelfn.store.layout import (
    ARTIFACT,
    SIGNATURE,
    ArtifactFile,
    artifact_key,
    baseline_key,
    check_label,
    check_name,
    claim_key,
    dump_labels,
    file_path_problem,
    labels_key,
    manifest_key,
    parse_labels,
    signature_key,
)

if TYPE_CHECKING:
    import onnx
    from model_signing._signing.sign_ec_key import Signer

    from modelfn_tools.baseline import BaselineData

PROGRESS_THRESHOLD = 8 * 1024 * 1024
ZIPMAP_FIX = (
    "convert without ZipMap: skl2onnx.to_onnx(model, X, options={'zipmap': False}), or "
    "convert_sklearn(model, ..., options={id(model): {'zipmap': False}}), gives a [N, classes] probability tensor"
)


@dataclass(frozen=True)
class DataFile:
    """An external data file: `path` as the version folder will hold it, `source` the local file it comes from."""

    path: str
    source: Path


@dataclass
class Artifact:
    """A checked ONNX file with what the manifest records about it."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    facts: dict[str, Any]
    files: list[DataFile] = field(default_factory=list)


# ---- external data ----------------------------------------------------------------------------------------------
def load_proto(path: Path) -> onnx.ModelProto:
    """The graph without its external data (which stays on disk until checked)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and onnx's own errors alike
        raise PublishError(f"{path} is not a valid ONNX model: {e}") from e


def _sparse(t: onnx.SparseTensorProto) -> Iterator[onnx.TensorProto]:
    yield t.values
    yield t.indices


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    """Tensors held by node attributes, subgraphs (If, Loop, Scan bodies) included."""
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield from _sparse(a.sparse_tensor)
            for s in a.sparse_tensors:
                yield from _sparse(s)
            graphs = [a.g] if a.HasField("g") else []
            for g in [*graphs, *a.graphs]:
                yield from _graph_tensors(g)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for s in graph.sparse_initializer:
        yield from _sparse(s)
    yield from _node_tensors(graph.node)


def model_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can keep its data in an external file."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _node_tensors(function.node)


def _location_problem(location: str) -> str | None:
    """Why a `location` could name a file outside the model's folder (or a layout name), or None: the layout's
    rules for a version's files, on the path as it will be stored (`./w.bin` is `w.bin`)."""
    if not location.strip():
        return "names no file"
    return file_path_problem(PurePosixPath(location).as_posix())


def _data_file(folder: Path, location: str, tensor: str) -> DataFile:
    where = f"tensor {tensor!r} keeps its data in external file {location!r}, which"
    problem = _location_problem(location)
    if problem:
        raise PublishError(f"{where} {problem}: external data must be a relative path inside the model's folder")
    source = folder / location
    resolved = source.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise PublishError(
            f"{where} resolves to {resolved}, outside the model's folder {folder} (a symlink): copy it into the folder"
        )
    if not resolved.is_file():
        raise PublishError(f"{where} is not a file next to the model ({source} is missing or not a regular file)")
    return DataFile(PurePosixPath(location).as_posix(), resolved)  # './w.bin' -> 'w.bin'


def external_data(path: Path, proto: onnx.ModelProto) -> list[DataFile]:
    """The external data files a model names, each checked to lie inside the model file's folder: an absolute
    path, a '..' segment or a symlink leading out is refused, as nothing outside a version folder is published."""
    import onnx

    folder = path.absolute().parent
    found: dict[str, DataFile] = {}
    for tensor in model_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if location not in found:
            found[location] = _data_file(folder, location, tensor.name)
    return sorted(set(found.values()), key=lambda f: f.path)


# ---- signature ---------------------------------------------------------------------------------------------------
def _type_name(t: onnx.TypeProto) -> str:
    import onnx

    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        inner = getattr(t, kind)
        return f"{kind.removesuffix('_type')}({onnx.TensorProto.DataType.Name(inner.elem_type).lower()})"
    if kind == "sequence_type":
        return f"seq({_type_name(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(t.map_type.key_type).lower()
        return f"map({key}, {_type_name(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_name(t.optional_type.elem_type)})"
    return str(kind)


def check_tensor_io(proto: onnx.ModelProto) -> None:
    """Refuse inputs and outputs that are not tensors, saying which and how to fix the common case: skl2onnx's
    default ZipMap, which turns a classifier's probabilities into a sequence of maps."""
    initializers = {i.name for i in proto.graph.initializer}  # old opsets list initializers as inputs too
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for v in values:
            which = v.type.WhichOneof("value")
            if which in ("tensor_type", None) or v.name in initializers:
                continue
            what = f"{kind} {v.name!r} has type {_type_name(v.type)}"
            if which == "sequence_type" and v.type.sequence_type.elem_type.WhichOneof("value") == "map_type":
                raise PublishError(
                    f"{what}, a sequence of maps (skl2onnx's ZipMap, its default for classifiers), which modelfn "
                    f"cannot serve: inputs and outputs must be tensors; {ZIPMAP_FIX}"
                )
            raise PublishError(f"{what}, which modelfn cannot serve: inputs and outputs must be tensors")


def inspect(path: Path) -> Artifact:
    """Check the file is a valid ONNX model whose external data is safe and that onnxruntime can load; return its
    signature, external data files and a few facts."""
    import onnx

    from modelfn.model.onnx import load_session, read_signature

    proto = load_proto(path)
    files = external_data(path, proto)  # before anything reads the data
    check_tensor_io(proto)
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise PublishError(f"{path} is not a valid ONNX model: {e}") from e
    try:  # as a load will: from the bytes, its data files given by the paths the version folder will hold
        external = {f.path: f.source.read_bytes() for f in files}
        settings = Settings(providers="CPUExecutionProvider", intra_op_threads=1, warmup=False)
        inputs, outputs = read_signature(load_session(path.read_bytes(), settings, external=external))
    except Exception as e:
        raise PublishError(f"{path} does not load in onnxruntime: {e}") from e
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or None
    return Artifact(path, inputs, outputs, {"opset": opset, "producer": producer}, files)


def parse_features(text: str) -> list[str]:
    """`--features a,b,c` as a list of distinct, non-empty names."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise PublishError(f"--features {text!r} has an empty name: give comma-separated column names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PublishError(f"--features names {', '.join(repeated)} more than once")
    if "id" in names:
        raise PublishError("--features cannot name a feature 'id': batch files pass the id column through")
    return names


def check_features(features: list[str], inputs: list[TensorSpec]) -> None:
    """Feature names label the K columns of a single [N, K] input, so their count must be its K."""
    if len(inputs) != 1:
        described = ", ".join(s.describe() for s in inputs)
        raise PublishError(f"--features names the columns of a single [N, K] input; this model has {described}")
    spec = inputs[0]
    if len(spec.shape) != 2:
        raise PublishError(f"--features names the columns of a [N, K] input; {spec.describe()} is not 2-D")
    if spec.shape[1] not in (-1, len(features)):
        raise PublishError(
            f"--features gives {len(features)} names, but input {spec.describe()} takes {spec.shape[1]} features"
        )


# ---- versions and upload -----------------------------------------------------------------------------------------
def _progress_bar(total: int, label: str) -> Progress | None:
    if total < PROGRESS_THRESHOLD:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr, leave=False)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def next_version(repo: ModelRepository, name: str) -> int:
    """One past the highest version folder, published or not (a half-published number is never reused)."""
    taken = [int(d) for d in repo.store.list_dirs(name) if d.isdigit()]
    return max(taken, default=0) + 1


def _taken(repo: ModelRepository, name: str, version: int) -> PublishError:
    return PublishError(f"model {name!r} version {version} already exists in {repo.uri}; versions are immutable")


def claim_version(repo: ModelRepository, name: str, version: int | None, attempts: int = 20) -> int:
    """Reserve a version number before uploading anything: a claim object written only if absent, so two
    publishers never upload into the same version. An explicit --version is refused if it is claimed, or holds a
    manifest or artifact (a version published without a claim), before anything is written."""
    if version is not None:
        if version < 1:
            raise PublishError(f"version must be a positive integer, got {version}")
        if repo.store.exists(manifest_key(name, version)) or repo.store.exists(artifact_key(name, version)):
            raise _taken(repo, name, version)
    for _ in range(attempts):
        candidate = version if version is not None else next_version(repo, name)
        try:
            repo.store.write_bytes(claim_key(name, candidate), b"", if_absent=True)
            return candidate
        except PublishError as e:
            if version is not None:
                raise _taken(repo, name, version) from e
    raise PublishError(f"could not claim a version of {name!r} in {repo.uri} after {attempts} attempts")


def _upload(store: ObjectStore, name: str, version: int, artifact: Artifact, progress: bool) -> None:
    """The data files first, then the graph that names them (the manifest, written after, makes them visible)."""
    uploads = [(f.path, f.source) for f in artifact.files] + [(ARTIFACT, artifact.path)]
    for relative, source in uploads:
        size = source.stat().st_size
        bar = _progress_bar(size, f"{name} v{version} {relative}") if progress else None
        store.upload_file(f"{name}/{version}/{relative}", source, bar)


def _sign(store: ObjectStore, signer: Signer, name: str, version: int, digests: dict[str, str]) -> ArtifactFile:
    """Sign the version's files (by the sha256s the manifest records) and store the signature beside them, before
    the manifest; returns what the manifest records about it."""
    import hashlib

    from modelfn.registry.signing import sign

    bundle = sign(signer, name, version, digests)
    store.write_bytes(signature_key(name, version), bundle, if_absent=True)
    return ArtifactFile(path=SIGNATURE, sha256=hashlib.sha256(bundle).hexdigest(), size_bytes=len(bundle))


def _store_baseline(store: ObjectStore, reference: BaselineData, version: int) -> ArtifactFile:
    """Write baseline.json into the version folder; returns what the manifest records about it."""
    from modelfn.monitoring.baseline import encode

    reference.baseline.version = version
    data, record = encode(reference.baseline)
    store.write_bytes(baseline_key(reference.baseline.model, version), data, if_absent=True)
    return record


def publish(
    model_path: Path,
    store_uri: str,
    name: str,
    version: int | None = None,
    quantize: str | None = None,
    labels: list[str] | None = None,
    progress: bool = True,
    per_channel: bool = False,
    features: list[str] | None = None,
    sign_key: Path | None = None,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Publish model_path (and its external data) as a new version; returns the contract's one JSON object
    {"name", "version", "sha256", "uri"}, sha256 being the graph file's (each data file's is in the manifest).
    With `sign_key` (an EC private key, PEM) the version's files are signed in the OpenSSF model-signing format
    and the signature stored with them, before the manifest that records it. With `baseline` (a data file), the
    features' reference statistics for drift are stored as baseline.json, also before the manifest; a [N, K]
    input's feature names come from its header when `features` is not given."""
    check_name(name)
    for label in labels or []:
        check_label(label)
    if not model_path.is_file():
        raise PublishError(f"{model_path} does not exist")
    repo = ModelRepository(open_store(store_uri))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = inspect(model_path)  # a broken or unsafe source is refused before anything else
        if features is not None:
            check_features(features, artifact.inputs)
        signer = None
        if sign_key is not None:
            from modelfn.registry.signing import load_signer

            signer = load_signer(sign_key)  # a bad key is refused before anything is written
        quantization = None
        if quantize:
            from modelfn_tools.quantize import quantize as run_quantize

            quantization = run_quantize(model_path, Path(tmp) / ARTIFACT, quantize, per_channel)
            artifact = inspect(Path(tmp) / ARTIFACT)
        reference = None
        if baseline is not None:  # a bad baseline is refused before anything is written, too
            from modelfn_tools.baseline import read_baseline

            reference = read_baseline(baseline, name, artifact.inputs, features)
            features = features or reference.names
        files = [
            ArtifactFile(path=f.path, sha256=file_sha256(f.source), size_bytes=f.source.stat().st_size)
            for f in artifact.files
        ]
        sha, size = file_sha256(artifact.path), artifact.path.stat().st_size
        version = claim_version(repo, name, version)
        manifest = Manifest(
            name=name,
            version=version,
            sha256=sha,
            size_bytes=size,
            inputs=artifact.inputs,
            outputs=artifact.outputs,
            quantization=quantization,
            files=files,
            features=features,
            **artifact.facts,
        )
        _upload(repo.store, name, version, artifact, progress)
        if reference is not None:
            manifest.baseline = _store_baseline(repo.store, reference, version)
        if signer is not None:
            manifest.signature_bundle = _sign(repo.store, signer, name, version, manifest.digests())
        repo.store.write_bytes(manifest_key(name, version), manifest.to_json(), if_absent=True)
    for label in labels or []:
        set_label(store_uri, name, label, version)
    return {"name": name, "version": version, "sha256": sha, "uri": repo.store.join(artifact_key(name, version))}


# ---- labels ------------------------------------------------------------------------------------------------------
def _change_labels(
    repo: ModelRepository, name: str, change: Callable[[dict[str, int]], dict[str, int]]
) -> dict[str, int]:
    """Apply `change` to labels.json with the store's conditional write, so concurrent label moves (of different
    labels) all land: a move based on a stale read is retried on a fresh one, never written over another."""
    key = labels_key(name)
    written = repo.store.update(key, lambda current: dump_labels(change(parse_labels(current, repo.store.join(key)))))
    return parse_labels(written, repo.store.join(key))


def set_label(store_uri: str, name: str, label: str, version: int) -> dict[str, int]:
    """Point a label at a published version; returns all labels as written."""
    check_name(name)
    check_label(label)
    repo = ModelRepository(open_store(store_uri))
    if not repo.store.exists(manifest_key(name, version)):
        raise ModelNotFound(f"model {name!r} has no published version {version} in {repo.uri}")
    return _change_labels(repo, name, lambda labels: {**labels, label: version})


def delete_label(store_uri: str, name: str, label: str) -> dict[str, int]:
    """Remove a label (ModelNotFound if it is not set); returns the labels left. A label that traffic.json routes
    to (split or shadow) is refused: its share of requests would go nowhere."""
    check_name(name)
    check_label(label)
    repo = ModelRepository(open_store(store_uri))
    traffic = repo.traffic(name)
    if traffic is not None and label in traffic.targets:
        raise PublishError(
            f"label {label!r} of model {name!r} is a target of its traffic ({', '.join(traffic.targets)}): "
            "take it out first with `modelfn traffic`"
        )

    def drop(labels: dict[str, int]) -> dict[str, int]:
        if label not in labels:
            known = ", ".join(sorted(labels)) or "none"
            raise ModelNotFound(f"model {name!r} has no label {label!r} in {repo.uri} (labels: {known})")
        return {k: v for k, v in labels.items() if k != label}

    return _change_labels(repo, name, drop)


def list_models(store_uri: str) -> list[dict[str, Any]]:
    repo = ModelRepository(open_store(store_uri))
    out = []
    for name in repo.models():
        versions = []
        for v in repo.versions(name):
            try:
                m = repo.manifest(name, v)
                versions.append(
                    {
                        "version": v,
                        "sha256": m.sha256,
                        "size_bytes": m.size_bytes,
                        "quantization": (m.quantization or {}).get("weight_type"),
                        "created_at": m.created_at,
                    }
                )
            except ModelfnError as e:
                versions.append({"version": v, "error": e.message})
        out.append({"name": name, "versions": versions, "labels": repo.labels(name)})
    return out


def settings_store(store: str | None) -> str:
    uri = Settings.load(store=store).store
    if not uri:
        raise PublishError("no store given: pass --store URI or set MODELFN_STORE")
    return uri
