"""One structured line per failed request, on every transport, naming the model and version it ran or would have
run, and the reason the client was told; refusals are not logged; a SageMaker /invocations failure is one line."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from modelfn_tools.publish import publish

from modelfn.adapters.s3 import S3Handler
from modelfn.adapters.sagemaker import create_container_app
from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import Service
from modelfn.service.request import Request
from modelfn.settings import Settings
from modelfn.store import open_store

BAD = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]}


@pytest.fixture
def registry(example_dir: Path, tmp_path: Path) -> ModelRegistry:
    store = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", store, "iris", progress=False)
    registry = ModelRegistry.from_uri(store, Settings(cache_dir=tmp_path / "cache", api_keys="k"), ["iris"])
    registry.preload()
    return registry


def failures(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelfn" and '"event"' in r.getMessage()]
    return [line for line in lines if line["event"] == "request_failed"]


def test_a_failed_request_is_one_line_with_model_version_and_reason(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modelfn")
    keyed = {"authorization": "Bearer k", "content-type": "application/json"}
    service = Service(registry)  # as Lambda runs it
    body = json.dumps(BAD).encode()
    assert service.handle(Request("POST", "/v2/models/iris/infer", headers=keyed, body=body)).status == 400
    assert service.handle(Request("POST", "/v2/models/nope/infer", headers=keyed, body=body)).status == 404
    assert service.handle(Request("POST", "/v2/models/iris/infer", body=body)).status == 401  # refused: no line
    bad, unknown = failures(caplog)
    assert bad["model"] == "iris" and bad["version"] == 1 and bad["status"] == 400
    assert bad["route"] == "/v2/models/{name}/infer" and "needs 4 elements" in bad["reason"]
    assert "model" not in unknown and unknown["status"] == 404 and "nope" in unknown["reason"]
    record = next(r for r in caplog.records if '"request_failed"' in r.getMessage())
    assert record.levelno == logging.WARNING and vars(record)["model"] == "iris"  # the fields as `extra` too

    caplog.clear()
    with TestClient(create_app(registry)) as client:  # modelfn serve
        assert client.post("/v2/models/iris/infer", json=BAD, headers={"authorization": "Bearer k"}).status_code == 400
    assert [(f["model"], f["version"], f["status"]) for f in failures(caplog)] == [("iris", 1, 400)]


def test_an_invocations_failure_is_logged_once(registry: ModelRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="modelfn")
    headers = {"authorization": "Bearer k", "x-modelfn-path": "POST /v2/models/iris/infer"}
    with TestClient(create_container_app(registry, models=["iris"])) as client:
        assert client.post("/invocations", json=BAD, headers=headers).status_code == 400
    assert len(failures(caplog)) == 1


def test_a_file_that_cannot_be_scored_is_one_line(
    registry: ModelRegistry, aws: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"failures-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").put_object(Bucket=bucket, Key="incoming/broken.csv", Body=b"5.1,3.5,1.4,0.2\n")
    results = open_store(str(tmp_path / "results"))
    handler = S3Handler(lambda: registry.get("iris"), lambda: results, "iris", "incoming/")
    event = {"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": "incoming/broken.csv"}}}]}
    caplog.set_level(logging.WARNING, logger="modelfn")
    (done,) = handler(event, None)["results"]
    (record,) = [r for r in caplog.records if '"file_not_scored"' in r.getMessage()]
    line = json.loads(record.getMessage())
    assert record.levelno == logging.ERROR and line["reason"] == done["error"] and "needs a header" in line["reason"]
    assert (line["model"], line["version"], line["input"]) == ("iris", 1, f"s3://{bucket}/incoming/broken.csv")
