"""Issue 9's acceptance test for slow clients: 300 half-sent bodies, held open on raw sockets, against a real
`modelfn serve` whose descriptors they exhaust. A legitimate request still answers 200 within a few seconds, and
once the body deadline (MODELFN_BODY_TIMEOUT) passes the server has closed every held connection (the ones it
accepted with a 408). Before the deadline existed the held connections stayed open for good and nothing else got in."""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from modelfn_tools.localserver import free_port, running, wait_http

HELD = 300
BODY_TIMEOUT = 2.0
START_LIMIT = 400
"""RLIMIT_NOFILE the server starts with; once it is up it is lowered so that the held connections exceed it."""
SPARE = 250
"""Descriptors left to the server beyond those it holds after start: fewer than HELD, so the attack exhausts them."""
V2 = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
HALF_SENT = (
    b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: modelfn\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + json.dumps(V2).encode()[:20]
)


@pytest.fixture
def server(s3_store: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`modelfn serve` as a real process with a low file limit and a short body deadline; (base URL, pid)."""
    port = free_port()
    env = {**os.environ, "MODELFN_CACHE_DIR": str(tmp_path / "cache"), "MODELFN_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", s3_store, "--models", "iris"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with running(argv, tmp_path / "serve.log", env=env) as proc:
        # as it starts (prlimit, not a preexec_fn: this process has threads)
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (START_LIMIT, START_LIMIT))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/health/live", proc=proc)
        yield base, proc.pid


def _legit_answer(url: str, deadline: float) -> httpx.Response | None:
    """A well-behaved client: retries when it cannot get in (connection refused or dropped) until the deadline."""
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url, json=V2, timeout=max(0.1, deadline - time.monotonic()))
            if r.status_code != 503:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return None


def _closed_by_server(sock: socket.socket, deadline: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection before the deadline, and what it answered first."""
    answer = b""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                return True, answer
            answer += data
    except (ConnectionResetError, BrokenPipeError):
        return True, answer
    except TimeoutError:
        return False, answer


def test_held_bodies_neither_exhaust_nor_hold_the_server(server: tuple[str, int]) -> None:
    base, pid = server
    url = f"{base}/v2/models/iris/infer"
    assert httpx.post(url, json=V2, timeout=10).status_code == 200  # iris loaded: the server is warm
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + SPARE, START_LIMIT))

    held: list[socket.socket] = []
    try:
        attacked = time.monotonic()
        for _ in range(HELD):
            s = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            s.sendall(HALF_SENT)
            held.append(s)
        time.sleep(0.5)  # the server has taken in what it could

        legit = _legit_answer(url, attacked + BODY_TIMEOUT + 5)
        assert legit is not None, "a legitimate request never got an answer while the bodies were held"
        assert legit.status_code == 200, legit.text
        assert legit.json()["outputs"][0]["data"] == [0]
        assert time.monotonic() - attacked < BODY_TIMEOUT + 5

        deadline = attacked + BODY_TIMEOUT + 3
        results = [_closed_by_server(s, deadline) for s in held]
        still_open = sum(1 for closed, _ in results if not closed)
        assert still_open == 0, f"{still_open} of {HELD} held connections still open after the body deadline"
        timed_out = [a for closed, a in results if a]
        assert timed_out and all(a.startswith(b"HTTP/1.1 408 ") for a in timed_out)
        assert all(b"connection: close" in a.lower() and b"MODELFN_BODY_TIMEOUT" in a for a in timed_out)
    finally:
        for s in held:
            s.close()
    assert httpx.post(url, json=V2, timeout=10).status_code == 200
