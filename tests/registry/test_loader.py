"""The warm-start cache and the registry on top of it: load once per process, a warm disk serves a new process
without downloading, integrity (sha256) is enforced on disk and in the store, label moves arrive within the ttl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.publish import publish, set_label

from modelfn.errors import ModelNotFound, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache, model_cache
from modelfn.settings import Settings
from modelfn.store import ModelRepository, open_store
from modelfn.store.base import file_sha256

BUCKET = "test-models"  # the session store of conftest: s3://test-models/models


def artifact_path(bucket: str, name: str, version: int) -> str:
    return f"/{bucket}/models/{name}/{version}/model.onnx"


def manifest_path(bucket: str, name: str, version: int) -> str:
    return f"/{bucket}/models/{name}/{version}/manifest.json"


def cached_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file())


def registry(store: str, cache_dir: Path, **settings: object) -> ModelRegistry:
    return ModelRegistry.from_uri(store, Settings.load(cache_dir=cache_dir, **settings))


# --- once per process -------------------------------------------------------------------------------------------


def test_version_loads_once_per_process(s3_store: str, tmp_path: Path) -> None:
    reg = registry(s3_store, tmp_path / "cache")
    first = reg.get("iris")
    second = reg.get("iris")
    assert isinstance(first, LoadedModel)
    assert second is first
    assert reg.get("iris", 1) is first
    assert reg.get("iris", "1") is first
    assert reg.get("iris", "stable") is first
    assert model_cache.stats["loads"] == 1
    assert model_cache.stats["downloads"] == 1
    assert reg.peek("iris", 1) is first
    assert (first.name, first.version) == ("iris", 1)
    assert first.sha256 == ModelRepository(open_store(s3_store)).manifest("iris", 1).sha256


def test_concurrent_gets_load_once(s3_store: str, tmp_path: Path, aws: EmbeddedAWS) -> None:
    reg = registry(s3_store, tmp_path / "cache")
    before = aws.count("GET", artifact_path(BUCKET, "mlp", 1))
    barrier = threading.Barrier(8)
    got: list[LoadedModel] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            got.append(reg.get("mlp", 1))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(got) == 8
    assert all(m is got[0] for m in got)
    assert model_cache.stats["loads"] == 1
    assert model_cache.stats["downloads"] == 1
    assert aws.count("GET", artifact_path(BUCKET, "mlp", 1)) - before == 1


# --- the disk cache serves a second process ------------------------------------------------------------------------

SECOND_PROCESS = textwrap.dedent(
    """
    import json, os
    import numpy as np
    from modelfn.registry.loader import model_cache
    from modelfn.registry import ModelRegistry
    from modelfn.settings import Settings

    settings = Settings()
    registry = ModelRegistry.from_uri(settings.store, settings)
    model = registry.get("mlp", 1)
    out = model.predict({"input": np.ones((2, 256), dtype=np.float32)})
    print(json.dumps({
        "cache_dir": str(settings.cache_dir),
        "stats": model_cache.stats,
        "version": model.version,
        "probabilities": out["probabilities"].tolist(),
    }))
    """
)


def test_disk_cache_serves_a_second_process_without_download(
    s3_store: str, tmp_path: Path, aws: EmbeddedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "shared-cache"
    monkeypatch.setenv("MODELFN_CACHE_DIR", str(cache_dir))
    art, man = artifact_path(BUCKET, "mlp", 1), manifest_path(BUCKET, "mlp", 1)

    # Process 1 (this one): a cold disk, so the artifact is fetched exactly once.
    before_first = aws.count("GET", art)
    settings = Settings()
    assert settings.cache_dir == cache_dir
    model = ModelRegistry.from_uri(s3_store, settings).get("mlp", 1)
    assert aws.count("GET", art) - before_first == 1
    sha = ModelRepository(open_store(s3_store)).manifest("mlp", 1).sha256
    assert cached_files(cache_dir) == [cache_dir / "sha256" / sha / "model.onnx"]
    expected = model.predict({"input": np.ones((2, 256), dtype=np.float32)})["probabilities"]

    # Process 2: same disk cache, same store; it reads the manifest from S3 but never the artifact.
    before_second, manifests_before = aws.count("GET", art), aws.count("GET", man)
    env = dict(os.environ, MODELFN_STORE=s3_store, MODELFN_CACHE_DIR=str(cache_dir))
    proc = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert aws.count("GET", art) - before_second == 0
    assert aws.count("GET", man) - manifests_before >= 1  # it did talk to this S3 (so the 0 above means something)
    assert result["cache_dir"] == str(cache_dir)
    assert result["version"] == 1
    assert result["stats"]["disk_hits"] == 1
    assert result["stats"]["downloads"] == 0
    assert result["stats"]["loads"] == 1
    probabilities = np.asarray(result["probabilities"], dtype=np.float32)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert cached_files(cache_dir) == [cache_dir / "sha256" / sha / "model.onnx"]


def test_cached_file_with_wrong_sha256_is_fetched_again(s3_store: str, tmp_path: Path, aws: EmbeddedAWS) -> None:
    cache_dir = tmp_path / "cache"
    art = artifact_path(BUCKET, "iris", 1)
    reg = registry(s3_store, cache_dir)
    sha = reg.get("iris").sha256
    cached = cache_dir / "sha256" / sha / "model.onnx"
    good = cached.read_bytes()
    cached.write_bytes(good[:-10] + b"corrupted!")  # bit rot, a truncated copy, a tampered file
    assert file_sha256(cached) != sha

    model_cache.clear()  # a fresh process on the same disk
    before = aws.count("GET", art)
    model = registry(s3_store, cache_dir).get("iris")
    assert aws.count("GET", art) - before == 1
    assert model_cache.stats["disk_discards"] == 1
    assert model_cache.stats["disk_hits"] == 0
    assert model_cache.stats["downloads"] == 1
    assert model_cache.stats["loads"] == 1
    assert cached.read_bytes() == good
    assert cached_files(cache_dir) == [cached]
    out = model.predict({"float_input": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)})
    assert out["label"].tolist() == [0]

    model_cache.clear()  # and an intact file is a hit, without a download
    before = aws.count("GET", art)
    registry(s3_store, cache_dir).get("iris")
    assert aws.count("GET", art) - before == 0
    assert model_cache.stats["disk_hits"] == 1
    assert model_cache.stats["disk_discards"] == 0


# --- integrity in the store --------------------------------------------------------------------------------------


def test_corrupted_artifact_in_store_is_refused(
    fresh_bucket: str, example_dir: Path, tmp_path: Path, aws: EmbeddedAWS
) -> None:
    iris = publish(example_dir / "iris.onnx", fresh_bucket, "iris", labels=["stable"], progress=False)
    publish(example_dir / "ranker.onnx", fresh_bucket, "ranker", labels=["stable"], progress=False)
    bucket = fresh_bucket.removeprefix("s3://").split("/")[0]
    # Replace the artifact after publishing with bytes that are a perfectly loadable model, just not this one.
    boto3.client("s3").put_object(
        Bucket=bucket, Key="models/iris/1/model.onnx", Body=(example_dir / "ranker.onnx").read_bytes()
    )
    cache_dir = tmp_path / "cache"
    reg = registry(fresh_bucket, cache_dir)

    with pytest.raises(NotReady) as e:
        reg.get("iris")
    assert e.value.status == 503
    assert "'iris'" in e.value.message
    assert "version 1" in e.value.message
    assert "sha256 mismatch" in e.value.message
    assert cached_files(cache_dir) == []  # neither the bad bytes nor a partial download stay on disk
    assert model_cache.stats["loads"] == 0

    # The failure is remembered for a while (no re-download storm), and reported by status().
    before = aws.count("GET", artifact_path(bucket, "iris", 1))
    with pytest.raises(NotReady, match="sha256 mismatch"):
        reg.get("iris", 1)
    assert aws.count("GET", artifact_path(bucket, "iris", 1)) == before
    status = reg.status("iris")
    assert (status.version, status.ready) == (1, False)
    assert status.error is not None
    assert "sha256 mismatch" in status.error

    # Every other model of the store keeps serving.
    ranker = reg.get("ranker")
    out = ranker.predict(
        {"dense": np.zeros((1, 4), dtype=np.float32), "item_ids": np.array([[1, 2, 3]], dtype=np.int64)}
    )
    assert out["score"].shape == (1, 1)
    assert reg.status("ranker").ready
    assert cached_files(cache_dir) == [cache_dir / "sha256" / ranker.sha256 / "model.onnx"]
    problems = reg.preload()
    assert set(problems) == {"iris"}
    assert "sha256 mismatch" in problems["iris"]
    assert iris["sha256"] != ranker.sha256


# --- labels ------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_versions(fresh_bucket: str, example_dir: Path) -> str:
    """iris v1 and v2 in a fresh store, `stable` on v1."""
    publish(example_dir / "iris.onnx", fresh_bucket, "iris", labels=["stable"], progress=False)
    publish(example_dir / "iris.onnx", fresh_bucket, "iris", progress=False)
    return fresh_bucket


def test_label_move_picked_up_after_ttl(two_versions: str, tmp_path: Path) -> None:
    store = two_versions
    reg = ModelRegistry(
        ModelRepository(open_store(store)), Settings(label_ttl=0.2, cache_dir=tmp_path / "c"), cache=ModelCache()
    )
    assert reg.get("iris").version == 1
    assert reg.get("iris", "stable").version == 1
    set_label(store, "iris", "stable", 2)
    time.sleep(0.3)  # longer than label_ttl: the next get must re-read labels.json
    assert reg.get("iris").version == 2
    assert reg.get("iris", "stable").version == 2
    assert reg.resolve("iris") == 2


def test_label_move_with_zero_ttl_is_immediate(two_versions: str, tmp_path: Path) -> None:
    store = two_versions
    reg = registry(store, tmp_path / "c", label_ttl=0)
    assert reg.get("iris").version == 1
    set_label(store, "iris", "stable", 2)
    assert reg.get("iris").version == 2
    set_label(store, "iris", "stable", 1)
    assert reg.get("iris").version == 1
    assert model_cache.stats["loads"] == 2  # each version loaded once, however often the label moves


def test_label_within_ttl_is_not_reread(two_versions: str, tmp_path: Path, aws: EmbeddedAWS) -> None:
    store = two_versions
    bucket = store.removeprefix("s3://").split("/")[0]
    reg = registry(store, tmp_path / "c", label_ttl=3600)
    assert reg.get("iris").version == 1
    set_label(store, "iris", "stable", 2)
    reads = aws.count("GET", f"/{bucket}/models/iris/labels.json")
    for _ in range(5):
        assert reg.get("iris").version == 1  # resolution cached for the ttl: no store round trip per request
    assert aws.count("GET", f"/{bucket}/models/iris/labels.json") == reads


# --- not found ---------------------------------------------------------------------------------------------------


def test_unknown_version_label_or_model(s3_store: str, tmp_path: Path) -> None:
    reg = registry(s3_store, tmp_path / "cache")
    with pytest.raises(ModelNotFound) as e:
        reg.get("iris", 99)
    assert e.value.status == 404
    assert "'iris'" in e.value.message
    assert "99" in e.value.message
    with pytest.raises(ModelNotFound, match="no label 'beta'"):
        reg.get("iris", "beta")
    with pytest.raises(ModelNotFound, match="'ghost'"):
        reg.get("ghost")
    with pytest.raises(ModelNotFound):
        reg.versions("ghost")
    assert model_cache.stats["loads"] == 0
    assert reg.get("iris").version == 1  # a miss does not poison the model


def test_registry_models_subset(s3_store: str, tmp_path: Path) -> None:
    reg = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path / "c"), models=["iris", "ranker"])
    assert reg.model_names() == ["iris", "ranker"]
    with pytest.raises(ModelNotFound, match="not served here"):
        reg.get("mlp")
    full = registry(s3_store, tmp_path / "c")
    assert full.model_names() == ["iris", "mlp", "ranker"]
    assert full.versions("mlp") == [1, 2]
    assert full.resolve("mlp") == 2  # stable
    assert full.resolve("mlp", "fp32") == 1


def test_served_model_list_is_cached_for_the_label_ttl(s3_store: str, aws: EmbeddedAWS, tmp_path: Path) -> None:
    """/predict without a model needs the list: it is read from the store once per MODELFN_LABEL_TTL, not per call."""
    registry = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, label_ttl=60))
    assert registry.cached_model_names() is None
    lists = aws.count("GET", "/test-models")
    names = registry.model_names()
    assert names == ["iris", "mlp", "ranker"]
    assert registry.model_names() == names and registry.cached_model_names() == names
    assert aws.count("GET", "/test-models") == lists + 1
    expired = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, label_ttl=0))
    expired.model_names()
    assert expired.cached_model_names() is None
