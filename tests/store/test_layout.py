"""ModelRepository: the contract's store layout read back (models, versions, labels, manifests, resolution)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfn.errors import InvalidInput, ModelNotFound, StoreError
from modelfn.model.signature import TensorSpec
from modelfn.store import Manifest, ModelRepository, ObjectStore, open_store
from modelfn.store.layout import artifact_key, labels_key, manifest_key


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    uri: str = request.getfixturevalue("fresh_bucket")
    return open_store(uri)


def _manifest(name: str, version: int) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        sha256=f"{version:064x}",
        size_bytes=10,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
    )


def _publish(store: ObjectStore, name: str, version: int, *, manifest: bool = True) -> None:
    store.write_bytes(artifact_key(name, version), b"onnx bytes")
    if manifest:
        store.write_bytes(manifest_key(name, version), _manifest(name, version).to_json())


def _labels(store: ObjectStore, name: str, labels: dict[str, int]) -> None:
    store.write_bytes(labels_key(name), json.dumps(labels).encode())


def test_models_lists_valid_model_folders(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    assert repo.models() == []
    _publish(store, "iris", 1)
    _publish(store, "mlp-v.2_x", 1)
    store.write_bytes("_scratch/1/model.onnx", b"x")  # not a valid model name
    assert repo.models() == ["iris", "mlp-v.2_x"]
    assert repo.uri == store.uri


def test_versions_ignore_half_published(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    _publish(store, "m", 1)
    _publish(store, "m", 2, manifest=False)  # artifact uploaded, manifest not yet: invisible
    _publish(store, "m", 10)
    _publish(store, "m", 3)
    store.write_bytes("m/0/manifest.json", b"{}")  # versions are positive
    store.write_bytes("m/latest/manifest.json", b"{}")  # not a number
    assert repo.versions("m") == [1, 3, 10]  # numeric order, not string order
    assert repo.versions("absent") == []


def test_labels(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    _publish(store, "m", 1)
    assert repo.labels("m") == {}
    _labels(store, "m", {"stable": 1, "canary": 3})
    assert repo.labels("m") == {"stable": 1, "canary": 3}
    store.write_bytes(labels_key("m"), b"{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        repo.labels("m")


def test_manifest(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    _publish(store, "m", 2)
    m = repo.manifest("m", 2)
    assert (m.name, m.version, m.sha256, m.size_bytes) == ("m", 2, f"{2:064x}", 10)
    assert m.inputs == [TensorSpec(name="x", datatype="FP32", shape=[-1, 4])]
    with pytest.raises(ModelNotFound) as e:
        repo.manifest("m", 5)
    assert e.value.status == 404
    assert "'m'" in e.value.message
    assert "5" in e.value.message
    store.write_bytes(manifest_key("m", 7), b'{"name": "m"}')
    with pytest.raises(StoreError, match="not a valid manifest"):
        repo.manifest("m", 7)


def test_resolve(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    for v in (1, 2, 3):
        _publish(store, "m", v)
    _labels(store, "m", {"stable": 2, "canary": 3})
    assert repo.resolve("m", 3) == 3
    assert repo.resolve("m", "1") == 1
    assert repo.resolve("m", "canary") == 3
    assert repo.resolve("m", "stable") == 2
    assert repo.resolve("m", None) == 2  # stable wins over the highest


def test_resolve_default_without_stable_is_highest(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    for v in (1, 4):
        _publish(store, "m", v)
    _publish(store, "m", 5, manifest=False)  # half-published: not a candidate
    assert repo.resolve("m", None) == 4
    _labels(store, "m", {"canary": 1})
    assert repo.resolve("m", None) == 4


def test_resolve_unknown_model_or_label(store: ObjectStore) -> None:
    repo = ModelRepository(store)
    with pytest.raises(ModelNotFound) as e:
        repo.resolve("ghost", None)
    assert e.value.status == 404
    assert "'ghost'" in e.value.message

    _publish(store, "m", 1)
    _labels(store, "m", {"stable": 1, "canary": 1})
    with pytest.raises(ModelNotFound) as e:
        repo.resolve("m", "beta")
    assert e.value.status == 404
    assert "'beta'" in e.value.message
    assert "canary, stable" in e.value.message

    _labels(store, "m", {})
    with pytest.raises(ModelNotFound, match=r"labels: none"):
        repo.resolve("m", "beta")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-lead", ".hidden", "x" * 129, "sp ace"])
def test_invalid_names_rejected(tmp_path: Path, name: str) -> None:
    repo = ModelRepository(open_store(str(tmp_path)))
    for call in (
        lambda: repo.versions(name),
        lambda: repo.labels(name),
        lambda: repo.manifest(name, 1),
        lambda: repo.resolve(name, None),
        lambda: repo.resolve(name, "stable"),
    ):
        with pytest.raises(InvalidInput, match="invalid model name") as e:
            call()
        assert e.value.status == 400
