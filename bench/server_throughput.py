"""Figure 5: server throughput. `modelfn serve` against the seed-style app under uvicorn, one worker each, POST
/predict with one row of 256 features, closed-loop load at 1, 8 and 32 connections from wrk (or the bounded Python
generator when wrk is missing). Also `modelfn serve --batching` where the command has it (dynamic batching joins
concurrent rows into one session.run). One server runs at a time; the load generator shares the machine with it."""

from __future__ import annotations

import shutil
import time
from typing import Any

from bench.common import get_env, predict_body, summary_row, wrk_version
from bench.loadgen import load
from bench.servers import modelfn_serve_supports, start_modelfn, start_seed, stop

NAME = "server_throughput"
TITLE = "Server throughput: modelfn serve vs the seed-style app under uvicorn (POST /predict, one row)"
CONNECTIONS = (1, 8, 32)


SEED = "seed-style app (uvicorn)"
PLAIN = "modelfn serve"
EXPLICIT = "modelfn serve, /predict?model=mlp"
BATCHING = "modelfn serve --batching, /predict?model=mlp"
ONE_THREAD = "modelfn serve, MODELFN_INTRA_OP_THREADS=1, /predict?model=mlp"


def _check(url: str, body: str) -> list[float]:
    import httpx

    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    return list(r.json()["predictions"][0]["probabilities"])


def _series(
    start: Any, paths: dict[str, str], body: str, seconds: float, warmup: float
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Start one server, load each of its paths at every connection count, stop it."""
    proc, base = start()
    points: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[float]] = {}
    try:
        for label, path in paths.items():
            url = base + path
            answers[label] = _check(url, body)
            load(url, body, 32, warmup)  # warm: allocators, caches, connection pools, the model's first runs
            points[label] = {}
            for c in CONNECTIONS:
                points[label][str(c)] = load(url, body, c, seconds)
                time.sleep(0.5)
    finally:
        stop(proc)
    return points, answers


def run(quick: bool, *, seconds: float | None = None) -> dict[str, Any]:
    import numpy as np

    env = get_env()
    duration = seconds or (2.0 if quick else 10.0)
    warmup = 1.0 if quick else 3.0
    body = predict_body(seed=5)
    plan: list[tuple[Any, dict[str, str]]] = [
        (lambda: start_modelfn(env), {PLAIN: "/predict", EXPLICIT: "/predict?model=mlp"}),
        (lambda: start_seed(env), {SEED: "/predict"}),
    ]
    plan.append((lambda: start_modelfn(env, MODELFN_INTRA_OP_THREADS="1"), {ONE_THREAD: "/predict?model=mlp"}))
    if modelfn_serve_supports("--batching"):
        plan.append((lambda: start_modelfn(env, "--batching"), {BATCHING: "/predict?model=mlp"}))
    results: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[float]] = {}
    for start, paths in plan:
        points, answered = _series(start, paths, body, duration, warmup)
        results.update(points)
        answers.update(answered)
    ref = answers[SEED]
    agree = {k: bool(np.allclose(v, ref, atol=1e-5)) for k, v in answers.items()}
    seed32 = results[SEED]["32"]
    summary = []
    for name in [n for n in results if n != SEED]:
        m32 = results[name]["32"]
        label = "" if name == PLAIN else f" ({name.removeprefix('modelfn serve').strip(', ')})"
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
    generator = results[SEED]["32"]["generator"]
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
            "request": 'POST /predict {"features": [256 floats]}',
            "servers": "one uvicorn worker each (uvloop + httptools when installed), access log off",
            "variants": "modelfn serve on /predict as users call it, and on /predict?model=mlp, which names the "
            "model (without one, the plain route looks up the only served model "
            "in a list cached for MODELFN_LABEL_TTL); "
            "with onnxruntime's intra-op pool at one thread (on 2 cores the default pool's second thread competes "
            "with the event loop and the load generator); with dynamic batching",
        },
        "results": results,
        "answers_agree": agree,
        "summary": summary,
    }


def profile(seconds: float = 6.0) -> str:
    """py-spy over `modelfn serve` under 32 connections, on /predict as users call it and on /predict?model=mlp:
    where a served request's time goes."""
    return "\n\n".join(f"== {path} ==\n{_spy(path, seconds)}" for path in ("/predict", "/predict?model=mlp"))


def _spy(path: str, seconds: float) -> str:
    import os
    import subprocess

    from bench.common import ROOT
    from bench.profiling import collapse_report

    env = get_env()
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(spy):
        return "py-spy is not installed: no server-side profile"
    body = predict_body(seed=5)
    proc, base = start_modelfn(env)
    out = env.workdir / "server.pyspy.txt"
    try:
        load(f"{base}{path}", body, 32, 1.0)
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load(f"{base}{path}", body, 32, seconds + 1)
        spy_proc.wait(timeout=60)
    finally:
        stop(proc)
    return collapse_report(out, top=20) if out.exists() else "py-spy produced no profile"
