"""Figure 1: warm Lambda HTTP invoke, in process. An API Gateway HTTP API event (POST /predict, one row of 256
features) goes through each handler to its response dict: modelfn's real function (functions/mlp/app.py, Powertools
Logger and Metrics on, EMF written to stdout as in Lambda), the minimal hand-written handler, and the seed-style
FastAPI + pydantic + Mangum app. Calls are interleaved in rounds so that drift hits all three alike."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    MODEL,
    ROOT,
    LambdaContext,
    fresh_import,
    get_env,
    http_event,
    load_file_module,
    predict_body,
    stats,
    summary_row,
)

NAME = "warm_invoke"
TITLE = "Warm Lambda HTTP invoke (API Gateway HTTP API event, in process, batch of one)"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _devnull() -> Any:
    # Powertools' Logger binds the stream it finds at creation: keep this one open for the process's life.
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = open(os.devnull, "w")  # noqa: SIM115
    return _DEVNULL


_DEVNULL: Any = None


def handlers(env: Any) -> dict[str, Handler]:
    """The three handlers, built inside env.activated() (module init reads the environment)."""
    os.environ["MODEL_PATH"] = str(env.mlp_int8)
    mlp_app = load_file_module(ROOT / "functions" / MODEL / "app.py", "bench_fn_mlp_app")
    minimal = fresh_import("bench.baselines.minimal_handler")
    seed = fresh_import("bench.baselines.seed_app")
    return {"modelfn": mlp_app.http_handler, "minimal handler": minimal.handler, "seed-style app": seed.handler}


def _call(handler: Handler, event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    response = handler(event, ctx)
    if response.get("statusCode") != 200:
        raise RuntimeError(f"handler answered {response.get('statusCode')}: {str(response.get('body'))[:300]}")
    return response


def measure(fns: dict[str, Handler], events: dict[str, dict[str, Any]], n: int, rounds: int) -> dict[str, list[float]]:
    ctx = LambdaContext()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    per_round = max(1, n // rounds)
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in fns.items():
            event = events[name]
            out = samples[name]
            for _ in range(per_round):
                t0 = clock()
                fn(event, ctx)
                out.append((clock() - t0) / 1000.0)
    return samples


def _predictions(response: dict[str, Any]) -> list[float]:
    return list(json.loads(response["body"])["predictions"][0]["probabilities"])


def run(quick: bool, *, iterations: int | None = None) -> dict[str, Any]:
    import numpy as np

    env = get_env()
    n = iterations or (300 if quick else 3000)
    rounds = 3 if quick else 10
    body = predict_body(seed=1)
    v2_body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": json.loads(body)["features"]}]}
    )
    with env.activated(MODELFN_STORE=env.store, MODELFN_MODEL=MODEL), contextlib.redirect_stdout(_devnull()):
        fns = handlers(env)
        events = {k: http_event("/predict", body) for k in fns}
        ctx = LambdaContext()
        answers = {k: _call(fn, events[k], ctx) for k, fn in fns.items()}
        reference = _predictions(answers["minimal handler"])
        agree = {k: bool(np.allclose(_predictions(r), reference, atol=1e-5)) for k, r in answers.items()}
        # extra, for information: the same function on the v2 route (JSON tensors)
        extra = {"modelfn v2 /infer": fns["modelfn"]}
        extra_events = {"modelfn v2 /infer": http_event(f"/v2/models/{MODEL}/infer", v2_body)}
        _call(extra["modelfn v2 /infer"], extra_events["modelfn v2 /infer"], ctx)
        measure(fns, events, min(n, 300), 1)  # warm-up: allocators, caches, branch predictors
        samples = measure(fns, events, n, rounds)
        samples.update(measure(extra, extra_events, n // 2, max(1, rounds // 2)))
    results = {k: stats(v) for k, v in samples.items()}
    m, base, seed = results["modelfn"], results["minimal handler"], results["seed-style app"]
    summary = [
        summary_row(
            "1 warm invoke",
            "p50 vs minimal handler",
            m["p50"],
            base["p50"],
            "µs",
            baseline_name="minimal handler",
            op="<=",
            target=1.5,
        ),
        summary_row(
            "1 warm invoke",
            "p50 vs seed-style app",
            m["p50"],
            seed["p50"],
            "µs",
            baseline_name="seed-style app",
            op="<=",
            target=0.6,
        ),
        summary_row("1 warm invoke", "p99 vs minimal handler", m["p99"], base["p99"], "µs", baseline_name="minimal handler"),
        summary_row("1 warm invoke", "p99 vs seed-style app", m["p99"], seed["p99"], "µs", baseline_name="seed-style app"),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "iterations": n,
            "rounds": rounds,
            "route": "POST /predict, one row of 256 FP32 features",
            "model": f"{MODEL} int8 (stable)",
            "powertools": "Logger + Metrics on (EMF to stdout, sent to /dev/null here); Tracer off outside Lambda",
            "seed_app": "FastAPI + pydantic body + async def, Mangum(app) with its default lifespan='auto'",
        },
        "results_us": results,
        "answers_agree": agree,
        "summary": summary,
    }


def profile(seconds: float = 3.0) -> str:
    """pyinstrument over warm invokes of modelfn's handler: where a warm request's time goes."""
    from pyinstrument import Profiler

    env = get_env()
    body = predict_body(seed=1)
    with env.activated(MODELFN_STORE=env.store, MODELFN_MODEL=MODEL), contextlib.redirect_stdout(_devnull()):
        fn = load_file_module(ROOT / "functions" / MODEL / "app.py", "bench_fn_mlp_app_prof").http_handler
        event, ctx = http_event("/predict", body), LambdaContext()
        for _ in range(200):
            fn(event, ctx)
        profiler = Profiler(interval=0.0001)
        profiler.start()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            fn(event, ctx)
        profiler.stop()
    return str(profiler.output_text(unicode=True, color=False, show_all=False))
