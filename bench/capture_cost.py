"""What payload capture costs: the same request with capture off, at 10 % and at 100 %, side by side in one
process, interleaved in rounds. Two paths: a warm Lambda HTTP invoke of the mlp function (Powertools on, as
deployed; records written at the end of the invoke that finds the buffer full, so the mean includes the writes)
and the server's ASGI app (what `modelfn serve` and the container run), called in process: per-call p50, and
throughput over all of a variant's calls and writes (its flusher's encoding, gzip and writes, and a last flush),
the variants taking turns in short chunks, so the cost that leaves the response path is counted too. The sink is a
local folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.auth_cost import _asgi_call, _measure
from bench.common import MODEL, get_env, http_event, lambda_calls, predict_body, summary_row

NAME = "capture_cost"
TITLE = "Capture's cost: off vs 10 % vs 100 %, warm Lambda invoke and server ASGI call (p50 and throughput)"
VARIANTS: dict[str, float | None] = {"off": None, "10%": 10.0, "100%": 100.0}
LAMBDA_BUFFER_MB = 0.25
"""The Lambda variants write every 0.25 MB (about 200 requests here), so their mean carries the writes' cost."""


def _functions(env: Any, folder: Path) -> dict[str, Any]:
    from modelfn.function import ModelFunction
    from modelfn.settings import Settings

    fns = {}
    for name, percent in VARIANTS.items():
        extra: dict[str, Any] = {}
        if percent is not None:
            extra = {"capture": str(folder / name), "capture_percent": percent, "capture_buffer_mb": LAMBDA_BUFFER_MB}
        fns[name] = ModelFunction(Settings(store=env.store, model=MODEL, **extra))
    return fns


def _throughput(
    calls: dict[str, Callable[[], Any]], flushes: dict[str, Callable[[], Any]], n: int, chunks: int, loop: Any
) -> dict[str, float]:
    """Calls per second per variant: all its calls and writes over the total time. The variants take turns in short
    chunks (a swing in the machine's load hits them alike); the servers' own flusher writes as it does in service
    (every 4 MB buffered) and what is left is written at the end, timed as part of the variant."""
    spent = dict.fromkeys(calls, 0.0)
    size = max(n // chunks, 1)
    for _ in range(chunks):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(size):
                loop.run_until_complete(call())
            spent[name] += time.perf_counter() - t0
    for name, flush in flushes.items():
        t0 = time.perf_counter()
        flush()
        spent[name] += time.perf_counter() - t0
    return {k: round(size * chunks / v, 1) for k, v in spent.items()}


def _row(where: str, variant: str, value: float, base: float, unit: str, label: str) -> dict[str, Any]:
    return summary_row(
        "capture",
        f"{where}, capture {variant} vs off",
        value,
        base,
        unit,
        baseline_name="capture off",
        ratio_label=f"{variant} / off ({label})",
    )


def run(quick: bool) -> dict[str, Any]:
    from modelfn.http import create_app

    env = get_env()
    n, rounds = (300, 3) if quick else (3000, 10)
    body = predict_body(seed=1)
    folder = Path(tempfile.mkdtemp(prefix="capture-", dir=env.workdir))
    with env.activated(MODELFN_STORE=env.store), contextlib.redirect_stdout(open(os.devnull, "w")):
        fns = _functions(env, folder)
        lam = lambda_calls(fns, dict.fromkeys(fns, http_event("/predict", body)), "capture")
        invoke = _measure(lam, n, rounds, None)
        loop = asyncio.new_event_loop()
        apps = {k: create_app(fn.registry, default_model=MODEL, hooks={MODEL: fn.hooks}) for k, fn in fns.items()}
        raw = [(b"content-type", b"application/json")]
        asgi = {k: _asgi_call(app, body.encode(), raw) for k, app in apps.items()}
        server = _measure(asgi, n, rounds, loop)
        flushes = {k: (app.capture.flush if app.capture is not None else lambda: 0) for k, app in apps.items()}
        throughput = _throughput(asgi, flushes, n * 3, rounds * 10, loop)
        loop.close()
        captured = {k: dict(app.capture.written) for k, app in apps.items() if app.capture is not None}
        for app in apps.values():
            app.close()
    summary = []
    for variant in ("10%", "100%"):
        summary.append(_row("warm invoke p50", variant, invoke[variant]["p50"], invoke["off"]["p50"], "µs", "lambda"))
        summary.append(
            _row("warm invoke mean", variant, invoke[variant]["mean"], invoke["off"]["mean"], "µs", "lambda")
        )
        summary.append(
            _row("server ASGI call p50", variant, server[variant]["p50"], server["off"]["p50"], "µs", "server")
        )
        summary.append(_row("server throughput", variant, throughput[variant], throughput["off"], "calls/s", "server"))
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "iterations": n,
            "rounds": rounds,
            "route": "POST /predict, one row of 256 FP32 features",
            "sink": "a local folder (gzip JSON Lines)",
            "lambda_capture_buffer_mb": LAMBDA_BUFFER_MB,
            "throughput": "calls/s over all of a variant's calls and writes, the variants interleaved in chunks",
        },
        "results_us": {"lambda_invoke": invoke, "server_asgi_call": server},
        "server_calls_per_second": throughput,
        "server_records_written": captured,
        "summary": summary,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=2))
