"""Figure 5: server throughput on one core, against that core's limit, the seed-style app and (`make bench PEERS=1`,
or BENCH_PEERS=1) KServe, MLServer and BentoML.

Pinned: every server runs on CPU 1 (taskset), the load generator (wrk -t1, else our asyncio client) on CPU 0, so
each server has exactly one core and onnxruntime one thread. Unpinned: no taskset and each server's defaults
(onnxruntime's spin-waiting threads included where the server leaves them on), generator unpinned too: what a user
who starts them on this machine gets. Every server is started first (an idle server costs nothing), then each round
measures each one for the same duration at 32 connections, the order rotated every round, so a noisy neighbour hits
all alike; figures are medians over rounds and every ratio is the median of the per-round ratios.

The core's limit, measured in the same rounds: the trivial app (bench/baselines/trivial_app.py: reads the body,
answers fixed JSON) under the faster of granian and uvicorn gives the HTTP side per request; `session.run` of one
row and the codec floor (orjson decode of the request, numpy, orjson encode of the answer) are timed in a process
pinned to the server's CPU. limit req/s = 1 / (1 / trivial req/s + run + codec). Each server's CPU per request
comes from its process tree's CPU time over the requests answered; RSS per process and start-up time (process start
to its ready route answering) are recorded too."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import servers as srv
from bench.common import RESULTS_DIR, ROOT, get_env, predict_body, summary_row, wrk_version
from bench.loadgen import load, pinned

NAME = "server_throughput"
TITLE = "Servers on one pinned core: modelfn serve against the core's limit, the seed-style app and the peers"
CONNECTIONS = 32
SERVER_CPU, LOAD_CPU = 1, 0

GRANIAN = "modelfn serve (granian)"
UVICORN = "modelfn serve (uvicorn)"
V2 = "modelfn serve (granian), v2 infer"
SEED = "seed-style app (FastAPI, uvicorn)"
TRIVIAL_G = "trivial app (granian)"
TRIVIAL_U = "trivial app (uvicorn)"
PEER_TARGETS = {"kserve": 10.0, "mlserver": 10.0, "bentoml": 20.0}


def peers_wanted() -> bool:
    return os.environ.get("BENCH_PEERS", "") not in ("", "0")


def _cpus() -> tuple[int | None, int | None]:
    """(server CPU, load CPU): 1 and 0 when this process may use both, else no pinning."""
    have = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return (SERVER_CPU, LOAD_CPU) if {SERVER_CPU, LOAD_CPU} <= have and shutil.which("taskset") else (None, None)


def _plan(peers: list[str]) -> tuple[list[Callable[[], list[srv.Server]]], list[Callable[[], list[srv.Server]]]]:
    """Starters of the pinned and the unpinned servers (a starter may return views of one process: two paths)."""
    env = get_env()
    cpu, _ = _cpus()
    v2_body = _v2_body()

    def modelfn_pair(label: str, server: str) -> list[srv.Server]:
        """One process, two requests: /predict and the v2 JSON the peers get (the view is not stopped twice)."""
        s = srv.modelfn(env, label, server=server, cpu=cpu)
        return [s, replace(s, label=f"{label}, v2 infer", path="/v2/models/mlp/infer", body=v2_body, log=None)]

    from bench.peers import PEERS

    pinned_plan: list[Callable[[], list[srv.Server]]] = [
        lambda: [srv.trivial(env, TRIVIAL_G, "granian", cpu)],
        lambda: [srv.trivial(env, TRIVIAL_U, "uvicorn", cpu)],
        lambda: modelfn_pair(GRANIAN, "granian"),
        lambda: [srv.modelfn(env, UVICORN, server="uvicorn", cpu=cpu)],
        lambda: [srv.seed(env, SEED, cpu)],
    ]
    unpinned_plan: list[Callable[[], list[srv.Server]]] = [
        lambda: [srv.modelfn(env, "modelfn serve (granian), unpinned", cpu=None)],
        lambda: [srv.modelfn(env, "modelfn serve --workers 2 (granian), unpinned", workers=2, cpu=None)],
        lambda: [srv.seed(env, "seed-style app, unpinned")],
    ]
    for name in peers:
        label = PEERS[name].label
        pinned_plan.append(lambda n=name, lb=label: [srv.peer(env, n, lb, cpu)])  # type: ignore[misc]
        unpinned_plan.append(lambda n=name, lb=label: [srv.peer(env, n, f"{lb}, unpinned")])  # type: ignore[misc]
    return pinned_plan, unpinned_plan


def _v2_body() -> str:
    features = json.loads(predict_body(seed=5))["features"]
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(features)], "data": features}]}
    )


def _check(server: srv.Server) -> list[float]:
    """The answer's probabilities (every server must agree on them)."""
    import httpx

    r = httpx.post(server.url, content=server.body, headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    data = r.json()
    if "outputs" in data:
        return [float(v) for v in next(o for o in data["outputs"] if o["name"] == "probabilities")["data"]]
    if "predictions" in data and data["predictions"] and "probabilities" in data["predictions"][0]:
        return [float(v) for v in data["predictions"][0]["probabilities"]]
    return []


def point(server: srv.Server, seconds: float, load_cpu: int | None) -> dict[str, Any]:
    """One measurement at 32 connections, with the server's CPU time over it."""
    before = server.cpu_seconds()
    result = load(server.url, server.body, CONNECTIONS, seconds, cpu=load_cpu)
    used = server.cpu_seconds() - before
    requests = result.get("requests") or 0
    result["cpu_us_per_request"] = round(used / requests * 1e6, 1) if requests else None
    result["cpu_cores"] = round(used / seconds, 2)
    return result


def limits(model: Path, cpu: int | None, seconds: float = 1.0) -> dict[str, float]:
    """session.run of one row and the codec floor, in a fresh process on the server's CPU (microseconds)."""
    code = "from bench.server_throughput import limits_main; limits_main()"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LIMIT_MODEL=str(model), LIMIT_SECONDS=str(seconds))
    out = subprocess.run(
        [*pinned(cpu), sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def limits_main() -> None:
    """(Run by `limits` in its own process.) Median µs of session.run and of decode + encode, interleaved."""
    import time

    import numpy as np
    import onnxruntime as ort
    import orjson

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.environ["LIMIT_MODEL"], options, providers=["CPUExecutionProvider"])
    body = predict_body(seed=5).encode()
    x = np.asarray(orjson.loads(body)["features"], dtype=np.float32)[None]
    logits, probabilities = session.run(None, {"input": x})

    def codec() -> bytes:
        row = np.asarray(orjson.loads(body)["features"], dtype=np.float32)[None]
        assert row.shape == x.shape
        answer = {"predictions": [{"logits": logits[0], "probabilities": probabilities[0]}]}
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    runs: list[float] = []
    codecs: list[float] = []
    deadline = time.perf_counter() + float(os.environ.get("LIMIT_SECONDS", "1"))
    while time.perf_counter() < deadline or len(runs) < 50:
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        t1 = time.perf_counter()
        codec()
        t2 = time.perf_counter()
        runs.append(t1 - t0)
        codecs.append(t2 - t1)
    print(json.dumps({"session_run_us": statistics.median(runs) * 1e6, "codec_us": statistics.median(codecs) * 1e6}))


def _rounds(
    group: list[srv.Server], rounds: int, seconds: float, load_cpu: int | None, model: Path | None, cpu: int | None
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, float]]]:
    """`rounds` rounds over every server of the group (order rotated each round), and the limits each round."""
    points: dict[str, list[dict[str, Any]]] = {s.label: [] for s in group}
    floors: list[dict[str, float]] = []
    for r in range(rounds):
        order = group[r % len(group) :] + group[: r % len(group)]
        for server in order:
            points[server.label].append(point(server, seconds, load_cpu))
        if model is not None:
            floors.append(limits(model, cpu))
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1]['requests_per_second']:.0f}" for k, v in points.items()),
            file=sys.stderr,
            flush=True,
        )
    return points, floors


def _median(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 3) if vs else None


def _summarise(points: dict[str, list[dict[str, Any]]], group: list[srv.Server]) -> dict[str, dict[str, Any]]:
    by = {s.label: s for s in group}
    out: dict[str, dict[str, Any]] = {}
    for label, ps in points.items():
        server = by[label]
        out[label] = {
            "requests_per_second": _median([p["requests_per_second"] for p in ps]),
            "p50_ms": _median([p["latency_ms"].get("p50") for p in ps]),
            "p99_ms": _median([p["latency_ms"].get("p99") for p in ps]),
            "cpu_us_per_request": _median([p["cpu_us_per_request"] for p in ps]),
            "cpu_cores": _median([p["cpu_cores"] for p in ps]),
            "errors": sum(p.get("non_2xx", 0) + p.get("socket_errors", 0) for p in ps),
            "startup_s": server.startup_s,
            "rss_mb": server.rss_mb(),
            "pinned_cpu": server.cpu,
            "path": server.path,
            "rounds": ps,
        }
    return out


def _ratio_per_round(points: dict[str, list[dict[str, Any]]], a: str, b: str) -> list[float]:
    return [
        pa["requests_per_second"] / pb["requests_per_second"]
        for pa, pb in zip(points[a], points[b], strict=True)
        if pb["requests_per_second"]
    ]


def _limit_per_round(points: dict[str, list[dict[str, Any]]], floors: list[dict[str, float]]) -> list[float]:
    """The core's limit each round: the faster trivial app that round plus session.run and the codec."""
    out = []
    for i, f in enumerate(floors):
        trivial = max(points[TRIVIAL_G][i]["requests_per_second"], points[TRIVIAL_U][i]["requests_per_second"])
        out.append(1e6 / (1e6 / trivial + f["session_run_us"] + f["codec_us"]))
    return out


def run(quick: bool, *, seconds: float | None = None, peers: list[str] | None = None) -> dict[str, Any]:
    from bench.peers import PEERS, installed

    env = get_env()
    duration = seconds or (2.0 if quick else 6.0)
    rounds = 1 if quick else 3
    wanted = peers if peers is not None else ([n for n in PEERS if installed(n)] if peers_wanted() else [])
    cpu, load_cpu = _cpus()
    pinned_plan, unpinned_plan = _plan(wanted)
    results: dict[str, Any] = {}
    answers: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for kind, plan, where in (("pinned", pinned_plan, cpu), ("unpinned", unpinned_plan, None)):
        group: list[srv.Server] = []
        try:
            for start in plan:
                group.extend(start())
            for s in group:
                answers[s.label] = _check(s)
                load(s.url, s.body, CONNECTIONS, 1.0 if quick else 2.0, cpu=load_cpu if where is not None else None)
            model = env.mlp_int8 if kind == "pinned" else None
            points, floors = _rounds(group, rounds, duration, load_cpu if where is not None else None, model, where)
            results[kind] = _summarise(points, group)  # while they run: RSS is read from /proc
        finally:
            for s in group:
                if s.log is not None:
                    srv.stop(s)
        if kind == "pinned":
            ratios["limit"] = _limit_per_round(points, floors)
            results["limits"] = floors
            for label in points:
                if label != GRANIAN:
                    ratios[label] = _ratio_per_round(points, GRANIAN, label)
            ratios["modelfn / limit"] = [
                m["requests_per_second"] / lim for m, lim in zip(points[GRANIAN], ratios["limit"], strict=True)
            ]
    result = _result(quick, duration, rounds, results, ratios, answers, wanted)
    if not quick:  # a smoke run leaves the committed figures alone
        if wanted:
            write_peers(result)
        chart(result, RESULTS_DIR / f"{NAME}.png")
        (RESULTS_DIR / f"{NAME}.md").write_text(markdown(result))
    return result


def _result(
    quick: bool,
    duration: float,
    rounds: int,
    results: dict[str, Any],
    ratios: dict[str, list[float]],
    answers: dict[str, list[float]],
    peers: list[str],
) -> dict[str, Any]:
    import numpy as np

    from bench.peers import PEERS

    ref = answers.get(SEED) or next(iter(answers.values()))
    agree = {k: bool(v) and bool(np.allclose(v, ref, atol=1e-4)) for k, v in answers.items() if v}
    pinned_r = results["pinned"]
    limit = _median(ratios["limit"])
    limits_us = {k: _median([f[k] for f in results["limits"]]) for k in ("session_run_us", "codec_us")}
    summary = [
        summary_row(
            "5 server",
            "req/s, one core, vs the core's limit",
            pinned_r[GRANIAN]["requests_per_second"],
            limit,
            "req/s",
            baseline_name="trivial app + session.run + codec",
            op=">=",
            target=0.8,
            ratio=_median(ratios["modelfn / limit"]),
        ),
        summary_row(
            "5 server",
            "req/s, one core, granian vs uvicorn",
            pinned_r[GRANIAN]["requests_per_second"],
            pinned_r[UVICORN]["requests_per_second"],
            "req/s",
            baseline_name="modelfn serve --server uvicorn",
            ratio=_median(ratios[UVICORN]),
        ),
        summary_row(
            "5 server",
            "req/s at 32 connections, one core",
            pinned_r[GRANIAN]["requests_per_second"],
            pinned_r[SEED]["requests_per_second"],
            "req/s",
            baseline_name="seed app, uvicorn",
            op=">=",
            target=4.0,
            ratio=_median(ratios[SEED]),
        ),
        summary_row(
            "5 server",
            "CPU µs/request, one core",
            pinned_r[GRANIAN]["cpu_us_per_request"],
            pinned_r[SEED]["cpu_us_per_request"],
            "µs",
            baseline_name="seed app, uvicorn",
        ),
    ]
    for name in peers:
        label = PEERS[name].label
        summary.append(
            summary_row(
                "5 server",
                f"req/s at 32 connections, one core, vs {label}",
                pinned_r[V2]["requests_per_second"],
                pinned_r[label]["requests_per_second"],
                "req/s",
                baseline_name=label,
                op=">=",
                target=PEER_TARGETS[name],
                ratio=_median(_ratio_of(pinned_r, V2, label)),
            ),
        )
    summary += cpu_rows(pinned_r, [PEERS[n].label for n in peers])
    unpinned = results["unpinned"]
    summary.append(
        summary_row(
            "5 server",
            "req/s at 32 connections, unpinned (2 cores)",
            unpinned["modelfn serve (granian), unpinned"]["requests_per_second"],
            unpinned["seed-style app, unpinned"]["requests_per_second"],
            "req/s",
            baseline_name="seed app, uvicorn, unpinned",
        ),
    )
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "seconds_per_point": duration,
            "rounds": rounds,
            "connections": CONNECTIONS,
            "load_generator": f"{wrk_version()} (-t1)" if shutil.which("wrk") else "python-asyncio",
            "pinning": f"servers on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU} (taskset)",
            "request": 'POST /predict {"features": [256 floats]}; KServe v2 JSON (one row) for the v2 servers',
            "peers": peers,
        },
        "limits_us": limits_us,
        "limit_requests_per_second": limit,
        "ratios": {k: [round(v, 3) for v in vs] for k, vs in ratios.items()},
        "servers": results,
        "answers_agree": agree,
        "summary": summary,
    }


def cpu_rows(pinned_r: dict[str, Any], peer_labels: list[str]) -> list[dict[str, Any]]:
    """CPU per request against each peer (modelfn on the same v2 request): the comparison a busy machine distorts
    least, since it does not depend on the share of the core each server got."""
    ours = pinned_r[V2]["cpu_us_per_request"]
    return [
        summary_row(
            "5 server",
            f"CPU µs/request, one core, vs {label}",
            ours,
            pinned_r[label]["cpu_us_per_request"],
            "µs",
            baseline_name=label,
        )
        for label in peer_labels
    ]


def _ratio_of(rows: dict[str, Any], a: str, b: str) -> list[float | None]:
    per_a = [p["requests_per_second"] for p in rows[a]["rounds"]]
    per_b = [p["requests_per_second"] for p in rows[b]["rounds"]]
    return [x / y if y else None for x, y in zip(per_a, per_b, strict=True)]


def write_peers(result: dict[str, Any], results_dir: Path = RESULTS_DIR) -> None:
    """bench/results/peers.json and peers.png: the peers' rows, pinned and unpinned, beside modelfn's and the
    limits, from the same run."""
    from bench.peers import describe

    keep = ("requests_per_second", "p50_ms", "p99_ms", "cpu_us_per_request", "cpu_cores", "startup_s", "rss_mb")
    table = {
        kind: {label: {k: row[k] for k in keep} for label, row in result["servers"][kind].items()}
        for kind in ("pinned", "unpinned")
    }
    peers = {
        "name": "peers",
        "config": result["config"],
        "peers": describe(),
        "limit_requests_per_second": result["limit_requests_per_second"],
        "limits_us": result["limits_us"],
        "servers": table,
        "summary": [r for r in result["summary"] if " vs " in r["metric"]],
    }
    (results_dir / "peers.json").write_text(json.dumps(peers, indent=2) + "\n")
    chart(result, results_dir / "peers.png")


def chart(result: dict[str, Any], path: Path) -> None:
    """req/s and CPU µs per request of every server, pinned and unpinned, the core's limit as a line."""
    from bench.report import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, kind in zip(axes, ("pinned", "unpinned"), strict=True):
        rows = result["servers"][kind]
        labels = list(rows)
        values = [rows[k]["requests_per_second"] or 0 for k in labels]
        colors = ["#2a7ab9" if k.startswith("modelfn") else "#777777" if "trivial" in k else "#b0b0b0" for k in labels]
        bars = ax.barh(range(len(labels)), values, color=colors)
        ax.set_yticks(
            range(len(labels)), [f"{k} ({rows[k]['cpu_us_per_request'] or 0:.0f} µs CPU)" for k in labels], fontsize=7
        )
        ax.invert_yaxis()
        for b, v in zip(bars, values, strict=True):
            ax.annotate(f"{v:,.0f}", (v, b.get_y() + b.get_height() / 2), va="center", fontsize=7)
        if kind == "pinned" and result.get("limit_requests_per_second"):
            ax.axvline(result["limit_requests_per_second"], color="k", ls="--", lw=1)
            ax.annotate("core's limit", (result["limit_requests_per_second"], len(labels) - 0.5), fontsize=7)
        title = "one pinned core each (load on the other)" if kind == "pinned" else "unpinned, 2 cores, defaults"
        ax.set_title(f"req/s at {CONNECTIONS} connections, {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile(seconds: float = 6.0) -> str:
    """py-spy over `modelfn serve` (pinned like the figure) under 32 connections: where a request's time goes."""
    from bench.profiling import collapse_report

    env = get_env()
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(spy):
        return "py-spy is not installed: no server-side profile"
    cpu, load_cpu = _cpus()
    server = srv.modelfn(env, GRANIAN, cpu=cpu)
    out = env.workdir / "server.pyspy.txt"
    try:
        load(server.url, server.body, CONNECTIONS, 1.0, cpu=load_cpu)
        worker = (srv.descendants(server.proc.pid) or [server.proc.pid])[0]
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(worker), "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load(server.url, server.body, CONNECTIONS, seconds + 1, cpu=load_cpu)
        spy_proc.wait(timeout=60)
    finally:
        srv.stop(server)
    return collapse_report(out, top=25) if out.exists() else "py-spy produced no profile"


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.server_throughput [--quick] [--peers] [--seconds S]`: this figure alone, written to
    bench/results/server_throughput.json (peers.json and the charts too on a full run), the rest left untouched."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.server_throughput")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--peers", action="store_true", help="also the installed peers (python -m bench.peers install)")
    p.add_argument("--seconds", type=float)
    a = p.parse_args(argv)
    from bench.peers import PEERS, installed

    peers = [n for n in PEERS if installed(n)] if a.peers or peers_wanted() else []
    result = run(a.quick, seconds=a.seconds, peers=peers)
    if not a.quick:
        (RESULTS_DIR / f"{NAME}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (RESULTS_DIR / f"{NAME}.md").write_text(markdown(result))
    for row in result["summary"]:
        print(
            f"{row['metric']}: {row['modelfn']} vs {row['baseline']} ({row['baseline_name']}): {row['ratio']}x "
            f"target {row['target']} met {row['met']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())


def explain(res: dict[str, Any], profile: str) -> str:
    """The note for a missed limit target: where the CPU per request goes against the core's limit, from this run's
    figures, and the profile (bench.analysis can call it for this figure)."""
    pinned_r = res["servers"]["pinned"]
    trivial = min(pinned_r[TRIVIAL_G]["cpu_us_per_request"] or 0.0, pinned_r[TRIVIAL_U]["cpu_us_per_request"] or 0.0)
    run_us, codec_us = res["limits_us"]["session_run_us"], res["limits_us"]["codec_us"]
    ours = pinned_r[GRANIAN]["cpu_us_per_request"] or 0.0
    floor = trivial + run_us + codec_us
    return (
        f"CPU per request on one core: modelfn serve {ours:.0f} µs against a floor of {floor:.0f} µs (trivial app "
        f"{trivial:.0f}, session.run {run_us:.0f}, codec {codec_us:.0f}): {ours - floor:.0f} µs are modelfn's own "
        "Python between the server and the model. In process (the ASGI call alone, cProfile and A/B timings): the "
        "observers (statistics and Prometheus metrics, ~19 % of the call), decoding and validating /predict "
        "(~17 %), the model's inputs validated a second time in LoadedModel.predict (~7 %), target and model "
        "lookup (~10 %), the ASGI adapter (~10 %). What would close it: observers that add to plain counters read "
        "at scrape time, one validation per request, and a route-and-model cache for the hot routes.\n\n"
        f"py-spy over `modelfn serve`:\n\n{profile[:6000]}"
    )


def markdown(result: dict[str, Any]) -> str:
    """Every server's row, pinned and unpinned: req/s, p50, p99, CPU per request, cores used, start-up, RSS."""
    cfg = result["config"]
    lines = [
        " ".join(
            [
                f"Servers at {CONNECTIONS} connections, one-row requests ({cfg['load_generator']},",
                f"{cfg['seconds_per_point']:g} s per point, median of {cfg['rounds']} rotated rounds).",
                f"Pinned: {cfg['pinning']}. Unpinned: no taskset, each server's defaults.",
                f"The core's limit (trivial app + session.run + codec): {result['limit_requests_per_second']:,.0f}",
                f"req/s (session.run {result['limits_us']['session_run_us']:.0f} µs,",
                f"codec {result['limits_us']['codec_us']:.0f} µs).",
            ]
        ),
        "",
        "| | server | req/s | p50 ms | p99 ms | CPU µs/request | cores used | start-up s | RSS MiB (per process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind in ("pinned", "unpinned"):
        for label, row in result["servers"][kind].items():
            rss = " + ".join(f"{v:.0f}" for v in row["rss_mb"].values())
            lines.append(
                f"| {kind} | {label} | {row['requests_per_second']:,.0f} | {row['p50_ms']} | {row['p99_ms']} "
                f"| {row['cpu_us_per_request']} | {row['cpu_cores']} | {row['startup_s']} | {rss} |"
            )
    return "\n".join(lines) + "\n"
