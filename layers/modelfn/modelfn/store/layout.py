"""The versioned store layout of the contract: <model>/<version>/{model.onnx,manifest.json}, <model>/labels.json."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING, Any

from modelfn.errors import InvalidInput, ModelNotFound, StoreError
from modelfn.model.signature import TensorSpec
from modelfn.store.base import ObjectStore, located
from modelfn.store.fields import Fields, Invalid, integer, list_of, mapping_of, matching, nullable, text

if TYPE_CHECKING:
    from modelfn.store.traffic import Traffic

ARTIFACT = "model.onnx"
MANIFEST = "manifest.json"
SIGNATURE = "model.sig"
"""The version's OpenSSF model signature (a Sigstore bundle), written by `modelfn publish --sign-key`."""
CLAIM = ".claim"
BASELINE = "baseline.json"
"""The version's reference statistics for drift (modelfn.monitoring.baseline), from `modelfn publish --baseline`."""
LABELS = "labels.json"
TRAFFIC = "traffic.json"
RESERVED = frozenset({ARTIFACT, MANIFEST, SIGNATURE, CLAIM, BASELINE})
"""Names in a version folder that belong to the layout: an external-data file may not take one."""


def file_path_problem(path: str) -> str | None:
    """Why a file path inside a version folder (an external-data `location`, a manifest's `files` entry) could name
    a file outside that folder, be read two ways, or take a name of the layout's; None when it is safe. Publish and
    the loader apply these same rules."""
    parts = path.split("/")
    windows = PureWindowsPath(path)
    problems = [
        (path.startswith("/") or windows.is_absolute() or bool(windows.drive), "is an absolute path"),
        ("\\" in path, "contains a backslash"),
        (any(ord(c) < 0x20 for c in path), "contains a control character"),
        (".." in parts, "has a '..' segment, leaving the model's folder"),
        ("" in parts, "has an empty segment"),
        ("." in parts, "has a '.' segment"),
        (path.lower() == ARTIFACT, f"is the artifact's own name {ARTIFACT!r}"),
        (path.lower() in RESERVED, f"is a name the store layout reserves ({', '.join(sorted(RESERVED))})"),
    ]
    return next((why for bad, why in problems if bad), None)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


_SHA256 = matching(r"^[0-9a-f]{64}$", "a sha256 (64 lowercase hex digits)")
_SIZE = integer(low=0)
_VERSION = integer(low=1)
_OBJECT = nullable(mapping_of(lambda value: value))


def _now() -> str:
    """A manifest's default `created_at`: now, in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class ArtifactFile:
    """An external-data file of the model, stored beside model.onnx under its own relative path."""

    path: str
    """Relative to the version folder, as the model's external-data `location` names it."""
    sha256: str
    size_bytes: int

    @classmethod
    def from_json(cls, raw: Any) -> ArtifactFile:
        """From its manifest.json object; fields.Invalid naming each field that does not validate."""
        read = Fields(raw)
        path, sha256, size = read.get("path", text), read.get("sha256", _SHA256), read.get("size_bytes", _SIZE)
        read.done()
        return cls(path=path, sha256=sha256, size_bytes=size)


def _spec(raw: Any) -> TensorSpec:
    """A TensorSpec from its manifest.json object (the loader then compares it with the artifact's own)."""
    read = Fields(raw)
    name, datatype, shape = read.get("name", text), read.get("datatype", text), read.get("shape", _SHAPE)
    read.done()
    return TensorSpec(name=name, datatype=datatype, shape=shape)


_SHAPE = list_of(integer())
_SPECS = list_of(_spec)
_FILE = nullable(ArtifactFile.from_json)
_FILES = list_of(ArtifactFile.from_json)
_OPTIONAL_INT, _OPTIONAL_TEXT, _OPTIONAL_NAMES = nullable(integer()), nullable(text), nullable(list_of(text))


@dataclass(kw_only=True)
class Manifest:
    """Written after the artifact, so a version without a manifest is invisible (half-published). Plain
    dataclasses with their own checks: a load parses one, and a cold start should not pay for a validation
    library. The fields' order is manifest.json's."""

    name: str
    version: int
    sha256: str
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict[str, Any] | None = None
    created_at: str = field(default_factory=_now)
    opset: int | None = None
    producer: str | None = None
    files: list[ArtifactFile] = field(default_factory=list)
    """External-data files, each verified by sha256 before the model loads."""
    features: list[str] | None = None
    """Column names of a single [N, K] input's K features, for batch scoring by name."""
    signature_bundle: ArtifactFile | None = None
    """The OpenSSF model signature over model.onnx and every file above (model.sig), if signed."""
    baseline: ArtifactFile | None = None
    """Reference statistics for drift (baseline.json), if published with --baseline."""

    def digests(self) -> dict[str, str]:
        """{path in the version folder: sha256} of the model's own files, model.onnx first: what a load reads and
        what a signature covers."""
        return {ARTIFACT: self.sha256, **{f.path: f.sha256 for f in self.files}}

    @classmethod
    def from_json(cls, raw: Any) -> Manifest:
        """From manifest.json's object: required fields present, each of its type (an int is never a bool, a
        float or a string), sha256s in lowercase hex, version > 0, sizes >= 0; unknown keys are ignored (a newer
        publisher's additions). fields.Invalid names every field that does not validate."""
        read = Fields(raw)
        manifest = cls(
            name=read.get("name", text),
            version=read.get("version", _VERSION),
            sha256=read.get("sha256", _SHA256),
            size_bytes=read.get("size_bytes", _SIZE),
            inputs=read.get("inputs", _SPECS),
            outputs=read.get("outputs", _SPECS),
            quantization=read.get("quantization", _OBJECT, None),
            created_at=read.get("created_at", text, _now()),
            opset=read.get("opset", _OPTIONAL_INT, None),
            producer=read.get("producer", _OPTIONAL_TEXT, None),
            files=read.get("files", _FILES, []),
            features=read.get("features", _OPTIONAL_NAMES, None),
            signature_bundle=read.get("signature_bundle", _FILE, None),
            baseline=read.get("baseline", _FILE, None),
        )
        read.done()
        return manifest

    def as_dict(self) -> dict[str, Any]:
        """Every field, nested ones as dicts too, in manifest.json's order."""
        return dataclasses.asdict(self)

    def to_json(self) -> bytes:
        """manifest.json's bytes: the fields in order, indented by 2, as the store has always held them."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False).encode()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"invalid model name {name!r}: letters, digits, '_', '-', '.' (at most 128)")
    return name


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise InvalidInput(f"invalid label {label!r}: a letter, then letters, digits, '_' or '-'")
    return label


def artifact_key(name: str, version: int) -> str:
    return f"{name}/{version}/{ARTIFACT}"


def manifest_key(name: str, version: int) -> str:
    return f"{name}/{version}/{MANIFEST}"


def claim_key(name: str, version: int) -> str:
    """Written (if absent) before a version's artifact: the version number is taken from then on."""
    return f"{name}/{version}/{CLAIM}"


def signature_key(name: str, version: int) -> str:
    return f"{name}/{version}/{SIGNATURE}"


def baseline_key(name: str, version: int) -> str:
    return f"{name}/{version}/{BASELINE}"


def traffic_key(name: str) -> str:
    return f"{name}/{TRAFFIC}"


def labels_key(name: str) -> str:
    return f"{name}/{LABELS}"


def parse_labels(data: bytes | None, where: str) -> dict[str, int]:
    """labels.json as {label: version}; None (no file yet) is no labels."""
    if data is None:
        return {}
    try:
        raw = json.loads(data)
        return {str(k): int(v) for k, v in raw.items()}
    except (AttributeError, TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise StoreError(f"{where} is not valid JSON of the form {{label: version}}: {e}") from e


def dump_labels(labels: dict[str, int]) -> bytes:
    return json.dumps(labels, indent=2, sort_keys=True).encode()


class ModelRepository:
    """Models, versions, labels and manifests of one store. Reads only; publishing lives in tools."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.uri: str = store.uri
        """The store's URI: part of every cache key a request looks up (an attribute, read on every request)."""

    def models(self) -> list[str]:
        return [n for n in self.store.list_dirs("") if _NAME.match(n)]

    def versions(self, name: str) -> list[int]:
        """Published versions (those with a manifest), ascending."""
        found = sorted(int(d) for d in self.store.list_dirs(check_name(name)) if d.isdigit() and int(d) > 0)
        return [v for v in found if self.store.exists(manifest_key(name, v))]

    def labels(self, name: str) -> dict[str, int]:
        key = labels_key(check_name(name))
        try:
            data = self.store.read_bytes(key)
        except ModelNotFound:
            return {}
        try:
            return parse_labels(data, f"the labels of model {name!r}")
        except StoreError as e:
            located(e, self.store.join(key))
            raise

    def traffic(self, name: str) -> Traffic | None:
        """The model's traffic.json (None when absent or empty); a malformed one is InvalidTraffic (a StoreError),
        logged with where it is."""
        key = traffic_key(check_name(name))
        try:
            data = self.store.read_bytes(key)
        except ModelNotFound:
            return None
        from modelfn.store.traffic import parse_traffic  # imported only when a model has a traffic.json

        try:
            return parse_traffic(data, f"the traffic of model {name!r}")
        except StoreError as e:
            located(e, self.store.join(key))
            raise

    def manifest(self, name: str, version: int) -> Manifest:
        key = manifest_key(check_name(name), version)
        try:
            data = self.store.read_bytes(key)
        except ModelNotFound as e:
            raise ModelNotFound(f"model {name!r} has no version {version}") from e
        try:
            return Manifest.from_json(json.loads(data))
        except (ValueError, RecursionError) as e:  # Invalid, JSONDecodeError, UnicodeDecodeError; deep nesting
            why = e.describe() if isinstance(e, Invalid) else f"not JSON ({e})"
            invalid = StoreError(f"model {name!r} version {version}: {MANIFEST} is not a valid manifest: {why}")
            raise located(invalid, self.store.join(key)) from e

    def resolve(self, name: str, version: str | int | None) -> int:
        """An integer version as is; a label through labels.json; None: label 'stable', else the highest."""
        if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
            return int(version)
        labels = self.labels(name)
        if version is None:
            if "stable" in labels:
                return labels["stable"]
            versions = self.versions(name)
            if not versions:
                raise located(ModelNotFound(f"model {name!r} not found"), self.uri, logging.DEBUG)
            return versions[-1]
        if version not in labels:
            known = ", ".join(sorted(labels)) or "none"
            raise ModelNotFound(f"model {name!r} has no label {version!r} (labels: {known})")
        return labels[version]
