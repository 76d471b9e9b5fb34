"""Load generators for the server figures: wrk (Debian's package) when it is installed, else a bounded asyncio
HTTP/1.1 client of our own. Both are closed-loop: C connections, each sending its next request when the previous
answer is in, for a fixed duration; both report requests/s and latency percentiles. Targets are 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


def _loopback(url: str) -> tuple[str, int, str]:
    u = urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load is only ever sent to loopback, not {u.hostname}")
    return u.hostname, u.port or 80, u.path or "/"


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not pct:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "requests_per_second": float(rps.group(1)),
        "requests": int(total.group(1)) if total else None,
        "latency_ms": {f"p{k}": round(_ms(v), 3) for k, v in pct.items()},
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def pinned(cpu: int | None) -> list[str]:
    """The taskset prefix that runs a command on `cpu` only (nothing when None or taskset is missing)."""
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def run_wrk(
    url: str, body: str, connections: int, seconds: float, threads: int = 1, cpu: int | None = None
) -> dict[str, Any]:
    _loopback(url)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk")
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA.format(body=body))
        cmd = [
            *pinned(cpu),
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    result = parse_wrk(out)
    result["generator"] = "wrk"
    return result


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float]) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status >= 300:
                errors += 1
    finally:
        writer.close()
    return errors


def run_python(url: str, body: str, connections: int, seconds: float, cpu: int | None = None) -> dict[str, Any]:
    """The bounded fallback: asyncio, keep-alive connections, fixed duration; slower than wrk (it shares the CPU
    with the server under test), so its figures are lower bounds for the server. With `cpu`, this process runs on
    that CPU alone while it generates load."""
    import os

    if cpu is not None and hasattr(os, "sched_setaffinity"):
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            return run_python(url, body, connections, seconds)
        finally:
            os.sched_setaffinity(0, saved)
    import numpy as np

    host, port, path = _loopback(url)
    payload = body.encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    latencies: list[float] = []

    async def main() -> int:
        deadline = time.perf_counter() + seconds
        results = await asyncio.gather(
            *(_connection(host, port, request, deadline, latencies) for _ in range(connections))
        )
        return sum(results)

    started = time.perf_counter()
    errors = asyncio.run(main())
    elapsed = time.perf_counter() - started
    a = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "latency_ms": {f"p{p}": round(float(np.percentile(a, p)), 3) for p in (50, 75, 90, 99)},
        "socket_errors": 0,
        "non_2xx": errors,
        "generator": "python-asyncio",
    }


def load(
    url: str, body: str, connections: int, seconds: float, prefer_wrk: bool = True, cpu: int | None = None
) -> dict[str, Any]:
    """Closed-loop load on `url` (wrk when installed); with `cpu`, the generator runs on that CPU only."""
    if prefer_wrk and shutil.which("wrk"):
        return run_wrk(url, body, connections, seconds, cpu=cpu)
    return run_python(url, body, connections, seconds, cpu=cpu)
