"""What the response cache buys: (1) one request through the server's ASGI app, called in process, as a hit, as a
miss (a new body each time, cache on) and with the cache off, interleaved in rounds: p50 of each; (2) `modelfn
serve` under 32 connections (wrk, closed loop) with half the requests repeating one body (hits) and half new
bodies (misses), cache on vs off, side by side in alternating rounds, each server pinned to its own core and wrk
to another where the machine has them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from bench.common import MODEL, get_env, predict_body, stats, summary_row
from bench.loadgen import parse_wrk, pinned

NAME = "response_cache"
TITLE = "Response cache: hit vs miss vs off (one ASGI call), and modelfn serve at 32 connections with 50 % hits"
CACHE_MB = "64"

MIXED_LUA = """
local hot = [==[{hot}]==]
local rest = [==[{rest}]==]
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16) % 100000)
local counter = math.random(1, 1000000000)
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  counter = counter + 1
  if counter % 2 == 0 then
    return wrk.format("POST", nil, headers, hot)
  end
  return wrk.format("POST", nil, headers, '{{"features": [' .. counter .. ', ' .. rest .. ']}}')
end
"""


def _asgi_call(app: Any, body: Callable[[], bytes]) -> Callable[[], Any]:
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": []}
    scope["headers"] = [(b"content-type", b"application/json")]

    async def call() -> None:
        payload = body()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            return None

        await app(dict(scope), receive, send)

    return call


def _in_process(env: Any, n: int, rounds: int) -> dict[str, Any]:
    from modelfn.http import create_app
    from modelfn.registry import ModelRegistry
    from modelfn.settings import Settings

    hot = predict_body(seed=1).encode()
    features = json.loads(hot)["features"]
    fresh = iter(range(10**9))

    def new_body() -> bytes:
        return json.dumps({"features": [float(next(fresh)), *features[1:]]}).encode()

    def app(mb: float) -> Any:
        settings = Settings(store=env.store, response_cache_mb=mb)
        return create_app(ModelRegistry.from_uri(env.store, settings, [MODEL]), default_model=MODEL)

    on, off = app(float(CACHE_MB)), app(0)
    calls = {"hit": _asgi_call(on, lambda: hot), "miss": _asgi_call(on, new_body), "off": _asgi_call(off, new_body)}
    loop = asyncio.new_event_loop()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for call in calls.values():
        loop.run_until_complete(call())  # loads the model, stores the hot entry
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(n // rounds):
                t0 = time.perf_counter_ns()
                loop.run_until_complete(call())
                samples[name].append((time.perf_counter_ns() - t0) / 1000.0)
    loop.close()
    return {k: stats(v) for k, v in samples.items()}


def _mixed_wrk(url: str, connections: int, seconds: float, cpu: int | None) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk (Debian's package) is needed for the mixed-load figure")
    hot = predict_body(seed=1)
    rest = json.dumps(json.loads(hot)["features"][1:])[1:-1]
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-cache-") as tmp:
        script = Path(tmp) / "mixed.lua"
        script.write_text(MIXED_LUA.format(hot=hot, rest=rest))
        cmd = [*pinned(cpu), wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        out = subprocess.run(
            [*cmd, "--timeout", "10s", "-s", str(script), url], capture_output=True, text=True, check=True
        ).stdout
    return parse_wrk(out)


def _servers(env: Any, seconds: float, rounds: int) -> dict[str, Any]:
    from bench import servers

    cores = os.cpu_count() or 1
    server_cpu, load_cpu = (1, 0) if cores >= 2 else (None, None)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    started = {
        "on": servers.modelfn(env, "cache on", cpu=server_cpu, MODELFN_RESPONSE_CACHE_MB=CACHE_MB),
        "off": servers.modelfn(env, "cache off", cpu=server_cpu),
    }
    try:
        for _ in range(rounds):
            for name, server in started.items():
                _mixed_wrk(server.base + "/predict", 32, 1, load_cpu)  # warm the connections and the cache
                runs[name].append(_mixed_wrk(server.base + "/predict", 32, seconds, load_cpu))
    finally:
        for server in started.values():
            servers.stop(server)
    out: dict[str, Any] = {}
    for name, results in runs.items():
        best = sorted(results, key=lambda r: r["requests_per_second"])[len(results) // 2]
        out[name] = {"requests_per_second": best["requests_per_second"], "latency_ms": best["latency_ms"]}
        out[name]["non_2xx"] = sum(r["non_2xx"] for r in results)
        out[name]["rounds"] = [r["requests_per_second"] for r in results]
    return out


def run(quick: bool) -> dict[str, Any]:
    env = get_env()
    n, rounds = (600, 3) if quick else (6000, 10)
    seconds, server_rounds = (2.0, 1) if quick else (8.0, 3)
    random.seed(0)
    with env.activated(MODELFN_STORE=env.store), contextlib.redirect_stdout(open(os.devnull, "w")):
        calls = _in_process(env, n, rounds)
    load = _servers(env, seconds, server_rounds)
    summary = [
        summary_row(
            "response cache",
            "ASGI call p50, hit vs cache off",
            calls["hit"]["p50"],
            calls["off"]["p50"],
            "µs",
            baseline_name="cache off",
            ratio_label="hit / off",
        ),
        summary_row(
            "response cache",
            "ASGI call p50, miss vs cache off (the cost of looking)",
            calls["miss"]["p50"],
            calls["off"]["p50"],
            "µs",
            baseline_name="cache off",
            ratio_label="miss / off",
        ),
        summary_row(
            "response cache",
            "modelfn serve req/s, 32 connections, 50 % hits, cache on vs off",
            load["on"]["requests_per_second"],
            load["off"]["requests_per_second"],
            "req/s",
            baseline_name="cache off",
            ratio_label="on / off",
        ),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "iterations": n,
            "rounds": rounds,
            "route": "POST /predict, one row of 256 FP32 features (mlp int8)",
            "cache_mb": CACHE_MB,
            "server_seconds": seconds,
            "server_rounds": server_rounds,
        },
        "results_us": calls,
        "server": load,
        "summary": summary,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=2))
