"""Dynamic batching on one core: off, on (adaptive, the default: joined only where it measured worth it at start)
and always (`--batching-always`), side by side, for the tiny int8 MLP and for models whose run costs more.

    .venv/bin/python -m bench.batching [--quick] [--seconds S] [--rounds R] [--loadgen auto|wrk|python]

The models are built by code and published to a local-folder store in a temporary directory: the examples (mlp v2,
the int8 MLP 256-1024x3-10), fp32 MLPs 256-h-h-10 for h in WIDTHS, and `big`, the fp32 MLP 1024-4096-4096-1024
(session.run dominates). Three `modelfn serve` processes serve them all, one per mode, each pinned to CPU 1 (taskset)
while the load generator runs on CPU 0, so every server has exactly one core. Each is driven with one-row KServe v2
JSON requests by a closed-loop generator (wrk when on PATH, else our asyncio client): N keep-alive connections, each
sending its next request when the previous answer is in. Each point is measured in R rounds, the order of the modes
rotated every round (a noisy neighbour hits all alike); the round with the median requests/s is reported and every
ratio is the median of the per-round ratios. The int8 MLP is measured at 1, 8 and 32 connections, the others at 32.
The cross-over: the single-row run time (from the adaptive server's start-up measurement, GET /health) at which
joining starts to beat batching off. Writes bench/results/batching.json, batching.md and batching.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from modelfn_tools.localserver import free_port

from bench.loadgen import load, pinned
from modelfn.batching.costs import MARGIN

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONCURRENCY = (1, 8, 32)
MODES = ("off", "on", "always")
FLAGS = {"off": "--no-batching", "on": "--batching", "always": "--batching-always"}
WIDTHS = (256, 1024, 2048)
"""Hidden widths of the fp32 MLPs 256-h-h-10 between the int8 MLP and `big`: the sweep that finds the cross-over."""
BIG = [1024, 4096, 4096, 1024]
SERVER_CPU, LOAD_CPU = 1, 0


# ---- servers -------------------------------------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"modelfn serve exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Server:
    """`modelfn serve` with batching off, on or always, as a process of its own on a free loopback port, pinned to
    `cpu` when given."""

    def __init__(
        self,
        store: str,
        workdir: Path,
        mode: str,
        models: list[str],
        max_batch_size: int,
        max_wait_ms: float,
        cpu: int | None,
    ) -> None:
        self.mode = mode
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", store, "--models", ",".join(models)]
        argv += ["--port", str(self.port), FLAGS[mode], "--max-batch-size", str(max_batch_size)]
        argv += ["--max-batch-wait-ms", str(max_wait_ms)]
        self.log = (workdir / f"serve-{mode}.log").open("w")
        env = dict(os.environ, MODELFN_CACHE_DIR=str(workdir / f"cache-{mode}"))
        self.proc = subprocess.Popen(
            [*pinned(cpu), *argv], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            for name in models:
                wait_ready(f"{self.base}/v2/models/{name}/ready", self.proc)
        except BaseException:
            self.stop()
            raise

    def health(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(f"{self.base}/health", timeout=10).json())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- models -------------------------------------------------------------------------------------------------------
def mlp(path: Path, widths: list[int], seed: int = 0) -> Path:
    """A fp32 MLP made by code, [N, widths[0]] -> [N, widths[-1]], ReLU between layers (input x, output y):
    [1024, 4096, 4096, 1024] is the model whose session.run dominates a request."""
    import itertools

    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    last = len(widths) - 2
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"))
        out = "y" if i == last else f"h{i}"
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [out if i == last else f"m{i}"]))
        if i != last:
            nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        x = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


# ---- the figure --------------------------------------------------------------------------------------------------
def _body(model: str, width: int) -> str:
    """The example MLP's input is `input`; the MLPs built here take `x`."""
    x = np.random.default_rng(0).standard_normal(width).astype(np.float32)
    name = "input" if model == "mlp" else "x"
    return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [1, width], "data": x.tolist()}]})


def trial(server: Server, path: str, body: str, connections: int, seconds: float, gen: str) -> dict[str, Any]:
    """One closed-loop run; for batching on or always, the mean rows per session.run (from GET /health)."""
    before = server.health().get("batching")
    r = load(server.base + path, body, connections, seconds, prefer_wrk=gen == "wrk", cpu=LOAD_CPU if _pin() else None)
    result = {
        "rps": r["requests_per_second"],
        "requests": r["requests"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        "errors": r.get("non_2xx", 0) + r.get("socket_errors", 0),
    }
    if before is not None:
        after = server.health()["batching"]
        runs = after["runs"] - before["runs"]
        result["mean_batch_rows"] = round((after["rows"] - before["rows"]) / max(runs, 1), 2)
    return result


def _pin() -> bool:
    have = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return {SERVER_CPU, LOAD_CPU} <= have and shutil.which("taskset") is not None


def _models(workdir: Path, store: str, quick: bool) -> dict[str, dict[str, Any]]:
    """Publish the sweep's models; name -> {path, body, description}."""
    from modelfn_tools.examples import publish_examples
    from modelfn_tools.publish import publish

    publish_examples(store, workdir / "build")
    models: dict[str, dict[str, Any]] = {
        "mlp": {"version": 2, "width": 256, "about": "int8 MLP 256-1024x3-10 (the example)"}
    }
    for h in WIDTHS[:1] if quick else WIDTHS:
        name = f"mlp{h}"
        publish(mlp(workdir / f"{name}.onnx", [256, h, h, 10]), store, name, progress=False)
        models[name] = {"version": 1, "width": 256, "about": f"fp32 MLP 256-{h}-{h}-10"}
    publish(mlp(workdir / "big.onnx", BIG), store, "big", progress=False)
    models["big"] = {"version": 1, "width": BIG[0], "about": "fp32 MLP " + "-".join(map(str, BIG))}
    for name, m in models.items():
        m["path"] = f"/v2/models/{name}/versions/{m['version']}/infer"
        m["body"] = _body(name, m["width"])
    return models


def measure(
    seconds: float, warmup: float, loadgen: str, max_batch_size: int, max_wait_ms: float, rounds: int, quick: bool
) -> dict[str, Any]:
    """Every mode's server up at once (an idle one costs nothing); each (model, connections) point measured
    `rounds` times, the mode order rotated each round."""
    points: list[dict[str, Any]] = []
    costs: dict[str, Any] = {}
    cpu = SERVER_CPU if _pin() else None
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-batching-") as tmp:
        workdir = Path(tmp)
        store = str(workdir / "store")
        models = _models(workdir, store, quick)
        servers: dict[str, Server] = {}
        try:
            for mode in MODES:
                servers[mode] = Server(store, workdir, mode, list(models), max_batch_size, max_wait_ms, cpu)
            for name, m in models.items():
                for connections in CONCURRENCY if name == "mlp" else (32,):
                    for server in servers.values():  # warm: prepares each version's batch plan and costs
                        trial(server, m["path"], m["body"], connections, warmup, loadgen)
                    trials: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
                    for r in range(rounds):
                        for mode in MODES[r % 3 :] + MODES[: r % 3]:
                            trials[mode].append(
                                trial(servers[mode], m["path"], m["body"], connections, seconds, loadgen)
                            )
                    points.extend(_points(name, connections, trials))
            info = servers["on"].health().get("batching", {}).get("models", {})
            costs = {key.split("/")[0]: v for key, v in info.items()}
        finally:
            for server in servers.values():
                server.stop()
    import onnxruntime

    return {
        "figure": "dynamic batching off / on (adaptive) / always, one core, one-row KServe v2 JSON requests",
        "models": {n: {k: v for k, v in m.items() if k != "body"} for n, m in models.items()},
        "loadgen": loadgen,
        "pinned": cpu is not None,
        "seconds_per_point": seconds,
        "rounds": rounds,
        "warmup_seconds_per_point": warmup,
        "max_batch_size": max_batch_size,
        "max_batch_wait_ms": max_wait_ms,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
        },
        "adaptive": costs,
        "points": points,
    }


def _points(model: str, connections: int, trials: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each mode's median round, with its per-round ratio to batching off."""
    out = []
    for mode, results in trials.items():
        ranked = sorted(results, key=lambda t: t["rps"])
        point = {"model": model, "mode": mode, "connections": connections, **ranked[len(ranked) // 2]}
        point["rounds_rps"] = [t["rps"] for t in results]
        point["vs_off"] = round(
            statistics.median(t["rps"] / o["rps"] for t, o in zip(results, trials["off"], strict=True) if o["rps"]), 3
        )
        out.append(point)
        print(_line(point), file=sys.stderr, flush=True)
    return out


def crossover(result: dict[str, Any]) -> dict[str, Any]:
    """Per model at 32 connections: its single-row run (µs, the adaptive server's measurement), what always joining
    gave against off, and what adaptive chose; the cross-over lies between the costliest model joining lost on and
    the cheapest it won on."""
    by = {(p["model"], p["mode"], p["connections"]): p for p in result["points"]}
    rows = []
    for name in result["models"]:
        c = result["adaptive"].get(name, {}).get("costs", {})
        rows.append(
            {
                "model": name,
                "about": result["models"][name]["about"],
                "single_run_us": c.get("single_run_us"),
                "saving_us": c.get("saving_us"),
                "overhead_us": c.get("overhead_us"),
                "adaptive_joins": c.get("joined"),
                "always_vs_off": by[(name, "always", 32)]["vs_off"],
                "on_vs_off": by[(name, "on", 32)]["vs_off"],
                "mean_batch_rows_always": by[(name, "always", 32)].get("mean_batch_rows"),
            }
        )
    rows.sort(key=lambda r: r["single_run_us"] or 0.0)
    lost = [r["single_run_us"] for r in rows if r["always_vs_off"] < 1.0 and r["single_run_us"]]
    won = [r["single_run_us"] for r in rows if r["always_vs_off"] >= 1.0 and r["single_run_us"]]
    return {
        "models": rows,
        "joining_loses_up_to_us": max(lost, default=None),
        "joining_wins_from_us": min(won, default=None),
    }


def run(
    quick: bool = False,
    seconds: float | None = None,
    loadgen: str = "auto",
    max_batch_size: int = 32,
    max_wait_ms: float = 2.0,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The figure, as `python -m bench` calls it: the measurements, the cross-over and the summary rows."""
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    result = measure(
        seconds or (1.0 if quick else 5.0),
        0.5 if quick else 1.0,
        loadgen,
        max_batch_size,
        max_wait_ms,
        rounds or (1 if quick else 3),
        quick,
    )
    result["name"] = "batching"
    result["quick"] = quick
    result["crossover"] = crossover(result)
    result["summary"] = summary(result)
    if not quick:
        chart(result, RESULTS / "batching.png")
    return result


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.common import summary_row

    by = {(p["model"], p["mode"], p["connections"]): p for p in result["points"]}
    rows = []
    for c in CONCURRENCY:
        on, off = by[("mlp", "on", c)], by[("mlp", "off", c)]
        rows.append(
            summary_row(
                "batching",
                f"int8 MLP req/s, {c} connection{'s' if c > 1 else ''}, one core, on",
                on["rps"],
                off["rps"],
                "req/s",
                baseline_name="batching off",
                ratio=on["vs_off"],
                op=">=" if c == 32 else None,
                target=1.0 if c == 32 else None,
            )
        )
    on, off = by[("big", "on", 32)], by[("big", "off", 32)]
    rows.append(
        summary_row(
            "batching",
            "MLP 1024-4096-4096-1024 req/s, 32 connections, one core, on",
            on["rps"],
            off["rps"],
            "req/s",
            baseline_name="batching off",
            ratio=on["vs_off"],
            op=">=",
            target=1.5,
        )
    )
    cross = result["crossover"]
    rows.append(
        summary_row(
            "batching",
            "cross-over: single-row run (µs) from which joining wins",
            cross["joining_wins_from_us"],
            cross["joining_loses_up_to_us"],
            "µs",
            baseline_name="costliest run it lost on",
        )
    )
    return rows


def _line(p: dict[str, Any]) -> str:
    extra = f"  mean batch {p['mean_batch_rows']} rows" if "mean_batch_rows" in p else ""
    return (
        f"{p['model']:<8} batching {p['mode']:<6} c={p['connections']:<3} {p['rps']:>8.1f} req/s "
        f"({p['vs_off']:.2f}x off)  p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms  errors {p['errors']}{extra}"
    )


def markdown(result: dict[str, Any]) -> str:
    by = {(p["model"], p["mode"], p["connections"]): p for p in result["points"]}
    pinned_text = "one core each (server CPU 1, load CPU 0)" if result.get("pinned") else "unpinned"
    lines = [
        f"Dynamic batching, `modelfn serve` {pinned_text}, one-row v2 JSON requests ({result['loadgen']}, "
        f"{result['seconds_per_point']:g} s per point, median of {result['rounds']} rotated rounds, max batch "
        f"{result['max_batch_size']} rows / {result['max_batch_wait_ms']:g} ms). on = adaptive (the default), "
        "always = `--batching-always`; ratios are medians of per-round ratios to off.",
        "",
        "| model | connections | off req/s | on req/s (× off) | always req/s (× off) | off p99 ms | on p99 ms "
        "| always p99 ms | always: rows/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, mode, c), off in by.items():
        if mode != "off":
            continue
        on, always = by[(model, "on", c)], by[(model, "always", c)]
        lines.append(
            f"| {model} | {c} | {off['rps']:.0f} | {on['rps']:.0f} ({on['vs_off']:.2f}×) | {always['rps']:.0f} "
            f"({always['vs_off']:.2f}×) | {off['p99_ms']:.2f} | {on['p99_ms']:.2f} | {always['p99_ms']:.2f} "
            f"| {always.get('mean_batch_rows', '-')} |"
        )
    cross = result.get("crossover", {})
    lines += [
        "",
        "| model | single-row run µs | joined saving µs | batcher cost µs | adaptive joins | always × off |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in cross.get("models", []):
        lines.append(
            f"| {r['model']} ({r['about']}) | {r['single_run_us']} | {r['saving_us']} | {r['overhead_us']} "
            f"| {'yes' if r['adaptive_joins'] else 'no'} | {r['always_vs_off']:.2f}× |"
        )
    lines += [
        "",
        f"Cross-over: joining lost up to a single-row run of {cross.get('joining_loses_up_to_us')} µs and won from "
        f"{cross.get('joining_wins_from_us')} µs. Adaptive compares the saving of a 16-row joined run with its cost "
        f"(16 round trips to the worker thread), both measured at start, and joins where the saving is at least "
        f"{MARGIN:g}× the cost.",
    ]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    """Requests/s against batching off per model (at 32 connections), on and always."""
    from bench.report import _plt

    plt = _plt()
    rows = result["crossover"]["models"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["on_vs_off"] for r in rows], 0.4, label="on (adaptive)", color="#2a7ab9")
    ax.bar(xs + 0.2, [r["always_vs_off"] for r in rows], 0.4, label="always", color="#e0a030")
    ax.axhline(1.0, color="k", lw=1, ls="--")
    labels = [f"{r['model']}\n{r['single_run_us']} µs/run" for r in rows]
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("req/s ÷ batching off (32 connections, one core)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Dynamic batching by model cost: where joining starts to pay", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batching", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--quick", action="store_true", help="1 s per point, one round, a shorter sweep (a smoke run)")
    p.add_argument("--seconds", type=float, help="seconds per point (default 5, --quick 1)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--rounds", type=int, help="rotated rounds per point, median kept (default 3, --quick 1)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-batch-wait-ms", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS, help="where batching.json, .md and .png go")
    a = p.parse_args(argv)
    if a.loadgen == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not on PATH")
    result = run(a.quick, a.seconds, a.loadgen, a.max_batch_size, a.max_batch_wait_ms, a.rounds)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "batching.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (a.out / "batching.md").write_text(table)
    chart(result, a.out / "batching.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
