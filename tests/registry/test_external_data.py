"""Models saved with external data: every file of a version is fetched beside model.onnx, verified by sha256 (in the
store and on disk) and loaded from the version's own folder; a file that could leave that folder is never fetched,
and a manifest is trusted only for the model and version where it sits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelfn_tools.embedded import EmbeddedAWS

from modelfn.errors import NotReady
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache, bundle_id, model_cache
from modelfn.settings import Settings
from modelfn.store import ModelRepository, ObjectStore, open_store
from modelfn.store.base import file_sha256
from modelfn.store.layout import ArtifactFile
from tests.registry.versions import SIGNATURE, affine, reference, save_external, write_version

X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=np.float32)
RNG = np.random.default_rng(7)


def weights() -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=4).astype(np.float32)


def registry(store: str, cache_dir: Path, cache: ModelCache | None = None) -> ModelRegistry:
    return ModelRegistry(ModelRepository(open_store(store)), Settings(cache_dir=cache_dir), cache=cache)


def bucket_of(store: str) -> str:
    return store.removeprefix("s3://").split("/")[0]


def gets(aws: EmbeddedAWS, store: str, name: str, version: int) -> int:
    """GET requests so far for anything in the version's folder but its manifest."""
    folder = f"/{bucket_of(store)}/models/{name}/{version}/"
    return sum(1 for m, p in list(aws.requests) if m == "GET" and p.startswith(folder) and "manifest" not in p)


@pytest.fixture
def external(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """model.onnx + weights.bin on disk, and onnxruntime's answer on the in-memory original."""
    model = affine(*weights())
    path = save_external(model, tmp_path / "exported")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "weights.bin"]
    return path, reference(model, X)


def publish_external(store: ObjectStore, path: Path, name: str = "ext", version: int = 1) -> None:
    write_version(store, name, version, path, {"weights.bin": path.parent / "weights.bin"})


def test_external_data_loads_from_s3_and_a_warm_disk_downloads_nothing(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path, aws: EmbeddedAWS
) -> None:
    path, expected = external
    store = open_store(fresh_bucket)
    publish_external(store, path)
    manifest = ModelRepository(store).manifest("ext", 1)
    cache_dir = tmp_path / "cache"

    before = gets(aws, fresh_bucket, "ext", 1)
    model = registry(fresh_bucket, cache_dir).get("ext")
    np.testing.assert_allclose(model.predict({"x": X})["y"], expected, rtol=1e-6)
    assert gets(aws, fresh_bucket, "ext", 1) - before == 2  # model.onnx and weights.bin, once each
    folder = cache_dir / "sha256" / bundle_id(manifest)
    assert sorted(p for p in cache_dir.rglob("*") if p.is_file()) == [folder / "model.onnx", folder / "weights.bin"]
    assert model_cache.stats["downloads"] == 2

    # A fresh process on the same disk: both files verified there, nothing downloaded.
    fresh = ModelCache()
    before = gets(aws, fresh_bucket, "ext", 1)
    again = registry(fresh_bucket, cache_dir, fresh).get("ext")
    assert gets(aws, fresh_bucket, "ext", 1) == before
    assert (fresh.stats["downloads"], fresh.stats["disk_hits"], fresh.stats["loads"]) == (0, 2, 1)
    np.testing.assert_allclose(again.predict({"x": X})["y"], expected, rtol=1e-6)


def test_external_data_loads_from_a_local_folder(external: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, expected = external
    root = tmp_path / "store"
    publish_external(open_store(str(root)), path)
    model = registry(str(root), tmp_path / "cache").get("ext", 1)
    np.testing.assert_allclose(model.predict({"x": X})["y"], expected, rtol=1e-6)
    assert model.metadata["artifact"].startswith(str(tmp_path / "cache" / "sha256"))


def test_a_changed_data_file_in_the_store_is_refused(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, _ = external
    store = open_store(fresh_bucket)
    publish_external(store, path)
    data = (path.parent / "weights.bin").read_bytes()
    store.write_bytes("ext/1/weights.bin", data[:-4] + b"\x00\x00\x80\x3f")  # same size, one weight changed
    cache_dir = tmp_path / "cache"
    with pytest.raises(NotReady) as e:
        registry(fresh_bucket, cache_dir).get("ext")
    assert e.value.status == 503
    for part in ("'ext'", "version 1", "weights.bin", "sha256 mismatch"):
        assert part in e.value.message
    assert not [p for p in cache_dir.rglob("weights.bin*")]  # the bad bytes never reach the disk cache
    assert model_cache.stats["loads"] == 0


def test_a_data_file_changed_on_disk_is_fetched_again(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path, aws: EmbeddedAWS
) -> None:
    path, expected = external
    store = open_store(fresh_bucket)
    publish_external(store, path)
    cache_dir = tmp_path / "cache"
    registry(fresh_bucket, cache_dir).get("ext")
    [cached] = cache_dir.rglob("weights.bin")
    cached.write_bytes(b"\x00" * cached.stat().st_size)  # bit rot in the weights, the graph intact

    fresh = ModelCache()
    bucket = bucket_of(fresh_bucket)
    graph, data = aws.count("GET", f"/{bucket}/models/ext/1/model.onnx"), aws.count("GET", "/ext/1/weights.bin")
    model = registry(fresh_bucket, cache_dir, fresh).get("ext")
    assert aws.count("GET", f"/{bucket}/models/ext/1/model.onnx") == graph
    assert aws.count("GET", "/ext/1/weights.bin") == data + 1
    assert (fresh.stats["disk_hits"], fresh.stats["disk_discards"], fresh.stats["downloads"]) == (1, 1, 1)
    assert file_sha256(cached) == file_sha256(path.parent / "weights.bin")
    np.testing.assert_allclose(model.predict({"x": X})["y"], expected, rtol=1e-6)


def test_a_symlink_in_the_disk_cache_is_replaced(external: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Even one pointing at the right bytes: the file it names could change under the model later."""
    path, expected = external
    root = tmp_path / "store"
    publish_external(open_store(str(root)), path)
    cache_dir = tmp_path / "cache"
    registry(str(root), cache_dir).get("ext")
    [cached] = cache_dir.rglob("weights.bin")
    cached.unlink()
    cached.symlink_to(path.parent / "weights.bin")

    fresh = ModelCache()
    model = registry(str(root), cache_dir, fresh).get("ext")
    assert not cached.is_symlink()
    assert (fresh.stats["disk_discards"], fresh.stats["downloads"]) == (1, 1)
    np.testing.assert_allclose(model.predict({"x": X})["y"], expected, rtol=1e-6)


def test_data_in_a_subfolder_loads_and_a_cache_folder_leading_elsewhere_is_refused(tmp_path: Path) -> None:
    model = affine(*weights())
    path = save_external(model, tmp_path / "exported", location="data/weights.bin")
    root = tmp_path / "store"
    write_version(open_store(str(root)), "ext", 1, path, {"data/weights.bin": path.parent / "data" / "weights.bin"})
    cache_dir = tmp_path / "cache"
    loaded = registry(str(root), cache_dir).get("ext")
    np.testing.assert_allclose(loaded.predict({"x": X})["y"], reference(model, X), rtol=1e-6)

    [data] = cache_dir.rglob("data")  # the cached subfolder swapped for a link to somewhere else
    elsewhere = tmp_path / "elsewhere"
    data.rename(elsewhere)
    data.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(NotReady, match="leads outside") as e:
        registry(str(root), cache_dir, ModelCache()).get("ext")
    assert e.value.status == 503
    assert (elsewhere / "weights.bin").exists()  # nothing outside the cache folder is touched


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../2/weights.bin", "'..'"),
        ("data/../../weights.bin", "'..'"),
        ("data\\weights.bin", "backslash"),
        ("data//weights.bin", "empty segment"),
        ("", "empty segment"),
        ("./weights.bin", "'.' segment"),
        ("model.onnx", "artifact"),
    ],
)
def test_a_file_path_that_could_leave_the_version_folder_is_refused_before_any_fetch(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path, aws: EmbeddedAWS, bad: str, why: str
) -> None:
    path, _ = external
    store = open_store(fresh_bucket)
    good = ArtifactFile(path="weights.bin", sha256=file_sha256(path.parent / "weights.bin"), size_bytes=1)
    evil = ArtifactFile(path=bad, sha256=good.sha256, size_bytes=1)
    write_version(
        store, "ext", 1, path, {"weights.bin": path.parent / "weights.bin"}, overrides={"files": [good, evil]}
    )
    before = gets(aws, fresh_bucket, "ext", 1)
    cache_dir = tmp_path / "cache"
    with pytest.raises(NotReady) as e:
        registry(fresh_bucket, cache_dir).get("ext")
    assert e.value.status == 503
    assert "'ext' version 1" in e.value.message
    assert repr(bad) in e.value.message
    assert why in e.value.message
    assert gets(aws, fresh_bucket, "ext", 1) == before  # not even model.onnx was fetched
    assert not cache_dir.exists()


def test_a_file_listed_twice_is_refused(external: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = external
    root = tmp_path / "store"
    good = ArtifactFile(path="weights.bin", sha256=file_sha256(path.parent / "weights.bin"), size_bytes=1)
    write_version(
        open_store(str(root)),
        "ext",
        1,
        path,
        {"weights.bin": path.parent / "weights.bin"},
        overrides={"files": [good] * 2},
    )
    with pytest.raises(NotReady, match="listed twice"):
        registry(str(root), tmp_path / "cache").get("ext")


def test_a_graph_whose_own_data_location_leaves_its_folder_is_not_loaded(tmp_path: Path) -> None:
    """The manifest lists a harmless file, but model.onnx itself names `../weights.bin`: onnxruntime, loading from
    the version's own folder, refuses to read outside it (and that file is no verified one anyway)."""
    path = save_external(affine(*weights()), tmp_path / "exported" / "inner")
    outside = tmp_path / "exported" / "weights.bin"
    (path.parent / "weights.bin").replace(outside)
    graph = onnx.load(str(path), load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"  # onnx itself refuses to write this; a hand-made graph can say it
    onnx.save_model(graph, str(path))
    root = tmp_path / "store"
    write_version(open_store(str(root)), "ext", 1, path, {"weights.bin": outside}, signature=SIGNATURE)
    cache_dir = tmp_path / "cache"
    (cache_dir / "sha256").mkdir(parents=True)
    (cache_dir / "sha256" / "weights.bin").write_bytes(outside.read_bytes())  # what `..` would reach
    with pytest.raises(NotReady) as e:
        registry(str(root), cache_dir).get("ext")
    assert e.value.status == 503
    assert "'ext' version 1 failed to load" in e.value.message
    assert model_cache.stats["loads"] == 0


def test_versions_sharing_a_graph_keep_their_own_weights(tmp_path: Path) -> None:
    """The graph of an external-data model names its weights by location only, so two versions can share a
    model.onnx byte for byte: each version's folder is named by its whole file set, never by the graph alone."""
    root = tmp_path / "store"
    store = open_store(str(root))
    expected = {}
    for version in (1, 2):
        model = affine(*weights())
        path = save_external(model, tmp_path / f"v{version}")
        publish_external(store, path, version=version)
        expected[version] = reference(model, X)
    repo = ModelRepository(store)
    assert repo.manifest("ext", 1).sha256 == repo.manifest("ext", 2).sha256
    reg = registry(str(root), tmp_path / "cache")
    for version in (1, 2):
        np.testing.assert_allclose(reg.get("ext", version).predict({"x": X})["y"], expected[version], rtol=1e-6)
    assert len(list((tmp_path / "cache" / "sha256").iterdir())) == 2


# --- a manifest is trusted only where it sits ----------------------------------------------------------------------


def test_a_manifest_naming_another_version_is_refused(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path, aws: EmbeddedAWS
) -> None:
    """A manifest copied from version 1 into version 2's folder: version 2 is never served as version 1's bytes."""
    path, _ = external
    store = open_store(fresh_bucket)
    publish_external(store, path)
    write_version(store, "ext", 2, path, {"weights.bin": path.parent / "weights.bin"}, overrides={"version": 1})
    before = gets(aws, fresh_bucket, "ext", 1) + gets(aws, fresh_bucket, "ext", 2)
    reg = registry(fresh_bucket, tmp_path / "cache")
    with pytest.raises(NotReady) as e:
        reg.get("ext", 2)
    assert e.value.status == 503
    assert "model 'ext' version 2: its manifest names model 'ext' version 1" in e.value.message
    assert gets(aws, fresh_bucket, "ext", 1) + gets(aws, fresh_bucket, "ext", 2) == before
    assert reg.get("ext", 1).version == 1  # the real version 1 still serves


def test_a_manifest_naming_another_model_is_refused(
    fresh_bucket: str, external: tuple[Path, np.ndarray], tmp_path: Path, aws: EmbeddedAWS
) -> None:
    path, _ = external
    store = open_store(fresh_bucket)
    publish_external(store, path, name="other")
    write_version(store, "ext", 1, path, {"weights.bin": path.parent / "weights.bin"}, overrides={"name": "other"})
    before = gets(aws, fresh_bucket, "other", 1)
    with pytest.raises(NotReady, match="'ext' version 1: its manifest names model 'other' version 1"):
        registry(fresh_bucket, tmp_path / "cache").get("ext", 1)
    assert gets(aws, fresh_bucket, "other", 1) == before  # the other model's files are never fetched for it
