"""MODELFN_RATE_LIMIT, MODELFN_MAX_CONCURRENCY and MODELFN_BODY_TIMEOUT: a token bucket per key (per client address
without keys, bounded in memory), 429 with Retry-After beyond it; 503 at once beyond the requests in flight; 408
and a closed connection for a body that does not arrive in time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from modelfn_tools.localserver import serve_process

from modelfn.adapters.asgi import AsgiApp
from modelfn.adapters.lambda_http import LambdaHttp, source_ip
from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.service.dispatch import Service
from modelfn.service.limits import BodyDeadline, BodyTimeout, RateLimiter, TooManyRequests
from modelfn.service.request import Response
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"instances": [ROW]}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refused(limiter: RateLimiter, who: str) -> str:
    """The Retry-After of a refused request."""
    with pytest.raises(TooManyRequests) as e:
        limiter.take(who)
    assert e.value.status == 429 and "MODELFN_RATE_LIMIT" in e.value.message
    return e.value.headers["retry-after"]


# ---- the bucket, on a fake clock ----------------------------------------------------------------------------
def test_a_burst_of_twice_the_rate_then_429_until_a_token_comes_back() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock)
    for _ in range(4):
        limiter.take("a")
    assert _refused(limiter, "a") == "1"
    clock.now += 0.5  # one token at 2/s
    limiter.take("a")
    assert _refused(limiter, "a") == "1"
    clock.now += 60  # refilled to the burst, never beyond
    for _ in range(4):
        limiter.take("a")
    assert _refused(limiter, "a") == "1"


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(0.25, clock)  # burst 0.5 rounds up to one request
    limiter.take("a")
    assert _refused(limiter, "a") == "4"
    clock.now += 1.5
    assert _refused(limiter, "a") == "3"  # 2.5 s left, rounded up
    clock.now += 2.5
    limiter.take("a")


def test_each_key_has_its_own_bucket() -> None:
    limiter = RateLimiter(1, Clock())
    limiter.take("a")
    limiter.take("a")
    _refused(limiter, "a")
    limiter.take("b")
    limiter.take("b")


def test_memory_is_bounded_and_the_least_recently_seen_is_forgotten() -> None:
    limiter = RateLimiter(1, Clock(), capacity=3)
    limiter.take("a")
    limiter.take("a")
    limiter.take("b")
    limiter.take("c")
    _refused(limiter, "a")  # seen again: now the most recent
    limiter.take("d")  # forgets b
    assert len(limiter) == 3
    _refused(limiter, "a")  # remembered, still empty
    limiter.take("b")  # forgotten: a full burst again
    limiter.take("b")
    for i in range(1000):
        limiter.take(f"addr:{i}")
    assert len(limiter) == 3


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


# ---- through the service -------------------------------------------------------------------------------------
def _registry(s3_store: str, tmp_path: Path, **settings: Any) -> ModelRegistry:
    return ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, **settings), ["iris"])


def test_per_key_over_asgi(s3_store: str, tmp_path: Path) -> None:
    client = TestClient(create_app(_registry(s3_store, tmp_path, api_keys="ka,kb", rate_limit=1)))
    a = [client.post("/v1/models/iris:predict", content=BODY, headers={"X-API-Key": "ka"}) for _ in range(3)]
    assert [r.status_code for r in a] == [200, 200, 429]
    assert a[2].headers["retry-after"] == "1" and "MODELFN_RATE_LIMIT" in a[2].json()["error"]
    assert client.post("/v1/models/iris:predict", content=BODY, headers={"X-API-Key": "kb"}).status_code == 200
    assert all(client.get("/health").status_code == 200 for _ in range(5))  # public routes are not limited


def test_per_client_address_without_keys_on_lambda(s3_store: str, tmp_path: Path) -> None:
    handler = LambdaHttp(Service(_registry(s3_store, tmp_path, rate_limit=1)))

    def event(ip: str) -> dict[str, Any]:
        return {
            "version": "2.0",
            "rawPath": "/v1/models/iris:predict",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/v1/models/iris:predict", "sourceIp": ip}},
            "body": BODY.decode(),
            "isBase64Encoded": False,
        }

    assert [handler(event("198.51.100.1"))["statusCode"] for _ in range(3)] == [200, 200, 429]
    assert handler(event("198.51.100.2"))["statusCode"] == 200


def test_rate_limit_end_to_end(s3_store: str, tmp_path: Path) -> None:
    env = {"MODELFN_API_KEYS": "e2e-key", "MODELFN_RATE_LIMIT": "1"}
    with serve_process(["--store", s3_store, "--models", "iris"], tmp_path, env=env) as base:
        url = f"{base}/v1/models/iris:predict"
        with httpx.Client(headers={"Authorization": "Bearer e2e-key"}, timeout=10) as http:
            answers = [http.post(url, content=BODY) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert int(answers[2].headers["retry-after"]) >= 1
        assert httpx.post(url, content=BODY, timeout=10).status_code == 401


# ---- requests in flight and body deadlines, in-process ------------------------------------------------------------
class Conversation:
    """One ASGI request whose body arrives in `chunks`; after them the client sends nothing until `release`."""

    def __init__(self, app: AsgiApp, chunks: list[bytes], client: str = "192.0.2.1") -> None:
        self.app = app
        self.chunks = list(chunks)
        self.released = asyncio.Event()
        self.sent: list[MutableMapping[str, Any]] = []
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/models/iris:predict",
            "query_string": b"",
            "headers": [(b"content-length", str(len(BODY)).encode())],
            "client": (client, 40000),
        }

    async def receive(self) -> dict[str, Any]:
        if len(self.chunks) > 1:
            return {"type": "http.request", "body": self.chunks.pop(0), "more_body": True}
        await self.released.wait()
        return {"type": "http.request", "body": self.chunks.pop(0) if self.chunks else b"", "more_body": False}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)


def test_beyond_max_concurrency_503_at_once(s3_store: str, tmp_path: Path) -> None:
    app = create_app(_registry(s3_store, tmp_path, max_concurrency=2))

    async def scenario() -> list[Conversation]:
        slow = [Conversation(app, [BODY[:5], BODY[5:]]) for _ in range(2)]
        tasks = [asyncio.create_task(c.run()) for c in slow]
        await asyncio.sleep(0.05)  # both are now waiting for the rest of their bodies
        third = Conversation(app, [BODY])
        third.released.set()
        started = time.perf_counter()
        await third.run()
        assert time.perf_counter() - started < 0.5
        for c in slow:
            c.released.set()
        await asyncio.gather(*tasks)
        after = Conversation(app, [BODY])
        after.released.set()
        await after.run()
        return [*slow, third, after]

    first, second, third, after = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert third.status == 503 and third.header(b"retry-after") == b"1"
    assert third.header(b"connection") == b"close"  # its body was never read
    assert "MODELFN_MAX_CONCURRENCY" in json.loads(third.sent[1]["body"])["error"]
    assert [first.status, second.status, after.status] == [200, 200, 200]
    assert app.gate.active == 0


def test_a_body_not_sent_in_time_is_408_and_the_connection_closes(s3_store: str, tmp_path: Path) -> None:
    seen: list[Response] = []
    app = create_app(_registry(s3_store, tmp_path, body_timeout=0.3), observe=lambda r, s: seen.append(r))
    slow = Conversation(app, [BODY[:5], BODY[5:]])
    started = time.perf_counter()
    asyncio.run(asyncio.wait_for(slow.run(), 10))
    assert 0.3 <= time.perf_counter() - started < 2
    assert slow.status == 408 and slow.header(b"connection") == b"close"
    assert "MODELFN_BODY_TIMEOUT" in json.loads(slow.sent[1]["body"])["error"]
    assert [r.status for r in seen] == [408] and app.gate.active == 0


# ---- the deadline itself -------------------------------------------------------------------------------------------
def test_the_deadline_ends_late_reads_only_and_leaves_no_timer_behind() -> None:
    deadline = BodyDeadline(0.2)

    async def body(seconds: float) -> bytes:
        await asyncio.sleep(seconds)
        return b"body"

    async def scenario() -> list[Any]:
        quick = asyncio.create_task(deadline.within(body(0.05)))
        late = asyncio.create_task(deadline.within(body(10)))
        cancelled = asyncio.create_task(deadline.within(body(10)))
        await asyncio.sleep(0.1)
        cancelled.cancel()  # as a server's shutdown would: that is not a timeout
        results = await asyncio.gather(quick, late, cancelled, return_exceptions=True)
        await asyncio.sleep(deadline.tick * 2)
        return [*results, deadline._timer]

    started = time.perf_counter()
    quick, late, cancelled, timer = asyncio.run(scenario())
    assert quick == b"body"
    assert isinstance(late, BodyTimeout) and late.status == 408
    assert isinstance(cancelled, asyncio.CancelledError)
    assert timer is None  # nothing pending: no periodic check keeps running
    assert time.perf_counter() - started < 1


def test_the_client_address_of_each_lambda_event_source() -> None:
    assert source_ip({"requestContext": {"http": {"sourceIp": "203.0.113.7"}}}) == "203.0.113.7"  # HTTP API, URLs
    assert source_ip({"requestContext": {"identity": {"sourceIp": "203.0.113.8"}}}) == "203.0.113.8"  # REST
    assert source_ip({"requestContext": {"elb": {"targetGroupArn": "arn"}}}) is None  # ALB: none
