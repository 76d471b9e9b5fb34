"""The ASGI adapter reads a body once, under the limit, and hands the service a Request: a malformed
Content-Length is a 400, a body over the limit a 413 before it is all read, a client that goes away is counted as
499 and gets nothing; a compressed body is inflated (only up to the limit) off the event loop."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from modelfn.adapters.asgi import AsgiApp
from modelfn.http import create_app
from modelfn.registry import ModelRegistry
from modelfn.service.request import Request, Response
from modelfn.service.runner import is_quick
from modelfn.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"instances": [ROW]}).encode()


def _call(app: AsgiApp, headers: list[tuple[bytes, bytes]], chunks: list[bytes | None]) -> tuple[int | None, Any]:
    """One request; a None chunk is the client going away."""
    sent: list[MutableMapping[str, Any]] = []
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        chunk = queue.pop(0) if queue else None
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/iris:predict",
        "query_string": b"",
        "headers": headers,
    }
    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, None
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.fixture
def app(s3_store: str, tmp_path: Path) -> tuple[AsgiApp, list[Response]]:
    seen: list[Response] = []
    registry = ModelRegistry.from_uri(s3_store, Settings(cache_dir=tmp_path, max_body_bytes=4096), ["iris"])
    return create_app(registry, observe=lambda r, s: seen.append(r)), seen


def test_a_well_formed_request(app: tuple[AsgiApp, list[Response]]) -> None:
    status, body = _call(app[0], [(b"content-length", str(len(BODY)).encode())], [BODY[:10], BODY[10:]])
    assert status == 200 and body["predictions"][0]["label"] == 0
    assert app[1][-1].route == "/v1/models/{name}:predict" and app[1][-1].model == "iris"


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e3", b""])
def test_a_malformed_content_length_is_a_400(app: tuple[AsgiApp, list[Response]], value: bytes) -> None:
    status, body = _call(app[0], [(b"content-length", value)], [BODY])
    assert status == 400 and "Content-Length" in body["error"]


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(app: tuple[AsgiApp, list[Response]]) -> None:
    assert _call(app[0], [(b"content-length", b"999999")], [])[0] == 413
    status, body = _call(app[0], [], [b"x" * 3000, b"x" * 3000, b"never read"])
    assert status == 413 and "MODELFN_MAX_BODY_BYTES" in body["error"]


def test_a_client_that_goes_away_gets_nothing_and_is_counted(app: tuple[AsgiApp, list[Response]]) -> None:
    assert _call(app[0], [], [BODY[:5], None]) == (None, None)
    assert app[1][-1].status == 499


@pytest.mark.parametrize(
    ("encoding", "payload", "status"),
    [
        ("gzip", gzip.compress(BODY), 200),
        ("deflate", zlib.compress(BODY), 200),
        ("gzip", gzip.compress(b" " * 100_000 + BODY), 413),  # 1 kB on the wire, over the limit inflated
        ("gzip", gzip.compress(BODY)[:-6], 400),  # truncated: the CRC trailer is missing
        ("gzip", gzip.compress(BODY) + b"garbage", 400),
        ("br", BODY, 400),
    ],
)
def test_compressed_bodies(app: tuple[AsgiApp, list[Response]], encoding: str, payload: bytes, status: int) -> None:
    assert _call(app[0], [(b"content-encoding", encoding.encode())], [payload])[0] == status


def test_only_small_uncompressed_bodies_run_on_the_event_loop() -> None:
    assert is_quick(Request("POST", "/predict", body=b"x" * 1000))
    assert not is_quick(Request("POST", "/predict", body=b"x" * 300_000))
    assert not is_quick(Request("POST", "/predict", headers={"content-encoding": "gzip"}, body=b"x" * 10))
