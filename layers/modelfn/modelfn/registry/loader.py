"""Warm-start cache: each model version is fetched, verified and loaded once per process, and each version's files
are kept on disk by sha256 so that a fresh process on a warm disk (a new Lambda environment, a restarted server)
downloads nothing. A version whose bytes do not match its manifest (or, with MODELFN_VERIFY_KEY, whose signature
does not verify) is never served. Each file is read once, into memory, and the session is built from those very
bytes: nothing is opened again by path, so a file swapped on disk after its check can never be what runs. At most
MODELFN_MAX_LOADED_VERSIONS versions (and MODELFN_MAX_LOADED_MB of their files) stay loaded, least recently used
first out, so a client that names many versions cannot exhaust the process's memory."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from modelfn.errors import ModelfnError, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import load_session, read_signature, warm_up
from modelfn.registry.cache_dir import private_dir
from modelfn.registry.labels import Resolutions
from modelfn.settings import Settings
from modelfn.store.base import ObjectStore, located
from modelfn.store.layout import ARTIFACT, SIGNATURE, Manifest, ModelRepository, file_path_problem

log = logging.getLogger("modelfn")
Key = tuple[str, str, int]
LabelKey = tuple[str, str, str | None]
FAILURES_KEPT = 256
"""Failed loads remembered at once (each for MODELFN_LABEL_TTL): enough for every version a store really has."""


def number_or_label(version: str | int | None) -> int | str | None:
    """The integer a version names directly (3 or "3"); a label, or None for the default, as it is."""
    if isinstance(version, str) and version.isascii() and version.isdigit():
        return int(version)
    return version


# ---- the files of a version on disk ----------------------------------------------------------------------------
def check_manifest(manifest: Manifest, name: str, version: int) -> None:
    """Refuse, before anything is fetched, a manifest that claims another model or version than where it sits (the
    location is what the client asked for, never what a copied or tampered manifest says) or whose files could
    escape the version folder."""
    where = f"model {name!r} version {version}"
    if (manifest.name, manifest.version) != (name, version):
        raise NotReady(f"{where}: its manifest names model {manifest.name!r} version {manifest.version}; not served")
    seen: set[str] = set()
    for f in manifest.files:
        problem = file_path_problem(f.path) or ("is listed twice" if f.path in seen else None)
        if problem:
            raise NotReady(f"{where}: the manifest's file path {f.path!r} {problem}; not served")
        seen.add(f.path)
    if manifest.signature_bundle is not None and manifest.signature_bundle.path != SIGNATURE:
        raise NotReady(f"{where}: the manifest's signature path is not {SIGNATURE!r}; not served")


def content_id(manifest: Manifest) -> str:
    """One digest of every file a version loads: its graph's sha256 when that is all, else a sha256 over each
    file's path and digest, so two versions with the same graph and different external weights differ."""
    digests = manifest.digests()
    if len(digests) == 1:
        return manifest.sha256
    listing = "\n".join(f"{path}\t{digest}" for path, digest in sorted(digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def cached_path(cache_dir: Path, bundle: str) -> Path:
    """Where the disk cache keeps the model file of a version whose bundle_id is `bundle`."""
    return cache_dir / "sha256" / bundle / ARTIFACT


def bundle_id(manifest: Manifest) -> str:
    """The disk-cache folder of a version: the artifact's sha256, or with external data or a signature the sha256
    of the whole file set, since the graph alone (naming its data by location) is the same across versions whose
    weights differ, and each version's signature is its own."""
    extra = [*manifest.files, *([manifest.signature_bundle] if manifest.signature_bundle else [])]
    if not extra:
        return manifest.sha256
    lines = [f"{manifest.sha256}  {ARTIFACT}", *(f"{f.sha256}  {f.path}" for f in sorted(extra, key=lambda f: f.path))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_file(path: Path) -> bytes:
    """A regular file's bytes through one descriptor: a symlink (O_NOFOLLOW), a FIFO (O_NONBLOCK: no hang) or
    anything but a regular file is an OSError, FileNotFoundError when there is nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return f.read()


def keep(path: Path, data: bytes) -> None:
    """Put verified bytes in the disk cache, atomically (another process sees the whole file or none). A cache that
    cannot be written (a full disk) costs the next cold process a download, never this load."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not keep %s in the disk cache: %s", path, e)


class ModelCache:
    """Process-wide: module-level `model_cache` below, reused while the environment is warm; `clear()` for tests.

    `stats` counts loads, files downloaded, files found intact on disk (disk_hits), cached files discarded for a
    wrong sha256 (disk_discards), and versions unloaded to stay within the bounds (unloads)."""

    def __init__(self) -> None:
        self._models: OrderedDict[Key, LoadedModel] = OrderedDict()  # least recently used first
        self._bytes: dict[Key, int] = {}
        self._failures: dict[Key, tuple[NotReady, float]] = {}
        self._labels: Resolutions[LabelKey, int] = Resolutions()
        self._locks = KeyedLocks()
        self._guard = threading.Lock()
        self.stats = {"loads": 0, "downloads": 0, "disk_hits": 0, "disk_discards": 0, "unloads": 0}

    def clear(self) -> None:
        with self._guard:
            self._models.clear()
            self._bytes.clear()
            self._failures.clear()
            self._labels.clear()
            for k in self.stats:
                self.stats[k] = 0

    def forget_labels(self) -> None:
        """Resolve labels afresh on next use (after a SnapStart restore the snapshot's resolutions are stale); the
        old ones stay as the fallback for a store that does not answer."""
        self._labels.expire()

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def sizes(self) -> dict[str, int]:
        """How much the cache holds: loaded versions and their bytes, remembered failures and label resolutions,
        and the locks of loads in flight (none of which may grow with requests for versions that do not exist)."""
        return {
            "models": len(self._models),
            "bytes": sum(self._bytes.values()),
            "failures": len(self._failures),
            "labels": len(self._labels),
            "locks": len(self._locks),
        }

    # ---- resolution ----------------------------------------------------------------------------------------
    def resolve(self, repo: ModelRepository, name: str, version: str | int | None, ttl: float) -> int:
        """Integer versions pass through; labels (and the default) are re-read from the store after `ttl` seconds,
        so a label move reaches running processes without a restart, and kept while the store is down."""
        label = number_or_label(version)
        if isinstance(label, int):
            return label
        what = f"model {name!r} " + (f"label {label!r}" if label else "default version")
        return self._labels.get((repo.uri, name, label), ttl, lambda: repo.resolve(name, label), what)

    def fresh(self, repo: ModelRepository, name: str, version: str | int | None, ttl: float) -> int | None:
        """The version a name resolves to if known within `ttl` seconds, else None: no I/O, no lock."""
        label = version if version is None else number_or_label(version)  # None (the default): the common case
        return label if isinstance(label, int) else self._labels.fresh((repo.uri, name, label), ttl)

    # ---- loaded versions -----------------------------------------------------------------------------------
    def peek(self, repo: ModelRepository, name: str, version: int) -> LoadedModel | None:
        """The loaded model if it is in memory, without loading or locking (lets async callers skip a thread hop);
        a hit counts as a use for the LRU order."""
        key = (repo.uri, name, version)
        model = self._models.get(key)
        if model is not None:
            try:  # noqa: SIM105 - not contextlib.suppress: three calls on every request
                self._models.move_to_end(key)
            except KeyError:  # unloaded in between by another thread: this caller still holds the model
                pass
        return model

    def get(self, repo: ModelRepository, name: str, version: int, settings: Settings) -> LoadedModel:
        key = (repo.uri, name, version)
        model = self.peek(repo, name, version)
        if model is not None:
            return model
        with self._locks.hold(key):  # one loader per version; concurrent requests wait for it instead of loading twice
            model = self._models.get(key)
            if model is not None:
                return model
            failed = self._failures.get(key)
            if failed and time.monotonic() - failed[1] < max(settings.label_ttl, 1.0):
                raise failed[0]
            try:
                model, size = self._load(repo, name, version, settings)
            except NotReady as e:
                self._fail(key, e)
                raise
            self._admit(key, model, size, settings)
            return model

    def _fail(self, key: Key, error: NotReady) -> None:
        """Remember a failed load for a while (no re-download storm), keeping at most FAILURES_KEPT."""
        log.error("%s", error.message)
        with self._guard:
            self._failures.pop(key, None)
            self._failures[key] = (error, time.monotonic())
            while len(self._failures) > FAILURES_KEPT:
                del self._failures[next(iter(self._failures))]

    def _admit(self, key: Key, model: LoadedModel, size: int, settings: Settings) -> None:
        """Keep a new version loaded, unloading the least recently used beyond the bounds (never the new one). A
        request still running an unloaded version holds its session, which Python frees once that request ends."""
        limit = settings.max_loaded_mb * 1024 * 1024 if settings.max_loaded_mb else None
        with self._guard:
            self._failures.pop(key, None)
            self._models[key] = model
            self._bytes[key] = size
            while len(self._models) > 1 and (
                len(self._models) > settings.max_loaded_versions
                or (limit is not None and sum(self._bytes.values()) > limit)
            ):
                old, gone = self._models.popitem(last=False)
                self._bytes.pop(old, None)
                self.stats["unloads"] += 1
                log.info("unloaded model %r version %d (least recently used)", gone.name, gone.version)

    def _load(self, repo: ModelRepository, name: str, version: int, settings: Settings) -> tuple[LoadedModel, int]:
        """The loaded model and the bytes its files take."""
        started = time.perf_counter()
        settings = settings.for_model(name)
        where = f"model {name!r} version {version}"
        manifest = repo.manifest(name, version)  # ModelNotFound propagates: the version does not exist
        check_manifest(manifest, name, version)
        cache_dir = private_dir(settings.cache_dir)
        if cache_dir != settings.cache_dir:
            settings = settings.replace(cache_dir=cache_dir)
        folder = cached_path(cache_dir, bundle_id(manifest)).parent
        if settings.verify_key is not None:
            self._check_signature(repo.store, manifest, folder, settings.verify_key)
        files = self._files(repo.store, name, version, folder, manifest.digests())
        graph = files.pop(ARTIFACT)
        try:  # from the verified bytes: the graph, and its external data under the names the graph gives them
            session = load_session(graph, settings, what=where, external=files)
        except Exception as e:  # onnxruntime raises its own exception types for unloadable graphs
            raise located(NotReady(f"{where} failed to load: {e}"), str(folder)) from e
        inputs, outputs = read_signature(session)
        if (inputs, outputs) != (manifest.inputs, manifest.outputs):
            raise NotReady(f"{where}: the artifact's signature differs from its manifest")
        model = LoadedModel(
            name=name,
            version=version,
            session=session,
            inputs=inputs,
            outputs=outputs,
            sha256=manifest.sha256,
            providers=session.get_providers(),
            metadata={
                "quantization": manifest.quantization,
                "created_at": manifest.created_at,
                "artifact": str(folder / ARTIFACT),
            },
            features=manifest.features,
            content_id=content_id(manifest),
        )
        if settings.warmup:
            warm_up(model)
        model.load_seconds = time.perf_counter() - started
        self.stats["loads"] += 1
        log.info("loaded model %r version %d in %.1f ms", name, version, model.load_seconds * 1000)
        return model, manifest.size_bytes + sum(f.size_bytes for f in manifest.files)

    def _check_signature(self, store: ObjectStore, manifest: Manifest, folder: Path, key: Path) -> None:
        """With MODELFN_VERIFY_KEY, before any of the model's files is fetched: the version's signature must
        verify over the sha256s its manifest records, which every byte loaded is then checked against."""
        name, version = manifest.name, manifest.version
        if manifest.signature_bundle is None:
            raise NotReady(
                f"model {name!r} version {version}: not signed, and MODELFN_VERIFY_KEY requires a signature; not served"
            )
        from modelfn.registry import signing  # model-signing is imported only when signatures are checked

        bundle = self._files(store, name, version, folder, {SIGNATURE: manifest.signature_bundle.sha256})
        signing.verify(key, bundle[SIGNATURE], name, version, manifest.digests())

    # ---- files on disk -------------------------------------------------------------------------------------
    def _files(
        self, store: ObjectStore, name: str, version: int, folder: Path, wanted: dict[str, str]
    ) -> dict[str, bytes]:
        """The bytes of each wanted file of a version ({path in the version folder: sha256}), each read once and
        checked against its sha256: from the version's disk-cache folder when intact there, else fetched from the
        store and kept there for the next process."""
        where = f"model {name!r} version {version}"
        out: dict[str, bytes] = {}
        for relative, sha256 in wanted.items():
            data = self._on_disk(folder, relative, sha256, where)
            if data is None:
                data = self._fetch(store, f"{name}/{version}/{relative}", relative, sha256, where)
                keep(folder / relative, data)
            else:
                self.stats["disk_hits"] += 1
            out[relative] = data
        return out

    def _fetch(self, store: ObjectStore, key: str, relative: str, sha256: str, where: str) -> bytes:
        """A file from the store, refused unless its bytes match the manifest."""
        try:
            data = store.read_bytes(key)
        except (ModelfnError, OSError, ValueError) as e:  # LocalStore: ValueError for a key leaving its root
            reason = e.message if isinstance(e, ModelfnError) else (e.strerror if isinstance(e, OSError) else e)
            raise NotReady(f"{where}: {relative} could not be fetched: {reason or type(e).__name__}") from e
        self.stats["downloads"] += 1
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            mismatch = NotReady(
                f"{where}: sha256 mismatch in {relative}: the manifest says {sha256}, the store has {digest}; "
                "not served"
            )
            raise located(mismatch, store.join(key))
        return data

    def _on_disk(self, folder: Path, relative: str, sha256: str, where: str) -> bytes | None:
        """The cached copy's bytes if they are the manifest's, read from a plain file in the version's folder. One
        that is not (bit rot, a truncated copy, a symlink, a file another process put there) is removed, to be
        fetched again; what is returned is what was checked, never read a second time."""
        path = folder / relative
        if not path.parent.resolve().is_relative_to(folder.resolve()):
            outside = NotReady(
                f"{where}: the disk cache's folder for {relative} leads outside the version's; not served"
            )
            raise located(outside, f"{path.parent} -> {path.parent.resolve()}")
        try:
            data: bytes | None = read_file(path)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink, a folder, a FIFO where a file should be
            data = None
        if data is not None and hashlib.sha256(data).hexdigest() == sha256:
            return data
        log.warning("%s: the cached %s no longer matches its sha256; fetching again (at %s)", where, relative, path)
        self.stats["disk_discards"] += 1
        with suppress(OSError):
            path.unlink(missing_ok=True)
        return None


@dataclass
class _Held:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it: as many as the loads in flight, however
    many distinct (perhaps nonexistent) versions clients ask for."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, _Held] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._locks)

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            held = self._locks.setdefault(key, _Held())
            held.users += 1
        try:
            with held.lock:
                yield
        finally:
            with self._guard:
                held.users -= 1
                if not held.users:
                    del self._locks[key]


model_cache = ModelCache()
