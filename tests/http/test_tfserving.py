"""TensorFlow Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest): row (`instances`) and
columnar (`inputs`) requests, answered with `predictions` / `outputs` in exactly TF Serving's shapes, version and
label routes, model status and metadata, and errors. Answers are compared with onnxruntime's own outputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

JSON_HEADERS = {"content-type": "application/json"}


def predict(server: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server}/v1/models/{path}:predict", json=body, timeout=30)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


def rows_to_columns(predictions: list[dict[str, Any]], names: list[str]) -> dict[str, np.ndarray]:
    assert all(set(p) == set(names) for p in predictions), predictions
    return {n: np.asarray([p[n] for p in predictions]) for n in names}


# ---- row format: instances -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
def test_instances_single_input_mlp(server: str, reference: Any, batch: int) -> None:
    x = reference.mlp_rows(batch, seed=30 + batch)
    body = ok(predict(server, "mlp", {"instances": x.tolist()}))
    assert set(body) == {"predictions"}
    preds = body["predictions"]
    assert len(preds) == batch  # one entry per instance
    expected = reference.run("mlp", 2, {"input": x})  # default: label stable -> v2 (int8)
    got = rows_to_columns(preds, ["logits", "probabilities"])
    for name in ("logits", "probabilities"):
        reference.assert_same(got[name], expected[name])


def test_instances_single_input_iris_plain_and_named(server: str, reference: Any) -> None:
    x = reference.iris_rows(5, seed=31)
    expected = reference.run("iris", 1, {"float_input": x})
    plain = ok(predict(server, "iris", {"instances": x.tolist()}))
    named = ok(predict(server, "iris", {"instances": [{"float_input": row} for row in x.tolist()]}))
    assert plain == named
    assert len(plain["predictions"]) == 5
    for row, label, probs in zip(plain["predictions"], expected["label"], expected["probabilities"], strict=True):
        assert set(row) == {"label", "probabilities"}
        assert isinstance(row["label"], int)
        assert row["label"] == int(label)
        reference.assert_same(row["probabilities"], probs)


def test_instances_multiple_named_inputs_ranker(server: str, reference: Any) -> None:
    feed = reference.ranker_feed(3, seed=32)
    instances = [
        {"dense": d, "item_ids": i} for d, i in zip(feed["dense"].tolist(), feed["item_ids"].tolist(), strict=True)
    ]
    body = ok(predict(server, "ranker", {"instances": instances}))
    assert set(body) == {"predictions"}
    assert len(body["predictions"]) == 3
    got = rows_to_columns(body["predictions"], ["score", "embedding"])
    expected = reference.run("ranker", 1, feed)
    reference.assert_same(got["score"], expected["score"])
    reference.assert_same(got["embedding"], expected["embedding"])


# ---- columnar format: inputs -----------------------------------------------------------------------------------


def test_inputs_single_input_value_directly_and_named(server: str, reference: Any) -> None:
    x = reference.mlp_rows(3, seed=33)
    direct = ok(predict(server, "mlp", {"inputs": x.tolist()}))
    named = ok(predict(server, "mlp", {"inputs": {"input": x.tolist()}}))
    assert set(direct) == {"outputs"}
    assert set(direct["outputs"]) == {"logits", "probabilities"}  # several outputs: an object of named tensors
    expected = reference.run("mlp", 2, {"input": x})
    for body in (direct, named):
        for name in ("logits", "probabilities"):
            reference.assert_same(body["outputs"][name], expected[name])


def test_inputs_multiple_named_inputs_ranker(server: str, reference: Any) -> None:
    feed = reference.ranker_feed(4, seed=34)
    body = ok(predict(server, "ranker", {"inputs": {k: v.tolist() for k, v in feed.items()}}))
    assert set(body) == {"outputs"}
    assert set(body["outputs"]) == {"score", "embedding"}
    expected = reference.run("ranker", 1, feed)
    reference.assert_same(body["outputs"]["score"], expected["score"])
    reference.assert_same(body["outputs"]["embedding"], expected["embedding"])


def test_signature_name_serving_default_is_accepted(server: str, reference: Any) -> None:
    x = reference.iris_rows(2, seed=35)
    body = ok(predict(server, "iris", {"signature_name": "serving_default", "inputs": x.tolist()}))
    expected = reference.run("iris", 1, {"float_input": x})
    assert body["outputs"]["label"] == expected["label"].tolist()
    reference.assert_same(body["outputs"]["probabilities"], expected["probabilities"])


# ---- versions and labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "version"),
    [("mlp", 2), ("mlp/versions/1", 1), ("mlp/versions/2", 2), ("mlp/labels/fp32", 1), ("mlp/labels/stable", 2)],
)
def test_version_and_label_routes(server: str, reference: Any, path: str, version: int) -> None:
    x = reference.mlp_rows(2, seed=36)
    body = ok(predict(server, path, {"inputs": x.tolist()}))
    expected = reference.run("mlp", version, {"input": x})
    reference.assert_same(body["outputs"]["logits"], expected["logits"])
    other = reference.run("mlp", 3 - version, {"input": x})
    # The two versions differ measurably, so the assertion above pins the version that answered.
    assert np.abs(np.asarray(body["outputs"]["logits"]) - other["logits"]).max() > 1e-3


# ---- status and metadata ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "version"),
    [("mlp", "2"), ("mlp/versions/2", "2"), ("mlp/versions/1", "1"), ("mlp/labels/fp32", "1"), ("iris", "1")],
)
def test_model_status(server: str, path: str, version: str) -> None:
    body = ok(httpx.get(f"{server}/v1/models/{path}"))
    assert body == {
        "model_version_status": [
            {"version": version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def _dims(info: dict[str, Any]) -> list[int]:
    shape = info["tensor_shape"]
    assert shape["unknown_rank"] is False
    return [int(d["size"]) for d in shape["dim"]]


@pytest.mark.parametrize(("path", "version"), [("mlp", "2"), ("mlp/versions/1", "1"), ("mlp/labels/fp32", "1")])
def test_metadata_mlp(server: str, path: str, version: str) -> None:
    body = ok(httpx.get(f"{server}/v1/models/{path}/metadata"))
    assert body["model_spec"] == {"name": "mlp", "signature_name": "", "version": version}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert set(sig["inputs"]) == {"input"}
    assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert _dims(sig["inputs"]["input"]) == [-1, 256]
    assert set(sig["outputs"]) == {"logits", "probabilities"}
    for out in sig["outputs"].values():
        assert out["dtype"] == "DT_FLOAT"
        assert _dims(out) == [-1, 10]


def test_metadata_int64_tensors(server: str) -> None:
    ranker = ok(httpx.get(f"{server}/v1/models/ranker/metadata"))
    inputs = ranker["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {n: (i["dtype"], _dims(i)) for n, i in inputs.items()} == {
        "dense": ("DT_FLOAT", [-1, 4]),
        "item_ids": ("DT_INT64", [-1, 3]),
    }
    iris = ok(httpx.get(f"{server}/v1/models/iris/versions/1/metadata"))
    outputs = iris["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert {n: (o["dtype"], _dims(o)) for n, o in outputs.items()} == {
        "label": ("DT_INT64", [-1]),
        "probabilities": ("DT_FLOAT", [-1, 3]),
    }


# ---- errors ------------------------------------------------------------------------------------------------------


def test_both_or_neither_of_instances_and_inputs_is_400(server: str) -> None:
    row = [5.1, 3.5, 1.4, 0.2]
    message = error(predict(server, "iris", {"instances": [row], "inputs": [row]}), 400)
    assert "instances" in message
    assert "inputs" in message
    error(predict(server, "iris", {"features": [row]}), 400)


def test_unknown_label_version_and_model_are_404(server: str) -> None:
    row = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    assert "nope" in error(predict(server, "iris/labels/nope", row), 404)
    assert "9" in error(predict(server, "iris/versions/9", row), 404)
    assert "no-such-model" in error(predict(server, "no-such-model", row), 404)
    error(httpx.get(f"{server}/v1/models/mlp/versions/9"), 404)
    error(httpx.get(f"{server}/v1/models/mlp/labels/nope"), 404)
    error(httpx.get(f"{server}/v1/models/mlp/labels/nope/metadata"), 404)
    error(httpx.get(f"{server}/v1/models/no-such-model"), 404)


def test_non_integer_version_is_400(server: str) -> None:
    assert "abc" in error(predict(server, "iris/versions/abc", {"instances": [[5.1, 3.5, 1.4, 0.2]]}), 400)


def test_mismatched_instance_keys_are_400(server: str) -> None:
    good = {"dense": [0.1, 0.2, 0.3, 0.4], "item_ids": [1, 2, 3]}
    missing = error(predict(server, "ranker", {"instances": [good, {"dense": [0.1, 0.2, 0.3, 0.4]}]}), 400)
    assert "instances[1]" in missing
    assert "item_ids" in missing
    extra = error(predict(server, "ranker", {"instances": [{**good, "other": [1]}]}), 400)
    assert "other" in extra
    unnamed = error(predict(server, "ranker", {"instances": [[0.1, 0.2, 0.3, 0.4]]}), 400)
    assert "dense" in unnamed


def test_bad_tensors_are_400(server: str) -> None:
    assert "[-1, 4]" in error(predict(server, "iris", {"instances": [[1.0, 2.0, 3.0]]}), 400)
    error(predict(server, "iris", {"instances": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]}), 400)  # ragged
    assert "INT64" in error(
        predict(server, "ranker", {"inputs": {"dense": [[0.1, 0.2, 0.3, 0.4]], "item_ids": [[1.5, 2, 3]]}}), 400
    )
    assert "unknown" in error(predict(server, "ranker", {"inputs": {"dense": [[0, 0, 0, 0]], "ids": [[1, 2, 3]]}}), 400)
    assert "signature_name" in error(
        predict(server, "iris", {"signature_name": "other", "inputs": [[1, 2, 3, 4]]}), 400
    )
    error(predict(server, "iris", {"instances": []}), 400)
    bad_json = httpx.post(f"{server}/v1/models/iris:predict", content=b'{"instances": [', headers=JSON_HEADERS)
    assert "JSON" in error(bad_json, 400)


# ---- models with a single output: predictions and outputs are the plain values ------------------------------------


def _single_output_models(path: Path) -> dict[str, Path]:
    """`double`: y = 2x, FP32 [-1, 3] -> [-1, 3]; `total`: ReduceSum over axis 1, FP32 [-1, 3] -> [-1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(name: str, node: Any, out_shape: list[Any], inits: list[Any]) -> Path:
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        file = path / f"{name}.onnx"
        file.write_bytes(model.SerializeToString())
        return file

    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    return {
        "double": save("double", helper.make_node("Mul", ["x", "two"], ["y"]), ["N", 3], [two]),
        "total": save("total", helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0), ["N"], [axes]),
    }


@pytest.fixture
def single_output_app(fresh_bucket: str, tmp_path: Path) -> Iterator[TestClient]:
    from modelfn_tools.publish import publish

    for name, file in _single_output_models(tmp_path).items():
        publish(file, fresh_bucket, name, progress=False)
    registry = ModelRegistry.from_uri(fresh_bucket, Settings(cache_dir=tmp_path / "cache"))
    with TestClient(create_app(registry)) as client:
        yield client


def test_single_output_answers_are_the_plain_values(single_output_app: TestClient) -> None:
    x = [[1.0, 2.0, 3.0], [-1.5, 0.5, 4.0]]
    c = single_output_app

    def post(model: str, body: dict[str, Any]) -> Any:
        r = c.post(f"/v1/models/{model}:predict", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    # One output of shape [N, 3]: each prediction is that row's list; `outputs` is the tensor itself.
    assert post("double", {"instances": x}) == {"predictions": [[2.0, 4.0, 6.0], [-3.0, 1.0, 8.0]]}
    assert post("double", {"instances": [{"x": row} for row in x]}) == {
        "predictions": [[2.0, 4.0, 6.0], [-3.0, 1.0, 8.0]]
    }
    assert post("double", {"inputs": x}) == {"outputs": [[2.0, 4.0, 6.0], [-3.0, 1.0, 8.0]]}
    assert post("double", {"inputs": {"x": x}}) == {"outputs": [[2.0, 4.0, 6.0], [-3.0, 1.0, 8.0]]}
    # One output of shape [N]: each prediction is a scalar.
    assert post("total", {"instances": x}) == {"predictions": [6.0, 3.0]}
    assert post("total", {"inputs": x}) == {"outputs": [6.0, 3.0]}
    assert post("total/versions/1", {"instances": x[:1]}) == {"predictions": [6.0]}

    meta = c.get("/v1/models/total/metadata").json()
    outputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs == {
        "y": {
            "dtype": "DT_FLOAT",
            "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
            "name": "y",
        }
    }
