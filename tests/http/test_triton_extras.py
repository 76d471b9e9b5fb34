"""Triton's HTTP extensions as `tritonclient.http` calls them against `modelfn serve` as a real process: the model
configuration (`get_model_config`), the repository index (`get_model_repository_index`) and inference statistics
(`get_inference_statistics`), whose counts match the requests sent; and TorchServe's inference API
(`POST /predictions/{model}[/{version}]`), whose answers equal onnxruntime's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.http.conftest import Reference


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=server.removeprefix("http://"))
    yield c
    c.close()


def _infer(client: httpclient.InferenceServerClient, model: str, version: str, x: np.ndarray) -> Any:
    inp = httpclient.InferInput("input" if model == "mlp" else "float_input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], model_version=version)


# ---- configuration -----------------------------------------------------------------------------------------------
def test_model_config_describes_the_model_as_triton_would(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("mlp", "1")
    assert (config["name"], config["platform"], config["backend"]) == ("mlp", "onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] > 0  # every input and output has a variable first dimension
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("input", "TYPE_FP32", [256])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("logits", "TYPE_FP32", [10]),
        ("probabilities", "TYPE_FP32", [10]),
    ]
    ranker = client.get_model_config("ranker")
    types = {i["name"]: (i["data_type"], i["dims"]) for i in ranker["input"]}
    assert types == {"dense": ("TYPE_FP32", [4]), "item_ids": ("TYPE_INT64", [3])}


def test_model_config_of_a_batched_vector_is_reshaped(client: httpclient.InferenceServerClient) -> None:
    """iris's `label` is [N]: Triton configures it as dims [1] reshaped to []."""
    label = next(o for o in client.get_model_config("iris")["output"] if o["name"] == "label")
    assert (label["data_type"], label["dims"], label["reshape"]) == ("TYPE_INT64", [1], {"shape": []})


def test_model_config_of_an_unknown_model_is_a_404(client: httpclient.InferenceServerClient, server: str) -> None:
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_model_config("nope")
    assert httpx.get(f"{server}/v2/models/mlp/versions/9/config").status_code == 404


# ---- repository index --------------------------------------------------------------------------------------------
def test_repository_index_lists_every_version(client: httpclient.InferenceServerClient, server: str) -> None:
    _infer(client, "mlp", "1", np.zeros((1, 256), np.float32))  # loaded, so READY
    index = client.get_model_repository_index()
    listed = {(e["name"], e["version"]): e for e in index}
    assert {("iris", "1"), ("mlp", "1"), ("mlp", "2"), ("ranker", "1")} <= set(listed)
    assert (listed[("mlp", "1")]["state"], listed[("mlp", "1")]["reason"]) == ("READY", "")
    for entry in index:
        assert entry["state"] in ("READY", "UNAVAILABLE") and (entry["state"] == "READY") == (not entry["reason"])
    ready = httpx.post(f"{server}/v2/repository/index", json={"ready": True}).json()
    assert ready == [e for e in index if e["state"] == "READY"]
    bad = httpx.post(f"{server}/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400 and "ready" in bad.json()["error"]


# ---- statistics --------------------------------------------------------------------------------------------------
def _counts(stats: dict[str, Any]) -> tuple[int, ...]:
    s = stats["inference_stats"]
    return (
        stats["inference_count"],
        stats["execution_count"],
        s["success"]["count"],
        s["fail"]["count"],
        s["compute_infer"]["count"],
    )


def test_statistics_count_the_requests_sent(client: httpclient.InferenceServerClient, server: str) -> None:
    (before,) = client.get_inference_statistics("mlp", "1")["model_stats"]
    rows = [1, 4, 2, 4, 1]
    for n in rows:
        _infer(client, "mlp", "1", np.random.default_rng(n).standard_normal((n, 256)).astype(np.float32))
    for _ in range(2):  # failures: a wrong shape
        with pytest.raises(InferenceServerException):
            _infer(client, "mlp", "1", np.zeros((1, 255), np.float32))
    (after,) = client.get_inference_statistics("mlp", "1")["model_stats"]
    delta = tuple(a - b for a, b in zip(_counts(after), _counts(before), strict=True))
    assert delta == (sum(rows), len(rows), len(rows), 2, len(rows))
    grew = after["inference_stats"]["compute_infer"]["ns"] - before["inference_stats"]["compute_infer"]["ns"]
    assert grew > 0
    assert after["last_inference"] >= before["last_inference"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sizes[4] >= 2 and sizes[1] >= 2 and sizes[2] >= 1


def test_statistics_of_a_model_and_of_every_model(client: httpclient.InferenceServerClient) -> None:
    versions = [(s["name"], s["version"]) for s in client.get_inference_statistics("mlp")["model_stats"]]
    assert versions == [("mlp", "1"), ("mlp", "2")]
    every = {(s["name"], s["version"]) for s in client.get_inference_statistics()["model_stats"]}
    assert {("iris", "1"), ("mlp", "1"), ("mlp", "2"), ("ranker", "1")} <= every
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_inference_statistics("nope")


# ---- TorchServe --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "model", "version"), [("iris", "iris", 1), ("mlp/1", "mlp", 1), ("mlp/2", "mlp", 2)])
def test_torchserve_predictions_answer_as_onnxruntime(
    server: str, reference: Reference, path: str, model: str, version: int
) -> None:
    x = reference.iris_rows(3, seed=60) if model == "iris" else reference.mlp_rows(3, seed=61)
    r = httpx.post(f"{server}/predictions/{path}", json={"features": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["modelfn-version"] == str(version)
    expected = reference.run(model, version, {"float_input" if model == "iris" else "input": x})
    for name, values in expected.items():
        reference.assert_same([row[name] for row in r.json()["predictions"]], values)
    same = httpx.post(f"{server}/predict", params={"model": model}, json={"features": x.tolist()}, timeout=30)
    if version == 2 or model == "iris":  # /predict runs the default version (mlp's stable is 2)
        assert same.json() == r.json()


def test_torchserve_errors_name_the_problem(server: str) -> None:
    unknown = httpx.post(f"{server}/predictions/nope", json={"features": [1.0]}, timeout=30)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    bad = httpx.post(f"{server}/predictions/iris/1", json={"features": [1.0, 2.0]}, timeout=30)
    assert bad.status_code == 400 and "float_input" in bad.json()["error"]
    label = httpx.post(f"{server}/predictions/mlp/stable", json={"features": [0.0] * 256}, timeout=30)
    assert label.status_code == 200 and label.headers["modelfn-version"] == "2"
