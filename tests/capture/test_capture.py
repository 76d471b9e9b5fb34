"""Every captured request appears exactly once after a graceful stop, whatever the sink (a folder, S3, Firehose,
each on a real server: moto's over HTTP), and as a JSON line exactly as the contract says; sampling follows the
percentage (and the sticky header); a failing sink or a full buffer never changes a response."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import httpx
from modelfn_tools.localserver import free_port, serve_process, wait_http

from modelfn.capture import Capture
from modelfn.capture.observer import sampled
from modelfn.capture.sinks import open_sink
from modelfn.http import create_app
from modelfn.http.app import ServerApp
from modelfn.service.dispatch import Service
from modelfn.service.request import Request
from modelfn.store import open_store
from modelfn.store.traffic import dump_traffic, make_traffic, traffic_key

from .conftest import ROW, read_folder, read_s3, records, registry, v2

KEY = re.compile(r"^iris/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[\w.-]+\.jsonl\.gz$")


async def _send(app: ServerApp, ids: list[str], rows: int = 1) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return [await client.post("/v2/models/iris/infer", json=v2(rows), headers={"x-request-id": i}) for i in ids]


def _served(store: str, tmp_path: Path, capture: str, n: int = 300, **settings: Any) -> list[str]:
    """n inferences through `modelfn serve`'s app while the flusher runs (small buffer: several flushes), then a
    graceful stop; the request ids sent."""
    settings.setdefault("capture_buffer_mb", 0.006)  # flushed by size several times, with room for a slow sink
    app = create_app(registry(store, tmp_path, capture=capture, **settings))
    assert isinstance(app, ServerApp) and app.capture is not None
    ids = [uuid.uuid4().hex for _ in range(n)]
    answers = asyncio.run(_send(app, ids))
    assert all(a.status_code == 200 for a in answers)
    app.close()
    assert app.capture.dropped == {"overflow": 0, "sink": 0}
    return ids


def _exactly_once(found: list[dict[str, Any]], ids: list[str]) -> None:
    assert sorted(r["id"] for r in found) == sorted(ids)
    first = found[0]
    assert set(first) == {"id", "time", "model", "version", "route", "latency_ms", "inputs", "outputs"}
    assert first["model"] == "iris" and first["version"] == 1 and first["route"] == "/v2/models/{name}/infer"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"]) and first["latency_ms"] > 0
    assert first["inputs"] == {"float_input": [ROW]}
    assert first["outputs"]["label"] == [0] and len(first["outputs"]["probabilities"][0]) == 3


def test_folder_every_request_once(store: str, tmp_path: Path) -> None:
    ids = _served(store, tmp_path, str(tmp_path / "capture"))
    objects = read_folder(tmp_path / "capture")
    assert len(objects) > 1 and all(KEY.match(k) for k in objects)  # flushed by size while serving, then at stop
    _exactly_once(records(objects), ids)


def test_s3_every_request_once(store: str, tmp_path: Path, fresh_bucket: str) -> None:
    capture = fresh_bucket.replace("/models", "/capture")
    ids = _served(store, tmp_path, capture)
    objects = read_s3(capture)
    assert objects and all(KEY.match(k.removeprefix("capture/")) for k in objects)
    _exactly_once(records(objects), ids)


def test_firehose_every_request_once(store: str, tmp_path: Path, fresh_bucket: str) -> None:
    """moto's Firehose delivers each PutRecordBatch to its S3 destination at once: read the objects back."""
    bucket = fresh_bucket.removeprefix("s3://").split("/")[0]
    stream = f"capture-{uuid.uuid4().hex[:8]}"
    boto3.client("firehose").create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "firehose/",
        },
    )
    # past one PutRecordBatch's 500 records; a buffer that holds them all, so a slow moto (CI) cannot make the
    # flusher fall behind into drops: the batches of 500 still make several objects
    ids = _served(store, tmp_path, f"firehose://{stream}", n=1200, capture_buffer_mb=1)
    objects = read_s3(f"s3://{bucket}/firehose/")
    assert len(objects) >= 3
    _exactly_once(records(objects), ids)


def test_modelfn_serve_flushes_on_sigterm(store: str, tmp_path: Path) -> None:
    """A real `modelfn serve` process, capture flushed only at its stop (the interval is an hour): SIGTERM writes
    every record."""
    capture = tmp_path / "capture"
    env = {"MODELFN_CAPTURE": str(capture), "MODELFN_CAPTURE_FLUSH_SECONDS": "3600"}
    ids = [uuid.uuid4().hex for _ in range(60)]
    with serve_process(["--store", store], tmp_path, env=env) as base:  # stopped with SIGTERM (Popen.terminate)
        for i in ids:
            r = httpx.post(f"{base}/v2/models/iris/infer", json=v2(), headers={"x-request-id": i}, timeout=30)
            assert r.status_code == 200
        assert not any(p.is_file() for p in capture.rglob("*"))  # nothing written yet: all of it at the stop
    _exactly_once(records(read_folder(capture)), ids)


def test_ten_percent_sampling_within_binomial_bounds(store: str, tmp_path: Path) -> None:
    """2,000 requests at 10 %: the count is within 5 standard deviations (about 1 in 3.5 million to fail)."""
    service = Service(registry(store, tmp_path))
    capture = Capture(open_sink(str(tmp_path / "capture")), percent=10, flush_seconds=3600, buffer_mb=64)
    service.observers.append(capture)
    n, body = 2000, httpx.Request("POST", "http://t", json=v2()).read()
    for _ in range(n):
        assert service.handle(Request("POST", "/v2/models/iris/infer", body=body)).status == 200
    assert capture.flush() == len(records(read_folder(tmp_path / "capture")))
    captured = capture.written["iris"]
    mean, sd = n * 0.1, (n * 0.1 * 0.9) ** 0.5
    assert mean - 5 * sd <= captured <= mean + 5 * sd, captured


def test_sticky_key_samples_deterministically() -> None:
    keys = [f"client-{i}" for i in range(5000)]
    first = [sampled(10, k) for k in keys]
    assert first == [sampled(10, k) for k in keys]  # the same client is always in, or always out
    assert 5000 * 0.1 - 5 * 21.3 <= sum(first) <= 5000 * 0.1 + 5 * 21.3


def test_a_failing_sink_never_changes_a_response(store: str, tmp_path: Path, aws: Any) -> None:
    """A sink that refuses every write (a bucket that does not exist, on a real S3 server): every answer is the one
    served without capture, and every record is counted as dropped."""
    plain = create_app(registry(store, tmp_path))
    captured = create_app(registry(store, tmp_path, capture=f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/capture"))
    assert isinstance(captured, ServerApp) and captured.capture is not None
    ids = [str(i) for i in range(40)]
    want = asyncio.run(_send(plain, ids, rows=3))
    got = asyncio.run(_send(captured, ids, rows=3))
    captured.close()
    assert [(a.status_code, a.content) for a in got] == [(a.status_code, a.content) for a in want]
    assert all(a.status_code == 200 for a in got)
    assert captured.capture.dropped == {"overflow": 0, "sink": 40} and captured.capture.written["iris"] == 0


def test_a_full_buffer_drops_and_counts(store: str, tmp_path: Path) -> None:
    """Past twice the flush size (here: anything past the first record, no flush in between) a record is dropped
    and counted; the answers are those served without capture."""
    plain = Service(registry(store, tmp_path))
    service = Service(registry(store, tmp_path, capture=str(tmp_path / "capture"), capture_buffer_mb=1e-5))
    capture = Capture.install(service)
    assert capture is not None
    body = httpx.Request("POST", "http://t", json=v2(3)).read()
    for _ in range(20):
        request = Request("POST", "/v2/models/iris/infer", body=body)
        want, got = plain.handle(request), service.handle(request)
        assert (got.status, got.body) == (want.status, want.body) == (200, want.body)
    assert capture.dropped == {"overflow": 19, "sink": 0}
    assert capture.flush() == 1 and len(records(read_folder(tmp_path / "capture"))) == 1


def test_container_flushes_on_sigterm(store: str, tmp_path: Path) -> None:
    """The container's entrypoint (uvicorn, SageMaker's contract): SIGTERM writes every record, /invocations'
    explicit route included once (it reports one response twice to the observers)."""
    capture, port = tmp_path / "capture", free_port()
    env = {
        **os.environ,
        "MODELFN_STORE": store,
        "MODELFN_CACHE_DIR": str(tmp_path / "cache"),
        "MODELFN_HOST": "127.0.0.1",
        "MODELFN_PORT": str(port),
        "MODELFN_CAPTURE": str(capture),
        "MODELFN_CAPTURE_FLUSH_SECONDS": "3600",
    }
    ids = [uuid.uuid4().hex for _ in range(30)]
    with (tmp_path / "container.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelfn.container"], env=env, stdout=out, stderr=out)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/ping", proc=proc)
        for i in ids:
            headers = {"x-request-id": i, "x-modelfn-path": "POST /v2/models/iris/infer"}
            assert httpx.post(f"{base}/invocations", json=v2(), headers=headers, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    _exactly_once(records(read_folder(capture)), ids)


def test_sampling_follows_the_sticky_header_of_traffic_json(store: str, tmp_path: Path) -> None:
    """With traffic.json naming a sticky header, a client (its header's value) is always captured or never."""
    traffic = dump_traffic(make_traffic({"split": {"1": 100}, "sticky": "X-User"}))
    open_store(store).write_bytes(traffic_key("iris"), traffic)
    service = Service(registry(store, tmp_path, capture=str(tmp_path / "capture"), capture_percent=50))
    capture = Capture.install(service)
    assert capture is not None
    body = httpx.Request("POST", "http://t", json=v2()).read()
    for user in range(20):
        for i in range(5):
            headers = {"x-user": f"user-{user}", "x-request-id": f"{user}-{i}"}
            assert service.handle(Request("POST", "/v2/models/iris/infer", headers=headers, body=body)).status == 200
    capture.flush()
    per_user = Counter(r["id"].split("-")[0] for r in records(read_folder(tmp_path / "capture")))
    assert set(per_user.values()) == {5}  # all of a user's requests, or none
    assert 0 < len(per_user) < 20  # about half the users (all or none: 2 in a million)
