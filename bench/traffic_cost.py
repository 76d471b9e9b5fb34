"""What traffic costs per request, side by side in one process, interleaved in rounds: a warm Lambda HTTP invoke of
the mlp function (Powertools on, as deployed) and one request through the server's ASGI app, with (a) no
traffic.json, (b) a sticky 50/50 split between the int8 and fp32 versions, (c) a 100 % shadow of the fp32 version.
On Lambda the shadow runs inside the invoke after the answer is built, so (c) shows what it adds to the billed
duration; on servers it runs in a worker thread after the response is sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from bench.auth_cost import _asgi_call, _measure
from bench.common import MODEL, LambdaContext, get_env, http_event, lambda_calls, predict_body, summary_row

NAME = "traffic_cost"
TITLE = "Traffic's cost: no traffic.json vs a sticky split vs a 100 % shadow, warm Lambda invoke and server ASGI call"
TRAFFIC: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "split": {"split": {"stable": 50, "fp32": 50}, "sticky": "x-user-id"},
    "shadow": {"shadow": {"target": "fp32", "percent": 100}},
}


def _built(env: Any) -> dict[str, Any]:
    """One function per variant; each reads traffic.json once (a long TTL keeps what it read)."""
    from modelfn.function import ModelFunction
    from modelfn.settings import Settings
    from modelfn.store import open_store
    from modelfn.store.traffic import dump_traffic, make_traffic, traffic_key

    store = open_store(env.store)
    fns: dict[str, Any] = {}
    for name, traffic in TRAFFIC.items():
        if traffic is None:
            store.write_bytes(traffic_key(MODEL), b"{}")
        else:
            store.write_bytes(traffic_key(MODEL), dump_traffic(make_traffic(traffic)))
        fn = ModelFunction(Settings(store=env.store, model=MODEL, label_ttl=86400))
        fn.http_handler(http_event("/predict", predict_body(seed=1)), LambdaContext())  # reads traffic.json now
        fns[name] = fn
    store.write_bytes(traffic_key(MODEL), b"{}")
    return fns


def run(quick: bool) -> dict[str, Any]:
    from modelfn.http import create_app

    env = get_env()
    n, rounds = (300, 3) if quick else (3000, 10)
    body = predict_body(seed=1)
    headers = {"x-user-id": "user-42"}
    with env.activated(MODELFN_STORE=env.store), contextlib.redirect_stdout(open(os.devnull, "w")):
        fns = _built(env)
        lam = lambda_calls(fns, dict.fromkeys(fns, http_event("/predict", body, headers=headers)), "traffic")
        invoke = _measure(lam, n, rounds, None)
        loop = asyncio.new_event_loop()
        apps = {k: create_app(fn.registry, default_model=MODEL, hooks={MODEL: fn.hooks}) for k, fn in fns.items()}
        for k, app in apps.items():  # the app's service shares the function's registry, not its traffic view
            app.state.service.plane.traffic = fns[k].service.plane.traffic
        raw = [(b"content-type", b"application/json"), (b"x-user-id", b"user-42")]
        server = _measure({k: _asgi_call(app, body.encode(), raw) for k, app in apps.items()}, n, rounds, loop)
        loop.close()
        shadowed = fns["shadow"].service.shadows.snapshot().get(MODEL, {})
    summary = []
    for variant in ("split", "shadow"):
        for where, results, label in (("warm invoke", invoke, "lambda"), ("server ASGI call", server, "server")):
            summary.append(
                summary_row(
                    "traffic",
                    f"{where} p50, {variant} vs no traffic.json",
                    results[variant]["p50"],
                    results["plain"]["p50"],
                    "µs",
                    baseline_name="no traffic.json",
                    ratio_label=f"{variant} / plain ({label})",
                )
            )
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {"iterations": n, "rounds": rounds, "route": "POST /predict, one row of 256 FP32 features"},
        "results_us": {"lambda_invoke": invoke, "server_asgi_call": server},
        "shadow_comparison": shadowed,
        "summary": summary,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=2))
