"""create_container_app in-process: how /invocations picks the model when the container serves one or several,
and /ping before the models are loaded (503, then a background load, then 200)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from modelfn.adapters.sagemaker import create_container_app, split_route
from modelfn.protocols.sagemaker import format_attributes, parse_attributes
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


def test_single_served_model_is_the_default(s3_store: str) -> None:
    registry = ModelRegistry.from_uri(s3_store, Settings(), ["iris"])
    client = TestClient(create_container_app(registry, models=["iris"]))
    r = client.post("/invocations", json={"features": IRIS_ROW})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == 0


def test_several_models_without_a_default_need_the_target_header(s3_store: str) -> None:
    registry = ModelRegistry.from_uri(s3_store, Settings(), ["iris", "mlp"])
    client = TestClient(create_container_app(registry, models=["iris", "mlp"]))
    r = client.post("/invocations", json={"features": IRIS_ROW})
    assert r.status_code == 400
    assert "X-Amzn-SageMaker-Target-Model" in r.json()["error"]
    r = client.post("/invocations", json={"instances": IRIS_ROW}, headers={"X-Amzn-SageMaker-Target-Model": "iris"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == 0


def test_default_model_version_setting_applies(s3_store: str) -> None:
    """MODELFN_VERSION pins the default model's version for /invocations (here the fp32 label: version 1)."""
    registry = ModelRegistry.from_uri(s3_store, Settings(version="fp32"), ["mlp"])
    client = TestClient(create_container_app(registry, default_model="mlp", models=["mlp"]))
    v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.1] * 256}]}
    assert client.post("/invocations", json=v2).json()["model_version"] == "1"
    tf = client.post("/invocations", json={"instances": [[0.1] * 256]})
    assert tf.status_code == 200, tf.text


def test_ping_is_503_until_loaded_then_200(s3_store: str) -> None:
    registry = ModelRegistry.from_uri(s3_store, Settings(), ["iris"])
    client = TestClient(create_container_app(registry, models=["iris"]))
    first = client.get("/ping")
    assert first.status_code == 503  # nothing loaded: the entrypoint loads before listening; this app did not
    assert "iris" in first.json()["error"]
    for _ in range(100):  # the failed ping started a background load
        if client.get("/ping").status_code == 200:
            break
        time.sleep(0.05)
    assert client.get("/ping").json() == {"status": "ok", "models": ["iris"]}


def test_invocations_body_limit(s3_store: str) -> None:
    registry = ModelRegistry.from_uri(s3_store, Settings(max_body_bytes=1000), ["iris"])
    client = TestClient(create_container_app(registry, models=["iris"]))
    r = client.post("/invocations", json={"features": [[1.0, 2.0, 3.0, 4.0]] * 100})
    assert r.status_code == 413
    assert "MODELFN_MAX_BODY_BYTES" in r.json()["error"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GET /v2/models/mlp", ("GET", "/v2/models/mlp", "")),
        ("/predict?model=iris", ("POST", "/predict", "model=iris")),
        ("post /v1/models/iris:predict", ("POST", "/v1/models/iris:predict", "")),
    ],
)
def test_split_route(value: str, expected: tuple[str, str, str]) -> None:
    assert split_route(value) == expected


def test_custom_attributes_round_trip() -> None:
    attrs = {"modelfn-path": "POST /predict?model=a;b=c", "inference-header-content-length": "120"}
    encoded = format_attributes(attrs)
    assert ";" not in encoded.replace("; ", "")  # values are percent-encoded: only the separators remain
    assert parse_attributes(encoded + "; other=1") == {**attrs, "other": "1"}
