"""What a process keeps: at most MODELFN_MAX_LOADED_VERSIONS versions and MODELFN_MAX_LOADED_MB of their files
loaded (least recently used out first), and nothing at all for versions, labels or models that do not exist. And
`lookup`, the event loop's way in: a loaded model from memory, or None, never a store round trip or a lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.errors import ModelNotFound, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import FAILURES_KEPT, ModelCache
from modelfn.settings import Settings
from modelfn.store import ModelRepository, open_store
from modelfn.store.layout import ArtifactFile
from tests.registry.versions import affine, reference, save_external, write_version

X = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)


def versions_in_store(tmp_path: Path, count: int, padding: int = 0) -> tuple[str, dict[int, np.ndarray]]:
    """A local store with versions 1..count of model `m` (external data), and onnxruntime's answer for each."""
    root = tmp_path / "store"
    store = open_store(str(root))
    answers = {}
    for version in range(1, count + 1):
        model = affine(np.full((3, 4), version, dtype=np.float32), np.zeros(4), padding)
        path = save_external(model, tmp_path / f"v{version}")
        write_version(store, "m", version, path, {"weights.bin": path.parent / "weights.bin"})
        answers[version] = reference(model, X)
    return str(root), answers


def loaded_versions(cache: ModelCache) -> list[int]:
    return sorted(m.version for m in cache.loaded())


def test_loaded_versions_are_bounded_by_count_least_recently_used_first(tmp_path: Path) -> None:
    store, answers = versions_in_store(tmp_path, 5)
    cache = ModelCache()
    settings = Settings(cache_dir=tmp_path / "cache", max_loaded_versions=3)
    reg = ModelRegistry(ModelRepository(open_store(store)), settings, cache=cache)
    held = reg.get("m", 1)
    reg.get("m", 2)
    reg.get("m", 3)
    assert reg.lookup("m", 1) is held  # a use: 2 is now the least recently used
    reg.get("m", 4)
    assert loaded_versions(cache) == [1, 3, 4]
    reg.get("m", 5)
    assert loaded_versions(cache) == [1, 4, 5]
    assert cache.stats["unloads"] == 2
    assert cache.sizes()["models"] == 3
    assert reg.peek("m", 3) is None

    # A version unloaded while a request still holds it keeps working for that request.
    for version in (2, 3):
        reg.get("m", version)
    assert reg.peek("m", 1) is None
    np.testing.assert_allclose(held.predict({"x": X})["y"], answers[1])
    assert cache.stats["loads"] == 7  # an unloaded version comes back on demand (from the disk cache)
    assert cache.stats["downloads"] == 10  # model.onnx and weights.bin of 5 versions, once each
    assert len(cache.loaded()) == 3


def test_loaded_versions_are_bounded_by_the_bytes_of_all_their_files(tmp_path: Path) -> None:
    """Artifact and external data both count: each version's weights.bin is ~400 KB, its graph well under 1 KB."""
    store, answers = versions_in_store(tmp_path, 4, padding=100_000)
    repo = ModelRepository(open_store(store))
    manifest = repo.manifest("m", 1)
    size = manifest.size_bytes + sum(f.size_bytes for f in manifest.files)
    assert manifest.size_bytes < 1024 < size
    cache = ModelCache()
    settings = Settings(cache_dir=tmp_path / "cache", max_loaded_mb=2.5 * size / 2**20)
    reg = ModelRegistry(repo, settings, cache=cache)
    for version in (1, 2, 3, 4):
        np.testing.assert_allclose(reg.get("m", version).predict({"x": X})["y"], answers[version])
        assert cache.sizes()["bytes"] <= 2.5 * size
    assert loaded_versions(cache) == [3, 4]
    assert cache.sizes()["bytes"] == 2 * size

    # One version larger than the bound alone still loads (and is then the only one).
    tiny = Settings(cache_dir=tmp_path / "cache", max_loaded_mb=0.5 * size / 2**20)
    ModelRegistry(repo, tiny, cache=cache).get("m", 1)
    assert loaded_versions(cache) == [1]


def test_requests_for_what_does_not_exist_leave_nothing_behind(tmp_path: Path) -> None:
    store, _ = versions_in_store(tmp_path, 1)
    cache = ModelCache()
    reg = ModelRegistry(ModelRepository(open_store(store)), Settings(cache_dir=tmp_path / "cache"), cache=cache)
    model = reg.get("m")
    before = cache.sizes()
    for i in range(5000):
        with pytest.raises(ModelNotFound):
            reg.get("m", 100 + i)
        with pytest.raises(ModelNotFound):
            reg.get("m", f"label{i}")
        with pytest.raises(ModelNotFound):
            reg.get(f"ghost{i}")
        assert reg.lookup("m", f"label{i}") is None
    after = cache.sizes()
    assert after == before
    assert after == {"models": 1, "bytes": after["bytes"], "failures": 0, "labels": 1, "locks": 0}  # m's default
    assert reg.get("m") is model


def test_remembered_failures_are_bounded(tmp_path: Path) -> None:
    """A failed load is remembered for a while (no re-fetch storm), but only the most recent FAILURES_KEPT."""
    path = save_external(affine(np.ones((3, 4)), np.zeros(4)), tmp_path / "exported")
    store = open_store(str(tmp_path / "store"))
    escaping = [ArtifactFile(path="../weights.bin", sha256="0" * 64, size_bytes=1)]
    for version in range(1, FAILURES_KEPT + 51):
        write_version(store, "m", version, path, overrides={"files": escaping})
    cache = ModelCache()
    reg = ModelRegistry(ModelRepository(store), Settings(cache_dir=tmp_path / "cache"), cache=cache)
    for version in range(1, FAILURES_KEPT + 51):
        with pytest.raises(NotReady, match=r"'\.\.'"):
            reg.get("m", version)
    assert cache.sizes()["failures"] == FAILURES_KEPT
    assert cache.sizes()["locks"] == 0


# --- lookup: from memory or not at all -------------------------------------------------------------------------


def test_lookup_answers_from_memory_while_the_resolution_is_fresh(
    s3_store: str, tmp_path: Path, aws: EmbeddedAWS
) -> None:
    reg = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path / "cache", label_ttl=1.0))
    assert reg.lookup("iris") is None  # nothing resolved yet: the caller loads in a worker thread
    model = reg.get("iris")
    reg.get("iris", "stable")
    requests = len(aws.requests)
    assert reg.lookup("iris") is model
    assert reg.lookup("iris", "stable") is model
    assert reg.lookup("iris", 1) is model
    assert reg.lookup("iris", "1") is model
    assert reg.lookup("iris", 2) is None  # not loaded
    assert reg.lookup("mlp") is None  # not resolved
    assert reg.lookup("no such model!") is None
    assert len(aws.requests) == requests

    time.sleep(1.1)  # past the TTL: a label may have moved, so only `get` (in a thread) may answer
    assert reg.lookup("iris") is None
    assert reg.lookup("iris", "stable") is None
    assert reg.lookup("iris", 1) is model  # an integer needs no resolution
    assert len(aws.requests) == requests  # lookup never touched the store

    assert reg.get("iris") is model
    assert reg.lookup("iris") is model  # fresh again


def test_lookup_of_a_model_not_served_here_is_none(s3_store: str, tmp_path: Path) -> None:
    full = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path / "cache"))
    full.get("mlp", 1)
    subset = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path / "cache"), models=["iris"])
    assert full.lookup("mlp", 1) is not None
    assert subset.lookup("mlp", 1) is None  # loaded in this process, but not this registry's to serve


def test_lookup_takes_no_lock(s3_store: str, tmp_path: Path) -> None:
    """While every lock of the cache is held (a load in flight, an eviction, a label refresh), lookup still
    answers at once."""
    reg = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path / "cache"))
    model = reg.get("iris")
    cache = reg.cache
    got: list[LoadedModel | None] = []
    with cache._guard, cache._labels._guard, cache._locks.hold((reg.repo.uri, "iris", 1)):
        worker = threading.Thread(target=lambda: got.append(reg.lookup("iris")), daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive()
    assert got == [model]
