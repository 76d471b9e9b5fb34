"""What authentication costs: the same request with MODELFN_API_KEYS unset and set (a valid key sent), side by side
in one process, interleaved in rounds. Two paths: a warm Lambda HTTP invoke of the mlp function (Powertools on, as
deployed) and one request through the server's ASGI app (what `modelfn serve` and the container run), called in
process so that only the service's own work is measured, not the load generator's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from bench.common import MODEL, get_env, http_event, lambda_calls, predict_body, stats, summary_row

NAME = "auth_cost"
TITLE = "Authentication's cost: MODELFN_API_KEYS off vs on (a valid key sent), warm Lambda invoke and server ASGI call"
KEY = "bench-key-0123456789abcdef"


def _functions(env: Any) -> dict[str, Any]:
    from modelfn.function import ModelFunction
    from modelfn.settings import Settings

    base = {"store": env.store, "model": MODEL}
    return {"off": ModelFunction(Settings(**base)), "on": ModelFunction(Settings(**base, api_keys=KEY))}


def _asgi_call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> Callable[[], Any]:
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    async def call() -> None:
        await app(dict(scope), receive, send)

    return call


def _measure(calls: dict[str, Callable[[], Any]], n: int, rounds: int, loop: asyncio.AbstractEventLoop | None) -> Any:
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            out = samples[name]
            for _ in range(n // rounds):
                t0 = time.perf_counter_ns()
                if loop is None:
                    call()
                else:
                    loop.run_until_complete(call())
                out.append((time.perf_counter_ns() - t0) / 1000.0)
    return {k: stats(v) for k, v in samples.items()}


def run(quick: bool) -> dict[str, Any]:
    from modelfn.http import create_app

    env = get_env()
    n, rounds = (400, 4) if quick else (4000, 10)
    body = predict_body(seed=1)
    with env.activated(MODELFN_STORE=env.store), contextlib.redirect_stdout(open(os.devnull, "w")):
        fns = _functions(env)
        events = {"off": http_event("/predict", body), "on": http_event("/predict", body, headers={"x-api-key": KEY})}
        lam = lambda_calls(fns, events, "auth")
        invoke = _measure(lam, n, rounds, None)
        loop = asyncio.new_event_loop()
        apps = {k: create_app(fn.registry, default_model=MODEL, hooks={MODEL: fn.hooks}) for k, fn in fns.items()}
        headers = [(b"content-type", b"application/json")]
        asgi = {
            "off": _asgi_call(apps["off"], body.encode(), headers),
            "on": _asgi_call(apps["on"], body.encode(), [*headers, (b"x-api-key", KEY.encode())]),
        }
        server = _measure(asgi, n, rounds, loop)
        loop.close()
    summary = [
        summary_row(
            "auth",
            "warm invoke p50, keys on vs off",
            invoke["on"]["p50"],
            invoke["off"]["p50"],
            "µs",
            baseline_name="keys off",
            ratio_label="on / off",
        ),
        summary_row(
            "auth",
            "server ASGI call p50, keys on vs off",
            server["on"]["p50"],
            server["off"]["p50"],
            "µs",
            baseline_name="keys off",
            ratio_label="on / off",
        ),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {"iterations": n, "rounds": rounds, "route": "POST /predict, one row of 256 FP32 features"},
        "results_us": {"lambda_invoke": invoke, "server_asgi_call": server},
        "summary": summary,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=2))
