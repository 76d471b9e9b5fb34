"""The versioned store layout of the contract: <model>/<version>/{model.onnx,manifest.json}, <model>/labels.json."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from modelfn.errors import InvalidInput, ModelNotFound, StoreError
from modelfn.model.signature import TensorSpec
from modelfn.store.base import ObjectStore, located

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


class ArtifactFile(BaseModel):
    """An external-data file of the model, stored beside model.onnx under its own relative path."""

    path: str = Field(description="Relative to the version folder, as the model's external-data `location` names it")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class Manifest(BaseModel):
    """Written after the artifact, so a version without a manifest is invisible (half-published)."""

    name: str
    version: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict[str, Any] | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    opset: int | None = None
    producer: str | None = None
    files: list[ArtifactFile] = Field(
        default_factory=list, description="External-data files, each verified by sha256 before the model loads"
    )
    features: list[str] | None = Field(
        default=None, description="Column names of a single [N, K] input's K features, for batch scoring by name"
    )
    signature_bundle: ArtifactFile | None = Field(
        default=None,
        description=f"The OpenSSF model signature over model.onnx and every file above ({SIGNATURE}), if signed",
    )
    baseline: ArtifactFile | None = Field(
        default=None, description=f"Reference statistics for drift ({BASELINE}), if published with --baseline"
    )

    def digests(self) -> dict[str, str]:
        """{path in the version folder: sha256} of the model's own files, model.onnx first: what a load reads and
        what a signature covers."""
        return {ARTIFACT: self.sha256, **{f.path: f.sha256 for f in self.files}}


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
        from modelfn.store.traffic import parse_traffic  # its pydantic models are built only when a file exists

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
            return Manifest.model_validate_json(data)
        except ValidationError as e:
            invalid = StoreError(f"model {name!r} version {version}: {MANIFEST} is not a valid manifest: {e}")
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
