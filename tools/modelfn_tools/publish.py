"""Publishing: verify an ONNX file loads, record its signature, optionally quantize, upload artifact then manifest.

The version number is claimed first (an if-absent write), so two publishers never upload into one version; the
manifest goes last (also if-absent), so a half-published version is never visible."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelfn.errors import ModelfnError, ModelNotFound, PublishError
from modelfn.settings import Settings
from modelfn.store import Manifest, ModelRepository, open_store
from modelfn.store.base import Progress, file_sha256
from modelfn.store.layout import artifact_key, check_label, check_name, claim_key, labels_key, manifest_key

PROGRESS_THRESHOLD = 8 * 1024 * 1024


def inspect(path: Path) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Check the file is a valid ONNX model that onnxruntime can load; return its signature and a few facts."""
    import onnx

    from modelfn.model.onnx import read_signature

    try:
        onnx.checker.check_model(str(path))
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise PublishError(f"{path} is not a valid ONNX model: {e}") from e
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inputs, outputs = read_signature(session)
    except Exception as e:
        raise PublishError(f"{path} does not load in onnxruntime: {e}") from e
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or None
    return inputs, outputs, {"opset": opset, "producer": producer}


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


def claim_version(repo: ModelRepository, name: str, version: int | None, attempts: int = 20) -> int:
    """Reserve a version number before uploading anything: a claim object written only if absent, so two
    publishers never upload into the same version (an explicit --version that is taken is refused)."""
    if version is not None and version < 1:
        raise PublishError(f"version must be a positive integer, got {version}")
    for _ in range(attempts):
        candidate = version if version is not None else next_version(repo, name)
        try:
            repo.store.write_bytes(claim_key(name, candidate), b"", if_absent=True)
            return candidate
        except PublishError as e:
            if version is not None:
                raise PublishError(
                    f"model {name!r} version {version} already exists in {repo.uri}; versions are immutable"
                ) from e
    raise PublishError(f"could not claim a version of {name!r} in {repo.uri} after {attempts} attempts")


def publish(
    model_path: Path,
    store_uri: str,
    name: str,
    version: int | None = None,
    quantize: str | None = None,
    labels: list[str] | None = None,
    progress: bool = True,
    per_channel: bool = False,
) -> dict[str, Any]:
    check_name(name)
    for label in labels or []:
        check_label(label)
    if not model_path.is_file():
        raise PublishError(f"{model_path} does not exist")
    repo = ModelRepository(open_store(store_uri))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = model_path
        quantization = None
        if quantize:
            from modelfn_tools.quantize import quantize as run_quantize

            inspect(model_path)  # refuse a broken source before spending time on it
            artifact = Path(tmp) / "model.onnx"
            quantization = run_quantize(model_path, artifact, quantize, per_channel)
        inputs, outputs, facts = inspect(artifact)
        version = claim_version(repo, name, version)
        sha = file_sha256(artifact)
        size = artifact.stat().st_size
        manifest = Manifest(
            name=name,
            version=version,
            sha256=sha,
            size_bytes=size,
            inputs=inputs,
            outputs=outputs,
            quantization=quantization,
            **facts,
        )
        repo.store.upload_file(
            artifact_key(name, version), artifact, _progress_bar(size, f"{name} v{version}") if progress else None
        )
        repo.store.write_bytes(manifest_key(name, version), manifest.model_dump_json(indent=2).encode(), if_absent=True)
    for label in labels or []:
        set_label(store_uri, name, label, version)
    return {"name": name, "version": version, "sha256": sha, "uri": repo.store.join(artifact_key(name, version))}


def set_label(store_uri: str, name: str, label: str, version: int) -> dict[str, int]:
    """Point a label at a published version. Read-modify-write of labels.json: run label moves one at a time."""
    check_name(name)
    check_label(label)
    repo = ModelRepository(open_store(store_uri))
    if not repo.store.exists(manifest_key(name, version)):
        raise ModelNotFound(f"model {name!r} has no published version {version} in {repo.uri}")
    labels = repo.labels(name)
    labels[label] = version
    repo.store.write_bytes(labels_key(name), json.dumps(labels, indent=2, sort_keys=True).encode())
    return labels


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
