"""Warm-start cache: each model version is fetched, verified and loaded once per process, and each artifact is
kept on disk by sha256 so that a fresh process on a warm disk (a new Lambda environment, a restarted server)
downloads nothing. A version whose bytes do not match its manifest is never served."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from modelfn.errors import ModelfnError, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import load_session, read_signature, warm_up
from modelfn.settings import Settings
from modelfn.store.base import file_sha256
from modelfn.store.layout import Manifest, ModelRepository, artifact_key

log = logging.getLogger("modelfn")
Key = tuple[str, str, int]


class ModelCache:
    """Process-wide: module-level `model_cache` below, reused while the environment is warm; `clear()` for tests."""

    def __init__(self) -> None:
        self._models: dict[Key, LoadedModel] = {}
        self._failures: dict[Key, tuple[NotReady, float]] = {}
        self._labels: dict[tuple[str, str, str | None], tuple[int, float]] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()
        self.stats = {"loads": 0, "downloads": 0, "disk_hits": 0, "disk_discards": 0}

    def clear(self) -> None:
        with self._guard:
            self._models.clear()
            self._failures.clear()
            self._labels.clear()
            self._locks.clear()
            for k in self.stats:
                self.stats[k] = 0

    def forget_labels(self) -> None:
        """Resolve labels afresh on next use (after a SnapStart restore the snapshot's resolutions are stale)."""
        self._labels.clear()

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def resolve(self, repo: ModelRepository, name: str, version: str | int | None, ttl: float) -> int:
        """Integer versions pass through; labels (and the default) are re-read from the store after `ttl` seconds,
        so a label move reaches running processes without a restart."""
        if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
            return int(version)
        key = (repo.uri, name, version)
        hit = self._labels.get(key)
        now = time.monotonic()
        if hit and now - hit[1] < ttl:
            return hit[0]
        resolved = repo.resolve(name, version)
        self._labels[key] = (resolved, now)
        return resolved

    def peek(self, repo: ModelRepository, name: str, version: int) -> LoadedModel | None:
        """The loaded model if it is in memory, without loading (lets async callers skip a thread hop)."""
        return self._models.get((repo.uri, name, version))

    def get(self, repo: ModelRepository, name: str, version: int, settings: Settings) -> LoadedModel:
        key = (repo.uri, name, version)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one loader per version; concurrent requests wait for it instead of loading twice
            model = self._models.get(key)
            if model is not None:
                return model
            failed = self._failures.get(key)
            if failed and time.monotonic() - failed[1] < max(settings.label_ttl, 1.0):
                raise failed[0]
            try:
                model = self._load(repo, name, version, settings)
            except NotReady as e:
                self._failures[key] = (e, time.monotonic())
                log.error("%s", e.message)
                raise
            self._failures.pop(key, None)
            self._models[key] = model
            return model

    def _load(self, repo: ModelRepository, name: str, version: int, settings: Settings) -> LoadedModel:
        started = time.perf_counter()
        settings = settings.for_model(name)
        manifest = repo.manifest(name, version)  # ModelNotFound propagates: the version does not exist
        path = self._artifact(repo, manifest, settings.cache_dir)
        try:
            session = load_session(path, settings, what=f"model {name!r} version {version}")
        except Exception as e:  # onnxruntime raises its own exception types for unloadable graphs
            raise NotReady(f"model {name!r} version {version} failed to load: {e}") from e
        inputs, outputs = read_signature(session)
        if (inputs, outputs) != (manifest.inputs, manifest.outputs):
            raise NotReady(f"model {name!r} version {version}: the artifact's signature differs from its manifest")
        model = LoadedModel(
            name=name,
            version=version,
            session=session,
            inputs=inputs,
            outputs=outputs,
            sha256=manifest.sha256,
            providers=session.get_providers(),
            metadata={"quantization": manifest.quantization, "created_at": manifest.created_at},
            features=manifest.features,
        )
        if settings.warmup:
            warm_up(model)
        model.load_seconds = time.perf_counter() - started
        self.stats["loads"] += 1
        log.info("loaded model %r version %d in %.1f ms", name, version, model.load_seconds * 1000)
        return model

    def _artifact(self, repo: ModelRepository, manifest: Manifest, cache_dir: Path) -> Path:
        """The verified local file for a manifest: from the disk cache if it still matches, else downloaded."""
        path = cache_dir / "sha256" / f"{manifest.sha256}.onnx"
        where = f"model {manifest.name!r} version {manifest.version}"
        if path.exists():
            if file_sha256(path) == manifest.sha256:
                self.stats["disk_hits"] += 1
                return path
            log.warning("%s: cached %s no longer matches its sha256; fetching again", where, path)
            self.stats["disk_discards"] += 1
            path.unlink(missing_ok=True)
        try:
            digest = repo.store.download_verified(artifact_key(manifest.name, manifest.version), path, manifest.sha256)
        except ModelfnError as e:
            raise NotReady(f"{where}: artifact could not be fetched: {e.message}") from e
        self.stats["downloads"] += 1
        if digest != manifest.sha256:
            raise NotReady(
                f"{where}: sha256 mismatch: the manifest says {manifest.sha256}, the artifact has {digest}; not served"
            )
        return path


model_cache = ModelCache()
