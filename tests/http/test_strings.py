"""String (BYTES) models served end to end by `modelfn serve` as a real process: tritonclient's JSON and binary
tensors (v2), TF Serving REST with plain strings and {"b64": ...} values, and /predict. Every answer equals
onnxruntime's own on the same published file; string outputs come back as strings (binary: UTF-8 bytes)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import serve_process
from protocols.string_models import CITIES, TEXTS, StringModels, as_text, city_rows, publish_string_models
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def models(aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> StringModels:
    bucket = f"strings-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return publish_string_models(f"s3://{bucket}/models", tmp_path_factory.mktemp("string-models"))


@pytest.fixture(scope="module")
def base(models: StringModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_process(["--store", models.store], tmp_path_factory.mktemp("serve-strings")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
    yield c
    c.close()


def bytes_input(name: str, arr: np.ndarray, binary: bool) -> httpclient.InferInput:
    inp = httpclient.InferInput(name, list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr, binary_data=binary)
    return inp


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_string_in_string_out(client: httpclient.InferenceServerClient, binary: bool) -> None:
    # the client's binary form carries bytes; its JSON form, str
    arr = np.array([t.encode() for t in TEXTS] if binary else TEXTS, dtype=np.object_)
    out = [httpclient.InferRequestedOutput("same", binary_data=binary)]
    result = client.infer("echo", [bytes_input("text", arr, binary)], outputs=out)
    (meta,) = result.get_response()["outputs"]
    assert meta["datatype"] == "BYTES"
    assert meta["shape"] == [len(TEXTS)]
    same = result.as_numpy("same")
    assert same is not None
    assert as_text(same) == TEXTS


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_categorical_model_equals_onnxruntime(
    client: httpclient.InferenceServerClient, models: StringModels, binary: bool
) -> None:
    arr = np.array([[c.encode() if binary else c] for c in CITIES], dtype=np.object_)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer("cities", [bytes_input("city", arr, binary)], outputs=outputs)
    expected = models.run("cities", {"city": city_rows(CITIES)})
    label, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    assert label is not None and probabilities is not None
    assert as_text(label) == expected["label"].tolist() == ["eu", "eu", "asia", "none", "eu", "asia"]
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_tritonclient_bytes_that_are_not_utf8_get_400(client: httpclient.InferenceServerClient) -> None:
    arr = np.array([b"ok", b"caf\xe9"], dtype=np.object_)
    with pytest.raises(InferenceServerException) as info:
        client.infer("echo", [bytes_input("text", arr, True)])
    assert info.value.status() == "400"
    assert "input 'text' element 1: bytes are not UTF-8 text" in str(info.value.message())


def _b64(text: str) -> dict[str, str]:
    return {"b64": base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize(
    "doc",
    [
        {"instances": city_rows(CITIES)},
        {"instances": [[_b64(c)] for c in CITIES]},
        {"inputs": {"city": [[_b64(c)] if i % 2 else [c] for i, c in enumerate(CITIES)]}},
    ],
    ids=["instances-strings", "instances-b64", "inputs-mixed"],
)
def test_tf_rest_categorical_model_equals_onnxruntime(base: str, models: StringModels, doc: dict[str, Any]) -> None:
    r = httpx.post(f"{base}/v1/models/cities:predict", json=doc, timeout=30)
    assert r.status_code == 200, r.text
    expected = models.run("cities", {"city": city_rows(CITIES)})
    if "instances" in doc:
        rows = r.json()["predictions"]
        labels, probabilities = [p["label"] for p in rows], [p["probabilities"] for p in rows]
    else:
        labels, probabilities = r.json()["outputs"]["label"], r.json()["outputs"]["probabilities"]
    assert labels == expected["label"].tolist()
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_tf_rest_string_output(base: str) -> None:
    r = httpx.post(f"{base}/v1/models/echo:predict", json={"instances": [_b64(t) for t in TEXTS]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": TEXTS}
    r = httpx.post(f"{base}/v1/models/echo:predict", json={"instances": ["ok", {"b64": "/w=="}]}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"].startswith("input 'text' element [1]: bytes are not UTF-8 text")


def test_predict_route(base: str, models: StringModels) -> None:
    r = httpx.post(f"{base}/predict", params={"model": "echo"}, json={"features": TEXTS}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [{"same": t} for t in TEXTS]}
    r = httpx.post(f"{base}/predict", params={"model": "cities"}, json={"features": city_rows(CITIES)}, timeout=30)
    assert r.status_code == 200, r.text
    expected = models.run("cities", {"city": city_rows(CITIES)})
    rows = r.json()["predictions"]
    assert [p["label"] for p in rows] == expected["label"].tolist()
    np.testing.assert_allclose([p["probabilities"] for p in rows], expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_values_that_do_not_fit_get_400_not_a_wrong_answer(base: str) -> None:
    """A ragged string tensor and a number among strings name themselves."""
    ragged = {"inputs": [{"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": [["paris"], ["a", "b"]]}]}
    r = httpx.post(f"{base}/v2/models/cities/infer", json=ragged, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"] == "input 'city': expected BYTES values (strings), got a list (the data is ragged) at [0]"
    r = httpx.post(f"{base}/predict", params={"model": "echo"}, json={"features": ["a", 7]}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"] == "features: expected BYTES values (strings), got 7 at [1]"
