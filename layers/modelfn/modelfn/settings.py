"""Runtime configuration: MODELFN_ variables (argument > environment > default), validated with the stdlib only.

A cold start pays for every import, and pydantic with its first model cost a Lambda function about 100 ms for this
one class. So Settings is a frozen dataclass whose fields state their type, default, bounds and description, and a
few parsers coerce values as pydantic's lax mode did for these types (integral strings to int, the usual boolean
spellings, JSON for the dict field; a bool is never taken for a number). Names are matched case-insensitively,
unknown MODELFN_ variables are ignored, and a value that does not validate is a SettingsError naming the variable
(or argument), the value and what was expected.

Field types are read at run time (each picks its parser), so this module does not postpone annotations."""

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Self, get_args, get_origin

from modelfn.errors import ModelfnError

MAX_ELEMENTS = 16_777_216
"""2**24 elements in all a request's tensors: 64 MiB as FP32, 128 MiB as FP64. The default body limit (6 MiB)
carries at most 6 Mi one-byte elements (binary UINT8) or 3 Mi JSON numbers, so no body it admits is refused; what
this stops is a few bytes of header declaring a shape of gigabytes, refused before anything is allocated, and it
still bounds a server that raises MODELFN_MAX_BODY_BYTES."""
MAX_JSON_DEPTH = 64
"""numpy's own bound on dimensions: no tensor's data nests deeper, so nothing servable is refused, and Python's
recursion limit (1000) stays far away from every walk over a request's values."""


PREFIX = "MODELFN_"


class SettingsError(ModelfnError, ValueError):
    """A MODELFN_ variable or a Settings argument that does not validate. The deployment is misconfigured (500 at an
    edge); a ModelfnError so the CLIs and servers print its message instead of a traceback."""

    status = 500


class Secret:
    """A string that repr and str never show: API keys would otherwise reach logs through a repr of the settings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __len__(self) -> int:  # an empty MODELFN_API_KEYS is false, as no keys
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def about(
    description: str = "", *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> dict[str, Any]:
    """A field's metadata: what it is for, and its bounds (greater than, at least, at most)."""
    return {"description": description, "gt": gt, "ge": ge, "le": le}


@dataclass(frozen=True, init=False)
class Settings:
    """Everything a function or server reads from its environment. Built on demand, never at import: arguments
    given to the constructor win over MODELFN_ variables, which win over the defaults. Frozen: `replace` makes a
    validated copy, so no value ever skips validation."""

    store: str | None = field(default=None, metadata=about("Store URI: s3://bucket/prefix, file:///path or a path"))
    model: str | None = field(default=None, metadata=about("The function's own model"))
    version: str | None = field(default=None, metadata=about("Integer version or label; default stable, else highest"))
    results: str | None = field(default=None, metadata=about("Store URI prefix where batch handlers write"))
    input_prefix: str = field(
        default="incoming/", metadata=about("S3 key prefix the batch function scores objects under")
    )
    cache_dir: Path = field(
        default=Path("/tmp/modelfn"),
        metadata=about("Disk cache of artifacts, by sha256; private to this user (0700, owned), else a temporary one"),
    )
    verify_key: Path | None = field(
        default=None,
        metadata=about(
            "Public key (PEM, EC P-256/384/521): every load verifies the version's OpenSSF model signature "
            "with it, and an unsigned or badly signed version is not served"
        ),
    )
    max_body_bytes: int = field(default=6 * 1024 * 1024, metadata=about("Larger request bodies get 413", gt=0))
    max_elements: int = field(
        default=MAX_ELEMENTS, metadata=about("Requests whose tensors declare more elements in all get 413", gt=0)
    )
    max_json_depth: int = field(
        default=MAX_JSON_DEPTH,
        metadata=about(
            "How deeply the values of a request may nest where they are walked (tensor data, b64); deeper: 400",
            ge=1,
            le=512,
        ),
    )
    label_ttl: float = field(
        default=30.0, metadata=about("Seconds a resolved label (and a failed load) is trusted", ge=0)
    )
    providers: str = field(
        default="CPUExecutionProvider",
        metadata=about("Comma-separated onnxruntime execution providers in order of preference; CPU is always last"),
    )
    intra_op_threads: int | None = field(default=None, metadata=about("Default: the CPUs this process may use", ge=1))
    inter_op_threads: int | None = field(default=None, metadata=about(ge=1))
    cuda_device: int = field(default=0, metadata=about("GPU the CUDA and TensorRT providers run on", ge=0))
    trt_fp16: bool = field(default=False, metadata=about("Let TensorRT build FP16 engines (faster; numerics change)"))
    warmup: bool = field(
        default=True, metadata=about("Run one inference at load time so the first request pays nothing")
    )
    batching: bool = field(default=False, metadata=about("Dynamic batching in long-running servers (never on Lambda)"))
    max_batch_size: int = field(default=32, metadata=about("Rows one batched session.run may hold", ge=1))
    max_batch_wait_ms: float = field(default=2.0, metadata=about("How long a batch waits to fill", ge=0))
    requests_prefix: str | None = field(
        default=None,
        metadata=about("s3://bucket/prefix an SQS message's request_uri may point under (default: MODELFN_RESULTS)"),
    )
    max_loaded_versions: int = field(
        default=8,
        metadata=about("Model versions kept loaded per process; the least recently used is unloaded", ge=1),
    )
    max_loaded_mb: float | None = field(
        default=None,
        metadata=about("Artifact megabytes kept loaded per process (LRU), besides the count bound", gt=0),
    )
    api_keys: Secret | None = field(
        default=None,
        metadata=about(
            "Comma-separated API keys or sha256:<hex> digests of keys; when set, every route but the "
            "public ones needs one (Authorization: Bearer KEY or X-API-Key: KEY)"
        ),
    )
    rate_limit: float | None = field(
        default=None,
        metadata=about(
            "Requests per second per API key (per client address without keys), burst twice that; "
            "beyond it 429 with Retry-After. Per process (per execution environment on Lambda)",
            gt=0,
        ),
    )
    max_concurrency: int = field(
        default=256,
        metadata=about("Requests a server works on at once (bodies still arriving count); then 503", ge=1),
    )
    body_timeout: float = field(
        default=30.0,
        metadata=about("Seconds a server waits for a request's whole body; then 408, connection closed", gt=0),
    )
    keep_alive: int | None = field(
        default=None,
        metadata=about(
            "Idle keep-alive seconds of server connections (default: 5 for modelfn serve, 75 in the container)",
            ge=1,
        ),
    )
    response_cache_mb: float = field(
        default=0.0, metadata=about("In-process response cache, megabytes of results kept (LRU); 0: off", ge=0)
    )
    response_cache_ttl: float = field(default=300.0, metadata=about("Seconds a cached response is served", gt=0))
    response_cache_url: str | None = field(
        default=None,
        metadata=about("redis://host:port/db: a response cache tier shared by all processes (optional)"),
    )
    capture: str | None = field(
        default=None,
        metadata=about("Where requests are captured: s3://bucket/prefix, a folder, or firehose://STREAM"),
    )
    capture_percent: float = field(default=100.0, metadata=about("Share of requests captured", ge=0, le=100))
    capture_flush_seconds: float = field(
        default=60.0,
        metadata=about("Captured records are written at least this often (and on a graceful stop)", gt=0),
    )
    capture_buffer_mb: float = field(
        default=4.0,
        metadata=about("Captured records held in memory before a write; beyond twice this, dropped", gt=0),
    )
    grpc_port: int | None = field(
        default=None,
        metadata=about("The container's gRPC port (Open Inference Protocol); off when unset", ge=1, le=65535),
    )
    models_config: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=about(
            'Per-model overrides of the fields above, JSON: {"mlp": {"providers": "...", "batching": true}}'
        ),
    )

    def __init__(self, **values: Any) -> None:
        given = {**_environment(), **{name: (name, value) for name, value in values.items()}}
        self._set({spec.name: spec.default() for spec in _SPECS.values()} | _validated(given))

    def _set(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Settings from the environment, with explicit (non-None) arguments taking precedence."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` validated (as arguments) and applied; the environment is not read again."""
        copy = object.__new__(type(self))
        copy._set(vars(self) | _validated({name: (name, value) for name, value in changes.items()}))
        return copy

    def for_model(self, name: str) -> Self:
        """These settings with the model's own overrides from MODELFN_MODELS_CONFIG applied (validated when these
        settings were built, so a bad override stops a start, not a first request)."""
        overrides = self.models_config.get(name)
        if not overrides:
            return self
        return self.replace(**overrides)

    @property
    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.providers.split(",") if p.strip()]


# ---- coercion: what pydantic's lax mode took for each type -------------------------------------------------------
TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(type(value).__name__)
    return value


def _int(value: Any) -> int:
    """An int, a float without a fraction, or a string of one ("32", " 1_000 ", "32.0"); never a bool."""
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii():
        whole, _, fraction = value.strip().partition(".")
        if not fraction.strip("0"):
            return int(whole)
    raise ValueError(value)


def _float(value: Any) -> float:
    """An int, a float, or a string of one ("2.5", "1e3", "inf"); never a bool, never NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(type(value).__name__)
    number = float(value)
    if math.isnan(number):
        raise ValueError(value)
    return number


def _bool(value: Any) -> bool:
    """A bool, 0 or 1, or one of pydantic's spellings in any case (true/false, 1/0, yes/no, on/off, t/f, y/n)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    spelling = value.lower() if isinstance(value, str) else None
    if spelling in TRUE or spelling in FALSE:
        return spelling in TRUE
    raise ValueError(value)


def _path(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(type(value).__name__)
    return Path(value)


def _secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret(_str(value))


def _objects(value: Any) -> dict[str, dict[str, Any]]:
    """A mapping of names to mappings (the models_config shape), copied so the caller's dict cannot change it."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()
    ):
        raise TypeError(type(value).__name__)
    return {name: dict(overrides) for name, overrides in value.items()}


PARSERS: dict[type, tuple[Callable[[Any], Any], str]] = {
    str: (_str, "a string"),
    int: (_int, "an integer"),
    float: (_float, "a number"),
    bool: (_bool, "a boolean (true/false, 1/0, yes/no, on/off, t/f, y/n)"),
    Path: (_path, "a path"),
    Secret: (_secret, "a string"),
    dict: (_objects, 'a JSON object of objects, {"model": {"setting": value}}'),
}


@dataclass(frozen=True)
class _Spec:
    """How one field is coerced and checked, read once from its annotation and metadata."""

    name: str
    kind: type
    optional: bool
    bounds: tuple[float | None, float | None, float | None]  # greater than, at least, at most
    field: Field[Any]

    @classmethod
    def of(cls, f: Field[Any]) -> Self:
        """From the field's annotation (`X` or `X | None`) and metadata; a type without a parser fails at import."""
        annotation: Any = f.type
        args = get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
        (kind,) = (a for a in args if a is not NoneType)
        kind = get_origin(kind) or kind
        if kind not in PARSERS:
            raise TypeError(f"Settings.{f.name}: no parser for {annotation!r}")
        bounds = (f.metadata.get("gt"), f.metadata.get("ge"), f.metadata.get("le"))
        return cls(f.name, kind, NoneType in args, bounds, f)

    def default(self) -> Any:
        """A new default each time for a factory's field (models_config: a dict of its own)."""
        factory = self.field.default_factory
        return self.field.default if factory is MISSING else factory()

    @property
    def expected(self) -> str:
        gt, ge, le = self.bounds
        words = [f"{w} {b:g}" for w, b in (("greater than", gt), ("at least", ge), ("at most", le)) if b is not None]
        return " ".join([PARSERS[self.kind][1], " and ".join(words)]).strip()

    def within(self, value: Any) -> bool:
        gt, ge, le = self.bounds
        return (gt is None or value > gt) and (ge is None or value >= ge) and (le is None or value <= le)

    def coerce(self, label: str, value: Any) -> Any:
        """`value` as this field's type, or a SettingsError naming `label` (the variable or argument it came from),
        the value (never a secret's) and what was expected."""
        if value is None and self.optional:
            return None
        shown = " (not shown)" if self.kind is Secret else f"={_shown(value)}"
        try:
            result = PARSERS[self.kind][0](value)
        except (ValueError, TypeError, OverflowError) as e:
            raise SettingsError(f"{label}{shown}: expected {self.expected}") from e
        if not self.within(result):
            raise SettingsError(f"{label}{shown}: expected {self.expected}")
        return result


_SPECS = {f.name: _Spec.of(f) for f in fields(Settings)}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _environment() -> dict[str, tuple[str, Any]]:
    """The MODELFN_ variables that name a field: field name -> (variable, value), JSON decoded for the dict."""
    found: dict[str, tuple[str, Any]] = {}
    for key, raw in os.environ.items():
        if key[: len(PREFIX)].upper() != PREFIX:
            continue
        spec = _SPECS.get(key[len(PREFIX) :].lower())
        if spec is None:
            continue
        value: Any = raw
        if spec.kind is dict:
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise SettingsError(f"{key}={_shown(raw)}: expected a JSON object ({e})") from e
        found[spec.name] = (key, value)
    return found


def _validated(given: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """Each given (label, value) coerced by its field, and each model's overrides in models_config coerced as
    arguments of those fields would be; every problem in one SettingsError."""
    values: dict[str, Any] = {}
    problems: list[SettingsError] = []
    for name, (label, value) in given.items():
        spec = _SPECS.get(name)
        try:
            if spec is None:
                raise SettingsError(f"{label}: no such setting")
            values[name] = spec.coerce(label, value)
            if name == "models_config":  # kept coerced: readers of the raw dict see True, not "false"
                values[name] = {
                    model: _validated({k: (f"{label}[{model!r}][{k!r}]", v) for k, v in overrides.items()})
                    for model, overrides in values[name].items()
                }
        except SettingsError as e:
            problems.append(e)
    if problems:
        raise SettingsError("; ".join(p.message for p in problems)) from problems[0]
    return values
