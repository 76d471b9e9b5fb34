"""manifest.json read and written without a validation library: the same documents as before, the same refusals."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelfn.errors import StoreError
from modelfn.model.signature import TensorSpec
from modelfn.store import Manifest, ModelRepository, open_store
from modelfn.store.fields import Invalid
from modelfn.store.layout import ArtifactFile, manifest_key

OLD = Path(__file__).with_name("manifest_written_by_pydantic.json")
"""Written by the pydantic Manifest (commit 8720b2b, `model_dump_json(indent=2)`): what stores already hold."""

EXPECTED = Manifest(
    name="ext",
    version=3,
    sha256="0123456789abcdef" * 4,
    size_bytes=1234,
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 3]), TensorSpec(name="ids", datatype="INT64", shape=[-1])],
    outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 4])],
    quantization={
        "method": "dynamic",
        "weight_type": "QInt8",
        "activation_type": "uint8 (dynamic)",
        "per_channel": False,
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "source_size_bytes": 4096,
    },
    created_at="2025-01-02T03:04:05+00:00",
    opset=17,
    producer="pytorch 2.13.0",
    files=[ArtifactFile(path="weights/w.bin", sha256="a" * 64, size_bytes=0)],
    features=["sepal_length", "größe"],
    signature_bundle=ArtifactFile(path="model.sig", sha256="b" * 64, size_bytes=2048),
    baseline=ArtifactFile(path="baseline.json", sha256="c" * 64, size_bytes=512),
)

MINIMAL_OLD = (
    b'{\n  "name": "iris",\n  "version": 1,\n  "sha256": "' + b"d" * 64 + b'",\n  "size_bytes": 10,\n'
    b'  "inputs": [],\n  "outputs": [\n    {\n      "name": "y",\n      "datatype": "FP32",\n      "shape": []\n'
    b'    }\n  ],\n  "quantization": null,\n  "created_at": "2025-01-02T03:04:05+00:00",\n  "opset": null,\n'
    b'  "producer": null,\n  "files": [],\n  "features": null,\n  "signature_bundle": null,\n  "baseline": null\n}'
)
"""The pydantic model's output for a manifest with every optional field absent (nulls and an empty list)."""

GOOD: dict[str, Any] = json.loads(OLD.read_bytes())


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(open_store(str(tmp_path / "store")))


def stored(repo: ModelRepository, document: object) -> Manifest:
    """`document` as model 'ext' version 3's manifest.json, read back through the repository."""
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    repo.store.write_bytes(manifest_key("ext", 3), data)
    return repo.manifest("ext", 3)


def test_a_manifest_written_by_the_pydantic_model_reads_the_same(repo: ModelRepository) -> None:
    assert stored(repo, OLD.read_bytes()) == EXPECTED
    # the same keys, order, values and layout, byte for byte (the file's final newline is the editor's)
    assert EXPECTED.to_json() == OLD.read_bytes().removesuffix(b"\n")
    minimal = Manifest.from_json(json.loads(MINIMAL_OLD))
    assert minimal.files == [] and minimal.quantization is None and minimal.inputs == []
    assert minimal.to_json() == MINIMAL_OLD


def test_round_trip(repo: ModelRepository) -> None:
    assert Manifest.from_json(json.loads(EXPECTED.to_json())) == EXPECTED
    assert stored(repo, EXPECTED.to_json()) == EXPECTED
    assert list(EXPECTED.as_dict()) == list(GOOD)
    assert EXPECTED.as_dict()["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}


def test_defaults_and_digests() -> None:
    one = Manifest(name="m", version=1, sha256="e" * 64, size_bytes=1, inputs=[], outputs=[])
    other = Manifest(name="m", version=1, sha256="e" * 64, size_bytes=1, inputs=[], outputs=[])
    assert one.files == [] and one.files is not other.files  # a list of each manifest's own
    assert one.created_at.endswith("+00:00") and len(one.created_at) == len("2025-01-02T03:04:05+00:00")
    assert (one.quantization, one.opset, one.producer, one.features, one.signature_bundle) == (None,) * 5
    assert EXPECTED.digests() == {"model.onnx": "0123456789abcdef" * 4, "weights/w.bin": "a" * 64}
    assert dataclasses.replace(one, version=2).version == 2
    with pytest.raises(TypeError):
        Manifest("m", 1, "e" * 64, 1, [], [])  # type: ignore[call-arg]  # keywords only, as before


def test_absent_created_at_gets_now() -> None:
    document = {k: v for k, v in GOOD.items() if k != "created_at"}
    created = datetime.fromisoformat(Manifest.from_json(document).created_at)
    assert created.tzinfo is not None
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_unknown_keys_are_ignored(repo: ModelRepository) -> None:
    document = copy.deepcopy(GOOD)
    document["added_by_a_newer_publisher"] = {"x": 1}
    document["files"][0]["mode"] = "0644"
    document["inputs"][0]["doc"] = "a newer field"
    assert stored(repo, document) == EXPECTED


def changed(path: str, value: object) -> dict[str, Any]:
    """GOOD with the field at dotted `path` set to `value` (or removed, for ...)."""
    document = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target: Any = document
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("name", ..., "name: required"),
        ("sha256", ..., "sha256: required"),
        ("inputs", ..., "inputs: required"),
        ("inputs.0.shape", ..., "inputs.0.shape: required"),
        ("name", 3, "name: expected a string, got a number 3"),
        ("version", "3", "version: expected an integer >= 1, got a string '3'"),
        ("version", 3.0, "version: expected an integer >= 1, got a number 3.0"),
        ("version", True, "version: expected an integer >= 1, got true"),
        ("size_bytes", False, "size_bytes: expected an integer >= 0, got false"),
        ("opset", True, "opset: expected an integer, got true"),
        ("inputs.1.shape", [-1, True], "inputs.1.shape.1: expected an integer, got true"),
        ("inputs.0.shape", [-1, "3"], "inputs.0.shape.1: expected an integer, got a string '3'"),
        ("version", 0, "version: expected an integer >= 1, got a number 0"),
        ("size_bytes", -1, "size_bytes: expected an integer >= 0, got a number -1"),
        ("files.0.size_bytes", -5, "files.0.size_bytes: expected an integer >= 0, got a number -5"),
        ("sha256", "A" * 64, "sha256: expected a sha256 (64 lowercase hex digits)"),
        ("sha256", "a" * 63, "sha256: expected a sha256"),
        ("baseline.sha256", "a" * 65, "baseline.sha256: expected a sha256"),
        ("signature_bundle.sha256", ..., "signature_bundle.sha256: required"),
        ("outputs", {}, "outputs: expected a list, got an object"),
        ("outputs", [["y"]], "outputs.0: expected a JSON object, got a list"),
        ("files", None, "files: expected a list, got null"),
        ("created_at", None, "created_at: expected a string, got null"),
        ("quantization", ["dynamic"], "quantization: expected an object, got a list"),
        ("features", [1], "features.0: expected a string, got a number 1"),
        ("producer", 2, "producer: expected a string, got a number 2"),
    ],
)
def test_a_manifest_that_does_not_validate_is_a_store_error_naming_the_field(
    repo: ModelRepository, path: str, value: object, problem: str
) -> None:
    with pytest.raises(StoreError) as caught:
        stored(repo, changed(path, value))
    assert caught.value.status == 502
    assert caught.value.message.startswith("model 'ext' version 3: manifest.json is not a valid manifest: ")
    assert problem in caught.value.message
    assert isinstance(caught.value.__cause__, Invalid)


def test_every_problem_is_named_at_once(repo: ModelRepository) -> None:
    document = changed("version", 0)
    del document["name"]
    with pytest.raises(StoreError) as caught:
        stored(repo, document)
    assert caught.value.message.endswith(
        "is not a valid manifest: name: required; version: expected an integer >= 1, got a number 0"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got a list"),
        (b"null", "expected a JSON object, got null"),
    ],
)
def test_a_manifest_that_is_no_json_object_is_a_store_error(repo: ModelRepository, data: bytes, problem: str) -> None:
    with pytest.raises(StoreError, match=r"manifest\.json is not a valid manifest: ") as caught:
        stored(repo, data)
    assert problem in caught.value.message
