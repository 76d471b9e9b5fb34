"""The plain /predict route and its hooks, request bodies (size limit, compression, hand-built binary v2), the
error shape of every failure, a corrupted artifact that must never be served, and health/docs/OpenAPI. Mostly
in-process over create_app; a few checks run against `modelfn serve` as a real process."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from modelfn_tools.examples import IRIS_CLASSES

from modelfn.hooks import Hooks
from modelfn.http import create_app
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

HEADER = "Inference-Header-Content-Length"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def app_client(store: str, settings: Settings | None = None, **kwargs: Any) -> TestClient:
    registry = ModelRegistry.from_uri(store, settings or Settings(), kwargs.pop("models", None))
    return TestClient(create_app(registry, **kwargs))


@pytest.fixture
def client(s3_store: str) -> Iterator[TestClient]:
    with app_client(s3_store) as c:
        yield c


@pytest.fixture
def small_client(s3_store: str) -> Iterator[TestClient]:
    """Request bodies over 1000 bytes get 413."""
    with app_client(s3_store, Settings(max_body_bytes=1000)) as c:
        yield c


def error(response: Any, status: int) -> str:  # httpx or httpx2 (TestClient) responses
    """The status, and the body every error has: JSON with exactly one key, `error`, a non-empty string."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


def check_iris_predictions(body: Any, x: np.ndarray, reference: Any, extra: set[str] | None = None) -> None:
    expected = reference.run("iris", 1, {"float_input": x})
    assert set(body) == {"predictions"}
    assert len(body["predictions"]) == len(x)
    for row, label, probs in zip(body["predictions"], expected["label"], expected["probabilities"], strict=True):
        assert set(row) == {"label", "probabilities"} | (extra or set())
        assert row["label"] == int(label)
        reference.assert_same(row["probabilities"], probs)


# ---- /predict ------------------------------------------------------------------------------------------------


def test_predict_one_row_and_rows(client: TestClient, reference: Any) -> None:
    x = reference.iris_rows(6, seed=40)
    one = client.post("/predict?model=iris", json={"features": x[0].tolist()})
    assert one.status_code == 200, one.text
    check_iris_predictions(one.json(), x[:1], reference)
    rows = client.post("/predict?model=iris", json={"features": x.tolist()})
    assert rows.status_code == 200, rows.text
    check_iris_predictions(rows.json(), x, reference)


def test_predict_against_the_real_server(server: str, reference: Any) -> None:
    x = reference.iris_rows(3, seed=41)
    r = httpx.post(f"{server}/predict", params={"model": "iris"}, json={"features": x.tolist()})
    assert r.status_code == 200, r.text
    check_iris_predictions(r.json(), x, reference)
    assert "?model=" in error(httpx.post(f"{server}/predict", json={"features": IRIS_ROW}), 404)
    assert "no-such-model" in error(httpx.post(f"{server}/predict?model=no-such-model", json={"features": [1]}), 404)


def test_predict_default_model_with_postprocess_hook(s3_store: str, reference: Any) -> None:
    seen: list[str] = []

    def add_class_names(rows: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
        seen.append(f"{model.name}/{model.version}")
        return [{**row, "class_name": IRIS_CLASSES[row["label"]]} for row in rows]

    x = reference.iris_rows(5, seed=42)
    hooks = {"iris": Hooks(postprocess=add_class_names)}
    with app_client(s3_store, default_model="iris", hooks=hooks) as c:
        r = c.post("/predict", json={"features": x.tolist()})  # no ?model: the function's own model
        assert r.status_code == 200, r.text
        body = r.json()
        check_iris_predictions(body, x, reference, extra={"class_name"})
        assert [p["class_name"] for p in body["predictions"]] == [IRIS_CLASSES[p["label"]] for p in body["predictions"]]
        assert seen == ["iris/1"]
        # The hook belongs to iris only: another model asked for by name is answered without it.
        other = c.post("/predict?model=mlp", json={"features": reference.mlp_rows(1).tolist()})
        assert other.status_code == 200, other.text
        assert set(other.json()["predictions"][0]) == {"logits", "probabilities"}
        assert seen == ["iris/1"]


def test_predict_preprocess_hook(s3_store: str, reference: Any) -> None:
    def from_named(features: Any, model: LoadedModel) -> dict[str, np.ndarray]:
        cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        return {model.inputs[0].name: np.asarray([[f[c] for c in cols] for f in features], dtype=np.float32)}

    x = reference.iris_rows(2, seed=43)
    named = [
        dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], r, strict=True)) for r in x.tolist()
    ]
    with app_client(s3_store, default_model="iris", hooks={"iris": Hooks(preprocess=from_named)}) as c:
        r = c.post("/predict", json={"features": named})
        assert r.status_code == 200, r.text
        check_iris_predictions(r.json(), x, reference)


def test_predict_needs_a_model_on_a_multi_model_server(client: TestClient, s3_store: str, reference: Any) -> None:
    message = error(client.post("/predict", json={"features": IRIS_ROW}), 404)
    assert "?model=" in message
    # With one model served, /predict needs no ?model.
    with app_client(s3_store, models=["iris"]) as only_iris:
        r = only_iris.post("/predict", json={"features": IRIS_ROW})
        assert r.status_code == 200, r.text
        check_iris_predictions(r.json(), np.asarray([IRIS_ROW], dtype=np.float32), reference)
        assert "not served" in error(only_iris.post("/predict?model=mlp", json={"features": [0.0] * 256}), 404)


def test_predict_bad_requests_are_400(client: TestClient) -> None:
    assert "JSON" in error(client.post("/predict?model=iris", content=b'{"features": [1, 2,'), 400)
    assert "features" in error(client.post("/predict?model=iris", json={"rows": [IRIS_ROW]}), 400)
    assert "features" in error(client.post("/predict?model=iris", json=[IRIS_ROW]), 400)
    assert "[-1, 4]" in error(client.post("/predict?model=iris", json={"features": [1.0, 2.0]}), 400)
    assert "FP32" in error(client.post("/predict?model=iris", json={"features": ["a", "b", "c", "d"]}), 400)
    assert "ranker" in error(client.post("/predict?model=ranker", json={"features": [1, 2, 3, 4]}), 400)


# ---- malformed bodies, routes and methods --------------------------------------------------------------------------


def test_malformed_json_is_400_on_every_protocol(client: TestClient) -> None:
    for path in ("/v2/models/iris/infer", "/v1/models/iris:predict", "/predict?model=iris"):
        assert "JSON" in error(client.post(path, content=b"{not json"), 400)


def test_unknown_route_and_wrong_method(client: TestClient, server: str) -> None:
    with httpx.Client(base_url=server) as real:
        for c in (client, real):
            error(c.get("/no/such/route"), 404)
            error(c.post("/v2/models/iris/nothing", json={}), 404)
            error(c.get("/predict"), 405)
            error(c.delete("/v2/models/iris/infer"), 405)
            error(c.put("/v1/models/iris:predict", json={}), 405)


# ---- body size limit -----------------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_with_content_length(small_client: TestClient, reference: Any) -> None:
    big = {"features": [IRIS_ROW] * 60}
    assert len(json.dumps(big)) > 1000
    for path in ("/predict?model=iris", "/v2/models/iris/infer", "/v1/models/iris:predict"):
        assert "1000" in error(small_client.post(path, json=big), 413)
    # Under the limit the same server answers.
    small = small_client.post("/predict?model=iris", json={"features": [IRIS_ROW] * 3})
    check_iris_predictions(small.json(), np.asarray([IRIS_ROW] * 3, dtype=np.float32), reference)


def test_streamed_body_over_the_limit_is_413(small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"features": ['
        for _ in range(100):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    r = small_client.post("/predict?model=iris", content=chunks())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert "1000" in error(r, 413)


def test_streamed_body_under_the_limit_is_served(small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"features": '
        yield json.dumps(IRIS_ROW).encode()
        yield b"}"

    r = small_client.post("/predict?model=iris", content=chunks())
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1


def test_compressed_body_inflating_over_the_limit_is_413(small_client: TestClient) -> None:
    body = gzip.compress(json.dumps({"features": [IRIS_ROW] * 200}).encode())
    assert len(body) < 1000
    r = small_client.post("/predict?model=iris", content=body, headers={"content-encoding": "gzip"})
    assert "1000" in error(r, 413)


# ---- compressed request bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_body(client: TestClient, reference: Any, encoding: str) -> None:
    x = reference.iris_rows(4, seed=44)
    raw = json.dumps({"features": x.tolist()}).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = client.post(
        "/predict?model=iris", content=body, headers={"content-encoding": encoding, "content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    check_iris_predictions(r.json(), x, reference)


def test_gzip_request_body_on_the_real_server(server: str, reference: Any) -> None:
    x = reference.iris_rows(2, seed=45)
    body = gzip.compress(json.dumps({"instances": x.tolist()}).encode())
    r = httpx.post(f"{server}/v1/models/iris:predict", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == reference.run("iris", 1, {"float_input": x})[
        "label"
    ].tolist()


def test_bad_compressed_bodies_are_400(client: TestClient) -> None:
    message = error(
        client.post("/predict?model=iris", content=b"not gzip at all", headers={"content-encoding": "gzip"}), 400
    )
    assert "gzip" in message
    message = error(client.post("/predict?model=iris", content=b"{}", headers={"content-encoding": "br"}), 400)
    assert "br" in message


# ---- hand-built binary v2 requests ------------------------------------------------------------------------------


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {HEADER: str(len(head)), "content-type": "application/octet-stream"}


def split_binary_response(r: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and every output as an array, binary ones read from the bytes after the header."""
    assert r.status_code == 200, r.text
    length = int(r.headers[HEADER])
    head = json.loads(r.content[:length])
    arrays, offset = {}, length
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    for out in head["outputs"]:
        dtype = dtypes[out["datatype"]]
        if "data" in out:
            arrays[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
            continue
        size = out["parameters"]["binary_data_size"]
        arrays[out["name"]] = np.frombuffer(r.content[offset : offset + size], dtype=dtype).reshape(out["shape"])
        offset += size
    assert offset == len(r.content)
    return head, arrays


def test_binary_input_by_hand(client: TestClient, reference: Any) -> None:
    feed = reference.ranker_feed(3, seed=46)
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": list(feed[n].shape), "parameters": {"binary_data_size": feed[n].nbytes}}
            for n, d in (("dense", "FP32"), ("item_ids", "INT64"))
        ]
    }
    body, headers = binary_request(header, feed["dense"].tobytes(), feed["item_ids"].tobytes())
    r = client.post("/v2/models/ranker/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert HEADER not in r.headers  # JSON outputs unless asked: the answer is plain JSON
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    expected = reference.run("ranker", 1, feed)
    for name in ("score", "embedding"):
        assert outputs[name]["datatype"] == "FP32"
        assert outputs[name]["shape"] == list(expected[name].shape)
        reference.assert_same(np.asarray(outputs[name]["data"]).reshape(outputs[name]["shape"]), expected[name])


def iris_binary_header(size: int) -> dict[str, Any]:
    """One binary FP32 [1, 4] input for iris, announcing `size` bytes."""
    tensor = {"name": "float_input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": size}}
    return {"inputs": [tensor]}


def test_truncated_binary_part_is_400(client: TestClient) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    body, headers = binary_request(iris_binary_header(16), x.tobytes()[:10])
    message = error(client.post("/v2/models/iris/infer", content=body, headers=headers), 400)
    assert "binary_data_size 16" in message
    assert "float_input" in message

    # binary_data_size agrees with the bytes sent, but they are fewer than the shape needs.
    body, headers = binary_request(iris_binary_header(12), x.tobytes()[:12])
    assert "[1, 4]" in error(client.post("/v2/models/iris/infer", content=body, headers=headers), 400)

    # Not a whole number of FP32 elements.
    body, headers = binary_request(iris_binary_header(10), x.tobytes()[:10])
    assert "FP32" in error(client.post("/v2/models/iris/infer", content=body, headers=headers), 400)


def test_inconsistent_binary_framing_is_400(client: TestClient) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    body, headers = binary_request(iris_binary_header(16), x.tobytes())

    too_long = {**headers, HEADER: str(len(body) + 1)}
    assert HEADER in error(client.post("/v2/models/iris/infer", content=body, headers=too_long), 400)
    not_a_number = {**headers, HEADER: "abc"}
    assert HEADER in error(client.post("/v2/models/iris/infer", content=body, headers=not_a_number), 400)
    trailing = client.post("/v2/models/iris/infer", content=body + b"\x00" * 8, headers=headers)
    assert "8 bytes" in error(trailing, 400)
    cut_header = {**headers, HEADER: str(int(headers[HEADER]) - 3)}
    assert "JSON" in error(client.post("/v2/models/iris/infer", content=body, headers=cut_header), 400)


def test_binary_data_output_parameter(client: TestClient, reference: Any) -> None:
    x = reference.iris_rows(5, seed=47)
    expected = reference.run("iris", 1, {"float_input": x})
    request = {
        "id": "b1",
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [5, 4], "data": x.ravel().tolist()}],
    }
    r = client.post("/v2/models/iris/infer", json=request)
    assert r.headers["content-type"] == "application/octet-stream"
    head, arrays = split_binary_response(r)
    assert head["id"] == "b1"
    assert head["model_name"] == "iris"
    assert head["model_version"] == "1"
    assert [o["name"] for o in head["outputs"]] == ["label", "probabilities"]
    assert all("data" not in o for o in head["outputs"])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 5 * 8
    np.testing.assert_array_equal(arrays["label"], expected["label"])
    reference.assert_same(arrays["probabilities"], expected["probabilities"])

    # binary_data_output covers listed outputs too, unless one says binary_data: false.
    request["outputs"] = [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}]
    head, arrays = split_binary_response(client.post("/v2/models/iris/infer", json=request))
    assert head["outputs"][0]["data"] == expected["label"].tolist()
    assert "data" not in head["outputs"][1]
    reference.assert_same(arrays["probabilities"], expected["probabilities"])


def test_binary_data_output_on_the_real_server(server: str, reference: Any) -> None:
    x = reference.mlp_rows(2, seed=48)
    request = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 256], "data": x.tolist()}],
        "outputs": [{"name": "logits"}],
    }
    head, arrays = split_binary_response(httpx.post(f"{server}/v2/models/mlp/versions/1/infer", json=request))
    assert [o["name"] for o in head["outputs"]] == ["logits"]
    reference.assert_same(arrays["logits"], reference.run("mlp", 1, {"input": x})["logits"])


# ---- a corrupted artifact ---------------------------------------------------------------------------------------


@pytest.fixture
def corrupted_store(fresh_bucket: str, example_dir: Path) -> str:
    """mlp v1 (fp32) whose model.onnx was overwritten after publishing, mlp v2 (int8) and iris v1 intact."""
    from modelfn_tools.publish import publish

    publish(example_dir / "mlp.onnx", fresh_bucket, "mlp", progress=False)
    publish(example_dir / "mlp_int8.onnx", fresh_bucket, "mlp", progress=False)
    publish(example_dir / "iris.onnx", fresh_bucket, "iris", labels=["stable"], progress=False)
    bucket, _, prefix = fresh_bucket.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    key = f"{prefix}/mlp/1/model.onnx"
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, in the weights: the size is right, the sha256 is not
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return fresh_bucket


def test_corrupted_version_is_never_served(corrupted_store: str, tmp_path: Path, reference: Any) -> None:
    # A cache dir of its own: the shared one may hold the genuine bytes under the same sha256.
    settings = Settings(cache_dir=tmp_path / "cache")
    x = reference.mlp_rows(1, seed=49)
    v2_request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": x.ravel().tolist()}]}
    with app_client(corrupted_store, settings) as c:
        for _ in range(2):  # the failure is remembered, and answered the same way again
            message = error(c.post("/v2/models/mlp/versions/1/infer", json=v2_request), 503)
            assert "'mlp'" in message
            assert "version 1" in message
            assert "sha256 mismatch" in message
        assert "sha256 mismatch" in error(
            c.post("/v1/models/mlp/versions/1:predict", json={"instances": x.tolist()}), 503
        )
        assert "sha256 mismatch" in error(c.get("/v2/models/mlp/versions/1"), 503)

        ready = c.get("/v2/models/mlp/versions/1/ready")
        assert ready.status_code != 200
        assert "sha256 mismatch" in error(ready, ready.status_code)
        status = c.get("/v1/models/mlp/versions/1").json()["model_version_status"]
        assert status[0]["version"] == "1"
        assert status[0]["state"] != "AVAILABLE"
        assert "sha256 mismatch" in status[0]["status"]["error_message"]

        # Every other version and model keeps serving.
        good = c.post("/v2/models/mlp/versions/2/infer", json=v2_request)
        assert good.status_code == 200, good.text
        logits = np.asarray(good.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 10)
        reference.assert_same(logits, reference.run("mlp", 2, {"input": x})["logits"])
        assert c.get("/v2/models/mlp/versions/2/ready").status_code == 200
        assert c.get("/v2/models/mlp/ready").json() == {"name": "mlp", "version": "2", "ready": True}
        assert c.get("/v2/models/iris/ready").status_code == 200
        iris = c.post("/predict?model=iris", json={"features": IRIS_ROW})
        assert iris.status_code == 200, iris.text
        assert c.get("/v2/health/ready").status_code == 200

        loaded = c.get("/health").json()["loaded"]
        assert "mlp/2" in loaded
        assert "iris/1" in loaded
        assert "mlp/1" not in loaded


# ---- health, docs and the OpenAPI document --------------------------------------------------------------------------


def test_health_lists_loaded_models(client: TestClient, reference: Any) -> None:
    before = client.get("/health")
    assert before.status_code == 200
    assert before.json()["status"] == "ok"
    assert before.json()["loaded"] == {}
    client.post("/predict?model=iris", json={"features": IRIS_ROW})
    loaded = client.get("/health").json()["loaded"]
    assert list(loaded) == ["iris/1"]
    assert len(loaded["iris/1"]["sha256"]) == 64


def test_docs_page(client: TestClient, server: str) -> None:
    for r in (client.get("/docs"), httpx.get(f"{server}/docs")):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "swagger" in r.text.lower()
        assert "/openapi.json" in r.text


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict)
        assert part in node, f"{ref} does not resolve in /openapi.json"
        node = node[part]
    return node


def test_openapi_document(client: TestClient, server: str) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(httpx.get(f"{server}/openapi.json").json()["paths"]) == set(paths)
    # Every request-body route documents its JSON body; the schemas name each protocol's fields.
    body_fields = {
        "/v2/models/{name}/infer": "inputs",
        "/v2/models/{name}/versions/{version}/infer": "inputs",
        "/v1/models/{name}:predict": "instances",
        "/v1/models/{name}/versions/{version}:predict": "instances",
        "/v1/models/{name}/labels/{label}:predict": "instances",
        "/predict": "features",
    }
    for path, field in body_fields.items():
        op = paths[path]["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"], (path, schema)
        assert {"200", "400", "404", "413", "503"} <= set(op["responses"])
    tensor = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    items = tensor["properties"]["inputs"]["items"]
    if "$ref" in items:
        items = _resolve(doc, items["$ref"])
    assert {"name", "datatype", "shape", "data", "parameters"} <= set(items["properties"])
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}/ready", "/v1/models/{name}/metadata"):
        assert "get" in paths[path]
    assert "get" in paths["/health"]
    # Every reference in the document resolves inside it (Swagger UI shows resolver errors otherwise).
    for ref in set(_refs(doc)):
        _resolve(doc, ref)
