"""Figure 1: warm Lambda HTTP invoke, in process. An API Gateway HTTP API event (POST /predict, one row of 256
features) goes through each handler to its response dict: modelfn's real function (functions/mlp/app.py, metrics
on: one EMF document per invoke written to stdout as in Lambda), the minimal hand-written handler, and the seed-style
FastAPI + pydantic + Mangum app. Calls are interleaved in rounds so that drift hits all three alike."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
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
    lambda_environ,
    load_file_module,
    predict_body,
    stats,
    summary_row,
)

NAME = "warm_invoke"
TITLE = "Warm Lambda HTTP invoke (API Gateway HTTP API event, in process, batch of one)"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@functools.cache
def _devnull() -> Any:
    """Where the EMF lines go during the measurement; it stays open for the process's life (a logger may bind the
    stream it finds at creation)."""
    return open(os.devnull, "w")


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


SETTLE = 20
"""Untimed calls after each switch of handler: the previous one's onnxruntime threads stop spinning and its
garbage is collected before the next is timed (a Lambda environment runs one function, never three in turn)."""


def measure(fns: dict[str, Handler], events: dict[str, dict[str, Any]], n: int, rounds: int) -> dict[str, list[float]]:
    ctx = LambdaContext()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    per_round = max(1, n // rounds)
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in fns.items():
            event = events[name]
            out = samples[name]
            gc.collect()  # the previous handler's garbage (the seed app's event loop) is not this one's pause
            for _ in range(SETTLE):
                fn(event, ctx)
            for _ in range(per_round):
                t0 = clock()
                fn(event, ctx)
                out.append((clock() - t0) / 1000.0)
    return samples


def breakdown(fn: Any, body: str) -> dict[str, Handler]:
    """The same request through fewer of modelfn's layers, to show where a warm invoke's time goes: without the
    function's metrics and logs (the HTTP adapter and the service), the protocol core alone (decode, run, encode,
    no ASGI), and session.run alone."""
    import numpy as np

    from modelfn import jsonio
    from modelfn.protocols import plain

    model = fn.model()
    hooks = fn.hooks
    raw = body.encode()
    x = np.asarray(json.loads(body)["features"], dtype=np.float32)[np.newaxis, :]
    feed = {model.inputs[0].name: x}

    def core(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
        inputs = plain.decode_request(raw, model, hooks.preprocess)
        out = jsonio.dumps(plain.encode_response(model.predict(inputs), model, hooks.postprocess))
        return {"statusCode": 200, "body": out}

    def run_only(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
        model.session.run(None, feed)
        return {"statusCode": 200}

    return {
        "modelfn without its metrics and logs (the Lambda HTTP adapter and the service)": fn._http_adapter,
        "modelfn core (decode, run, encode; no ASGI)": core,
        "session.run alone": run_only,
    }


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
    with (
        env.activated(MODELFN_STORE=env.store, MODELFN_MODEL=MODEL, **lambda_environ()),
        contextlib.redirect_stdout(_devnull()),
    ):
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
        parts = breakdown(sys.modules["bench_fn_mlp_app"].fn, body)
        measure(fns, events, min(n, 300), 1)  # warm-up: allocators, caches, branch predictors
        samples = measure(fns, events, n, rounds)
        samples.update(measure(extra, extra_events, n // 2, max(1, rounds // 2)))
        samples.update(measure(parts, dict.fromkeys(parts, events["modelfn"]), n // 2, max(1, rounds // 2)))
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
            target=1.15,
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
        summary_row(
            "1 warm invoke", "p99 vs minimal handler", m["p99"], base["p99"], "µs", baseline_name="minimal handler"
        ),
        summary_row(
            "1 warm invoke", "p99 vs seed-style app", m["p99"], seed["p99"], "µs", baseline_name="seed-style app"
        ),
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
            "lambda_memory_mb": int(lambda_environ()["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]),
            "telemetry": "metrics on (one EMF document per invoke to stdout, sent to /dev/null here), JSON logs; "
            "X-Ray tracing off outside Lambda",
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
    with (
        env.activated(MODELFN_STORE=env.store, MODELFN_MODEL=MODEL, **lambda_environ()),
        contextlib.redirect_stdout(_devnull()),
    ):
        fn = load_file_module(ROOT / "functions" / MODEL / "app.py", "bench_fn_mlp_app_prof").http_handler
        event, ctx = http_event("/predict", body), LambdaContext()
        for _ in range(200):
            fn(event, ctx)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            fn(event, ctx)
        profiler.stop()
    flat = profiler.output_text(unicode=True, flat=True, time="percent_of_total")
    tree = profiler.output_text(unicode=True, time="percent_of_total")
    top = "\n".join(flat.splitlines()[:45])
    return f"Self time by function (share of all samples):\n{top}\n\nCall tree:\n{tree}"
