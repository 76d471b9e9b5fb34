"""Figure 5: server throughput. `modelfn serve` against the seed-style app under uvicorn, one worker each, POST
/predict with one row of 256 features, closed-loop load at 1, 8 and 32 connections from wrk (or the bounded Python
generator when wrk is missing). Also `modelfn serve --batching` where the command has it (dynamic batching joins
concurrent rows into one session.run). One server runs at a time; the load generator shares the machine with it."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from bench.common import get_env, predict_body, summary_row, wrk_version
from bench.loadgen import load
from bench.servers import modelfn_serve_supports, start_modelfn, start_seed, stop

NAME = "server_throughput"
TITLE = "Server throughput: modelfn serve vs the seed-style app under uvicorn (POST /predict, one row)"
CONNECTIONS = (1, 8, 32)


def _check(base: str, body: str) -> list[float]:
    import httpx

    r = httpx.post(f"{base}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    return list(r.json()["predictions"][0]["probabilities"])


def _series(start: Any, body: str, seconds: float, warmup: float) -> tuple[dict[str, Any], list[float]]:
    proc, base = start()
    try:
        answer = _check(base, body)
        load(f"{base}/predict", body, 32, warmup)  # JIT-free Python still warms: allocators, caches, the model
        points = {}
        for c in CONNECTIONS:
            points[str(c)] = load(f"{base}/predict", body, c, seconds)
            time.sleep(0.5)
    finally:
        stop(proc)
    return points, answer


def run(quick: bool, *, seconds: float | None = None) -> dict[str, Any]:
    import numpy as np

    env = get_env()
    duration = seconds or (2.0 if quick else 10.0)
    warmup = 1.0 if quick else 3.0
    body = predict_body(seed=5)
    servers: dict[str, Any] = {
        "modelfn serve": lambda: start_modelfn(env),
        "seed-style app (uvicorn)": lambda: start_seed(env),
    }
    if modelfn_serve_supports("--batching"):
        servers["modelfn serve --batching"] = lambda: start_modelfn(env, "--batching")
    results: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[float]] = {}
    for name, start in servers.items():
        results[name], answers[name] = _series(start, body, duration, warmup)
    ref = answers["seed-style app (uvicorn)"]
    agree = {k: bool(np.allclose(v, ref, atol=1e-5)) for k, v in answers.items()}
    seed32 = results["seed-style app (uvicorn)"]["32"]
    summary = []
    for name in [n for n in servers if n.startswith("modelfn")]:
        m32 = results[name]["32"]
        label = "" if name == "modelfn serve" else " (--batching)"
        summary.append(
            summary_row(
                "5 server",
                f"req/s at 32 connections{label}",
                m32["requests_per_second"],
                seed32["requests_per_second"],
                "req/s",
                baseline_name="seed app, uvicorn",
                op=">=",
                target=2.5,
            )
        )
        summary.append(
            summary_row(
                "5 server",
                f"p99 at 32 connections{label}",
                m32["latency_ms"]["p99"],
                seed32["latency_ms"]["p99"],
                "ms",
                baseline_name="seed app, uvicorn",
                op="<=",
                target=0.5,
            )
        )
    generator = next(iter(next(iter(results.values())).values()))["generator"]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "seconds_per_point": duration,
            "connections": list(CONNECTIONS),
            "load_generator": f"{wrk_version()} (-t1, closed loop)" if generator == "wrk" else generator,
            "wrk_found": shutil.which("wrk") is not None,
            "body_bytes": len(body),
            "request": "POST /predict {\"features\": [256 floats]}",
            "servers": "one uvicorn worker each (uvloop + httptools when installed), access log off",
        },
        "results": results,
        "answers_agree": agree,
        "summary": summary,
    }


def profile(seconds: float = 8.0) -> str:
    """py-spy over `modelfn serve` under 32 connections: where a served request's time goes."""
    import os
    import subprocess

    from bench.common import ROOT
    from bench.large_request import collapse_report

    env = get_env()
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(spy):
        return "py-spy is not installed: no server-side profile"
    body = predict_body(seed=5)
    proc, base = start_modelfn(env)
    out = env.workdir / "server.pyspy.txt"
    try:
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load(f"{base}/predict", body, 32, seconds + 1)
        spy_proc.wait(timeout=60)
    finally:
        stop(proc)
    return collapse_report(out) if out.exists() else "py-spy produced no profile"
