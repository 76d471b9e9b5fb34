"""Capture on Lambda: no thread runs in a frozen environment, so records are written at the end of the invoke that
finds the buffer old (MODELFN_CAPTURE_FLUSH_SECONDS) or full; SQS messages are captured as HTTP requests are."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelfn.function import ModelFunction
from modelfn.settings import Settings

from .conftest import read_folder, records, v2
from .test_capture import _exactly_once


class Context:
    function_name = "modelfn-iris"
    memory_limit_in_mb = 1024
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-iris"
    aws_request_id = "req"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_event(rid: str) -> dict[str, Any]:
    """An HTTP API (payload 2.0) request for iris."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v2/models/iris/infer",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-request-id": rid},
        "requestContext": {"http": {"method": "POST", "path": "/v2/models/iris/infer", "sourceIp": "10.0.0.1"}},
        "body": json.dumps(v2()),
        "isBase64Encoded": False,
    }


def sqs_event(ids: list[str]) -> dict[str, Any]:
    body = json.dumps(v2())
    return {"Records": [{"messageId": i, "body": body, "eventSource": "aws:sqs", "attributes": {}} for i in ids]}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


def test_lambda_flushes_at_the_end_of_an_invoke_that_finds_the_buffer_old(store: str, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    settings = Settings(
        store=store,
        model="iris",
        cache_dir=tmp_path / "cache",
        results=str(tmp_path / "results"),
        capture=str(capture),
        capture_flush_seconds=0.5,
    )
    fn = ModelFunction(settings)
    first = uuid.uuid4().hex
    assert fn.http_handler(http_event(first), Context())["statusCode"] == 200
    assert not read_folder(capture)  # younger than the interval: still buffered
    time.sleep(0.6)
    second = uuid.uuid4().hex
    assert fn.http_handler(http_event(second), Context())["statusCode"] == 200
    assert len(records(read_folder(capture))) == 2  # the invoke that found it old wrote both

    messages = [str(uuid.uuid4()) for _ in range(3)]
    assert fn.batch_handler(sqs_event(messages), Context())["batchItemFailures"] == []
    time.sleep(0.6)
    fn.http_handler(http_event(third := uuid.uuid4().hex), Context())
    found = records(read_folder(capture))
    _exactly_once([r for r in found if r["route"] != "sqs"], [first, second, third])
    sqs = [r for r in found if r["route"] == "sqs"]
    assert sorted(r["id"] for r in sqs) == sorted(messages) and sqs[0]["inputs"] == found[0]["inputs"]


def test_lambda_reports_written_and_dropped_as_emf(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalogue's CaptureWritten and CaptureDropped in the invoke's EMF: an SQS batch of two messages into a
    buffer that holds one (the first is written at the end of the invoke, the second dropped)."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    settings = Settings(
        store=store,
        model="iris",
        cache_dir=tmp_path / "cache",
        results=str(tmp_path / "results"),
        capture=str(tmp_path / "capture"),
        capture_buffer_mb=1e-5,
    )
    fn = ModelFunction(settings)
    capsys.readouterr()
    assert fn.batch_handler(sqs_event(["m1", "m2"]), Context())["batchItemFailures"] == []
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    values = {k: v for doc in emf for k, v in doc.items() if k in ("CaptureWritten", "CaptureDropped")}
    assert {k: v if isinstance(v, float) else v[0] for k, v in values.items()} == {
        "CaptureWritten": 1.0,
        "CaptureDropped": 1.0,
    }
    assert [r["id"] for r in records(read_folder(tmp_path / "capture"))] == ["m1"]
