"""Dynamic batching on and off: `modelfn serve` on the int8 MLP at 1, 8 and 32 concurrent connections.

    .venv/bin/python -m bench.batching [--quick] [--seconds S] [--rounds R] [--loadgen auto|wrk|python]

The example models are built and published to a local-folder store in a temporary directory; `modelfn serve
--models mlp` runs twice side by side (`--batching` and `--no-batching`, same flags otherwise) and each is driven
with one-row KServe v2 JSON requests to /v2/models/mlp/versions/2/infer (the int8 MLP) by a closed-loop load
generator: N keep-alive connections, each sending its next request when the previous answer is in, for a fixed
duration after a short warm-up. Each point is measured in R rounds alternating off and on (so a noisy neighbour
hits both alike) and the round with the median requests/s is reported (all rounds are in the JSON). The
generator is `wrk` when it is on PATH (it costs the shared CPUs least), else
our own asyncio client (raw HTTP/1.1 on streams: fewer CPU cycles per request than httpx, so it takes less from
the server under test on a small machine). Reports requests/s, p50 and p99 latency, and for batching on the mean
rows per session.run (from GET /health). Writes bench/results/batching.json and bench/results/batching.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from modelfn_tools.localserver import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONCURRENCY = (1, 8, 32)
PATH = "/v2/models/mlp/versions/2/infer"
LUA = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'


# ---- servers -------------------------------------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 120.0) -> None:
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
    """`modelfn serve --models mlp` with batching on or off, as a process of its own on a free loopback port."""

    def __init__(self, store: str, workdir: Path, batching: bool, max_batch_size: int, max_wait_ms: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        flag = "--batching" if batching else "--no-batching"
        argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", store, "--models", "mlp"]
        argv += ["--port", str(self.port), flag, "--max-batch-size", str(max_batch_size)]
        argv += ["--max-batch-wait-ms", str(max_wait_ms)]
        self.log = (workdir / f"serve-{'on' if batching else 'off'}.log").open("w")
        env = dict(os.environ, MODELFN_CACHE_DIR=str(workdir / "cache"))
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"{self.base}/v2/models/mlp/versions/2/ready", self.proc)
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


# ---- load generators -------------------------------------------------------------------------------------------
def run_wrk(url: str, body: str, connections: int, seconds: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    assert wrk is not None
    with tempfile.TemporaryDirectory(prefix="modelfn-batching-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA.format(body=body))
        cmd = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        cmd += ["--timeout", "10s", "--latency", "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not rps or not total or set(pct) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "p50_ms": _wrk_ms(pct["50"]),
        "p99_ms": _wrk_ms(pct["99"]),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
    }


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise RuntimeError(f"cannot read wrk latency {text!r}")
    return round(float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)], 3)


async def _connection(port: int, request: bytes, deadline: float, latencies: list[float]) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += int(head.split(b" ", 2)[1]) != 200
    finally:
        writer.close()
    return errors


def run_python(port: int, body: str, connections: int, seconds: float) -> dict[str, Any]:
    """Closed loop over raw keep-alive HTTP/1.1 connections, bounded by `connections` and `seconds`."""
    payload = body.encode()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    latencies: list[float] = []

    async def main() -> int:
        deadline = time.perf_counter() + seconds
        return sum(await asyncio.gather(*(_connection(port, request, deadline, latencies) for _ in range(connections))))

    started = time.perf_counter()
    errors = asyncio.run(main())
    elapsed = time.perf_counter() - started
    lat = np.asarray(latencies or [0.0])
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "errors": errors,
    }


def drive(server: Server, body: str, connections: int, seconds: float, loadgen: str) -> dict[str, Any]:
    if loadgen == "wrk":
        return run_wrk(server.base + PATH, body, connections, seconds)
    return run_python(server.port, body, connections, seconds)


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
def request_body() -> str:
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": x.tolist()}]})


def trial(server: Server, body: str, connections: int, seconds: float, loadgen: str) -> dict[str, Any]:
    before = server.health().get("batching")
    result = drive(server, body, connections, seconds, loadgen)
    if before is not None:
        after = server.health()["batching"]
        runs = after["runs"] - before["runs"]
        result["mean_batch_rows"] = round((after["rows"] - before["rows"]) / max(runs, 1), 2)
        result["max_batch_rows"] = after["max_batch_rows"]
        result["plan"] = after["models"].get("mlp/2", {}).get("mode")
    return result


def run(
    quick: bool = False,
    seconds: float | None = None,
    loadgen: str = "auto",
    max_batch_size: int = 32,
    max_wait_ms: float = 2.0,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The figure, as `python -m bench` calls it: the measurements plus its summary rows (on vs off per
    concurrency: the ratio is the speed-up in requests/s; there is no target)."""
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    result = measure(
        seconds or (1.0 if quick else 5.0),
        0.5 if quick else 1.0,
        loadgen,
        max_batch_size,
        max_wait_ms,
        rounds or (1 if quick else 3),
    )
    result["name"] = "batching"
    result["quick"] = quick
    by = {(p["batching"], p["connections"]): p for p in result["points"]}
    result["summary"] = [
        {
            "figure": "batching",
            "metric": f"int8 MLP req/s, {c} connection{'s' if c > 1 else ''}, batching on",
            "modelfn": by[(True, c)]["rps"],
            "baseline": by[(False, c)]["rps"],
            "baseline_name": "batching off",
            "unit": "req/s",
            "ratio": round(by[(True, c)]["rps"] / by[(False, c)]["rps"], 2) if by[(False, c)]["rps"] else None,
            "target": "",
            "met": None,
        }
        for c in CONCURRENCY
    ]
    return result


def measure(
    seconds: float, warmup: float, loadgen: str, max_batch_size: int, max_wait_ms: float, rounds: int = 3
) -> dict[str, Any]:
    """Both servers run side by side (the idle one costs nothing); each concurrency is measured `rounds` times,
    alternating off/on, so both see the same machine. Each point reports the round with the median req/s."""
    from modelfn_tools.examples import publish_examples

    body = request_body()
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-batching-") as tmp:
        workdir = Path(tmp)
        store = str(workdir / "store")
        publish_examples(store, workdir / "build")
        servers: dict[bool, Server] = {}
        try:
            for batching in (False, True):
                servers[batching] = Server(store, workdir, batching, max_batch_size, max_wait_ms)
            for connections in CONCURRENCY:
                trials: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for server in servers.values():
                    drive(server, body, connections, warmup, loadgen)  # also prepares the batch plan
                for r in range(rounds):
                    for batching in (False, True) if r % 2 == 0 else (True, False):
                        trials[batching].append(trial(servers[batching], body, connections, seconds, loadgen))
                for batching, results in trials.items():
                    ranked = sorted(results, key=lambda t: t["rps"])
                    point = {"batching": batching, "connections": connections, **ranked[len(ranked) // 2]}
                    point["rounds_rps"] = [t["rps"] for t in results]
                    points.append(point)
                    print(_line(point), file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
    import onnxruntime

    return {
        "figure": "dynamic batching on/off, int8 MLP (256-1024x3-10), one-row KServe v2 JSON requests",
        "endpoint": PATH,
        "loadgen": loadgen,
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
        "points": points,
    }


def _line(p: dict[str, Any]) -> str:
    extra = f"  mean batch {p['mean_batch_rows']} rows" if "mean_batch_rows" in p else ""
    return (
        f"batching {'on ' if p['batching'] else 'off'}  c={p['connections']:<3} {p['rps']:>8.1f} req/s  "
        f"p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms  errors {p['errors']}{extra}"
    )


def markdown(result: dict[str, Any]) -> str:
    by = {(p["batching"], p["connections"]): p for p in result["points"]}
    lines = [
        f"Dynamic batching, `modelfn serve` on the int8 MLP, one-row v2 JSON requests "
        f"({result['loadgen']}, {result['seconds_per_point']:g} s per point, median of {result['rounds']} "
        f"alternating rounds, {result['machine']['cpus']} CPUs, "
        f"max batch {result['max_batch_size']} rows / {result['max_batch_wait_ms']:g} ms).",
        "",
        "| connections | off: req/s | off: p50 ms | off: p99 ms | on: req/s | on: p50 ms | on: p99 ms "
        "| on: mean batch rows | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        off, on = by.get((False, c)), by.get((True, c))
        if off is None or on is None:
            continue
        speedup = on["rps"] / off["rps"] if off["rps"] else float("nan")
        lines.append(
            f"| {c} | {off['rps']:.0f} | {off['p50_ms']:.2f} | {off['p99_ms']:.2f} | {on['rps']:.0f} "
            f"| {on['p50_ms']:.2f} | {on['p99_ms']:.2f} | {on.get('mean_batch_rows', '-')} | {speedup:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batching", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--quick", action="store_true", help="1 s per point (a smoke run)")
    p.add_argument("--seconds", type=float, help="seconds per point (default 5, --quick 1)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--rounds", type=int, help="alternating off/on rounds per point, median kept (default 3, --quick 1)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-batch-wait-ms", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS, help="where batching.json and batching.md go")
    a = p.parse_args(argv)
    if a.loadgen == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not on PATH")
    result = run(a.quick, a.seconds, a.loadgen, a.max_batch_size, a.max_batch_wait_ms, a.rounds)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "batching.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (a.out / "batching.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
