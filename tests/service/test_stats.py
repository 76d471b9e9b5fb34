"""The statistics observer: every inference route's answers are counted on the model and version that served them
(successes with their rows and times, failures on the version they would have run), requests refused before they
ran and unknown models are not, a response-cache hit runs no model, and the service answers the counts in Triton's
statistics shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import Service
from modelfn.service.request import Request, Response
from modelfn.service.stats import MAX_BATCH_SIZES, InferenceStatistics, VersionStats, rows_of
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"content-type": "application/json"}


def _service(store: str, tmp_path: Path, **settings: Any) -> Service:
    config = Settings(store=store, cache_dir=tmp_path / "cache", **settings)
    return Service(ModelRegistry.from_uri(store, config), default_model="iris")


def _post(service: Service, path: str, body: Any, headers: dict[str, str] | None = None) -> Response:
    return service.handle(Request("POST", path, "", {**JSON, **(headers or {})}, json.dumps(body).encode()))


def _stats(service: Service, path: str) -> dict[str, Any]:
    answer = service.handle(Request("GET", path))
    assert answer.status == 200, answer.body
    return dict(json.loads(answer.body))


def _v2(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [rows, 4], "data": [ROW] * rows}]}


def test_every_inference_route_is_counted_on_the_version_that_served_it(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path)
    sent = [
        ("/v2/models/iris/infer", _v2(3)),
        ("/v2/models/iris/versions/1/infer", _v2(1)),
        ("/v1/models/iris:predict", {"instances": [ROW, ROW]}),
        ("/predict", {"features": [ROW]}),
        ("/predictions/iris", {"features": [ROW, ROW, ROW]}),
        ("/predictions/iris/1", {"features": ROW}),
    ]
    for path, body in sent:
        assert _post(service, path, body).status == 200, path
    (stats,) = _stats(service, "/v2/models/iris/versions/1/stats")["model_stats"]
    assert (stats["name"], stats["version"]) == ("iris", "1")
    assert stats["inference_count"] == 3 + 1 + 2 + 1 + 3 + 1
    assert stats["execution_count"] == len(sent)
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == len(sent) and inference["fail"]["count"] == 0
    for step in ("compute_input", "compute_infer", "compute_output", "queue"):
        assert inference[step]["count"] == len(sent), step
    assert 0 < inference["compute_infer"]["ns"] < inference["success"]["ns"]
    assert inference["compute_input"]["ns"] + inference["compute_infer"]["ns"] <= inference["success"]["ns"]
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == {1: 3, 2: 1, 3: 2}
    assert stats["last_inference"] > 1_700_000_000_000  # milliseconds since the epoch


def test_failures_count_on_the_version_they_would_have_run(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path)
    assert _post(service, "/v2/models/mlp/versions/1/ready", {}).status == 405  # no inference route
    assert _post(service, "/v2/models/mlp/versions/1/infer", {"inputs": []}).status == 400
    assert _post(service, "/v1/models/mlp/versions/1:predict", {"instances": [[1.0]]}).status == 400
    assert _post(service, "/predictions/mlp/1", {"features": "nope"}).status == 400
    assert _post(service, "/predictions/nope", {"features": [1.0]}).status == 404
    assert _post(service, "/predictions/mlp/9", {"features": [1.0]}).status == 404
    by_version = {s["version"]: s for s in _stats(service, "/v2/models/mlp/stats")["model_stats"]}
    assert sorted(by_version) == ["1", "2"]
    v1 = by_version["1"]
    assert v1["inference_stats"]["fail"]["count"] == 3
    assert v1["inference_stats"]["fail"]["ns"] > 0
    assert v1["inference_stats"]["success"]["count"] == 0 and v1["execution_count"] == 0
    assert by_version["2"]["inference_stats"]["fail"]["count"] == 0


def test_requests_refused_before_they_ran_are_not_failures(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path, api_keys="k1")
    key = {"authorization": "Bearer k1"}
    assert _post(service, "/v2/models/iris/versions/1/infer", _v2(1), key).status == 200
    assert _post(service, "/v2/models/iris/versions/1/infer", _v2(1)).status == 401
    assert _post(service, "/v2/models/iris/versions/1/infer", _v2(1), {"authorization": "Bearer no"}).status == 401
    answer = service.handle(Request("GET", "/v2/models/iris/versions/1/stats", headers=key))
    (stats,) = json.loads(answer.body)["model_stats"]
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 0


def test_a_response_cache_hit_runs_no_model(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path, response_cache_mb=1)
    for _ in range(3):
        assert _post(service, "/predictions/iris/1", {"features": [ROW, ROW]}).status == 200
    (stats,) = _stats(service, "/v2/models/iris/versions/1/stats")["model_stats"]
    inference = stats["inference_stats"]
    assert (inference["cache_miss"]["count"], inference["cache_hit"]["count"]) == (1, 2)
    assert inference["success"]["count"] == 3 and stats["inference_count"] == 6
    assert stats["execution_count"] == 1 and inference["compute_infer"]["count"] == 1


def test_every_model_and_version_is_listed_with_zeros_until_asked(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path)
    listed = _stats(service, "/v2/models/stats")["model_stats"]
    assert [(s["name"], s["version"]) for s in listed] == [("iris", "1"), ("mlp", "1"), ("mlp", "2"), ("ranker", "1")]
    assert all(s["inference_count"] == 0 and s["last_inference"] == 0 and not s["batch_stats"] for s in listed)
    (stable,) = _stats(service, "/v2/models/mlp/versions/stable/stats")["model_stats"]
    assert stable["version"] == "2"  # a label names its version
    for path in ("/v2/models/nope/stats", "/v2/models/mlp/versions/7/stats", "/v2/models/mlp/versions/nolabel/stats"):
        answer = service.handle(Request("GET", path))
        assert answer.status == 404, (path, answer.body)
        assert "error" in json.loads(answer.body)


def test_batch_sizes_broken_out_are_bounded() -> None:
    stats = VersionStats()
    for rows in range(1, MAX_BATCH_SIZES + 50):
        stats.succeeded(rows, 1000, 400, None)
    assert len(stats.batches) == MAX_BATCH_SIZES
    assert stats.compute.count == MAX_BATCH_SIZES + 49
    assert stats.compute.input_ns == 600 * (MAX_BATCH_SIZES + 49)
    assert sum(b.count for b in stats.batches.values()) == MAX_BATCH_SIZES


@pytest.mark.parametrize(
    ("inputs", "rows"),
    [({"x": np.zeros((5, 4))}, 5), ({"x": np.float32(1.0)}, 1), ({}, 1), ({"a": np.zeros((2,)), "b": np.zeros(7)}, 2)],
)
def test_rows_are_the_first_inputs_leading_dimension(inputs: dict[str, Any], rows: int) -> None:
    assert rows_of(inputs) == rows


def test_the_service_counts_with_one_statistics_observer(s3_store: str, tmp_path: Path) -> None:
    service = _service(s3_store, tmp_path)
    assert sum(isinstance(o, InferenceStatistics) for o in service.observers) == 1
    with pytest.raises(LookupError):
        InferenceStatistics.of([])
