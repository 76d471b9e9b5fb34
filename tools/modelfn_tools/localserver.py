"""Local processes on loopback for tests and benchmarks: a free port, waiting until an HTTP server in another
process answers (or has died trying), and `modelfn serve` run as such a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Return once `url` answers with any status below 500; fail early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def running(argv: Sequence[str], log_path: Path, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` as a process writing to `log_path`, terminated (then killed) when the block ends."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_redis(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once the Redis server on `port` answers PING; fail early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@contextmanager
def serve_process(
    args: Sequence[str], tmp: Path, port: int | None = None, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`modelfn serve ARGS` as a real process on a free loopback port (its output in tmp/serve.log, its disk cache
    in tmp/cache); yields the base URL once it answers, and stops it on exit."""
    port = port or free_port()
    environ = {**os.environ, "MODELFN_CACHE_DIR": str(tmp / "cache"), **(env or {})}
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with running(argv, tmp / "serve.log", env=environ) as proc:
        wait_http(f"{base}/v2/health/live", proc=proc)
        yield base


@contextmanager
def redis_process(tmp: Path, port: int | None = None) -> Iterator[str]:
    """A real Redis server (`redis-server`, installed by scripts/install-redis.sh) on a free loopback port, with
    no persistence; yields its redis:// URL once it answers PING, and stops it on exit."""
    port = port or free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with running(argv, tmp / "redis.log", cwd=tmp) as proc:
        wait_redis(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
