"""gRPC vs HTTP with the binary tensor extension: the same `modelfn serve --grpc-port` process (uvicorn, one worker,
the int8 MLP) answers both, called with Triton's own clients at their defaults (tritonclient.grpc: raw contents;
tritonclient.http: binary input and outputs), for the 1024×256 FP32 request and for one row. Two measures per
size, each interleaved with the other protocol in rounds so that drift on a shared machine hits both alike:
- p50 end to end with one client calling in a loop (encode, send, run, answer, decode into numpy);
- requests per second with CLIENTS clients in threads, each calling in a loop, for a fixed number of requests.
Answers of the two protocols are checked equal before anything is timed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import MODEL, get_env, stats, summary_row

NAME = "grpc_vs_http"
TITLE = "gRPC vs HTTP binary (tritonclient both), int8 MLP on modelfn serve --grpc-port: 1024×256 FP32 and one row"
BIG_ROWS = 1024
CLIENTS = 4


def _clients(http_url: str, grpc_url: str) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    return {
        "grpc": grpcclient.InferenceServerClient(grpc_url),
        "http": httpclient.InferenceServerClient(http_url, connection_timeout=120.0, network_timeout=120.0),
    }


def _call(protocol: str, client: Any, x: Any) -> Any:
    """One request as each client's users write it, at the client's defaults (binary both ways)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module: Any = grpcclient if protocol == "grpc" else httpclient
    inp = module.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [module.InferRequestedOutput(n) for n in ("logits", "probabilities")]
    result = client.infer(MODEL, [inp], outputs=outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None and probabilities.shape == (x.shape[0], 10)
    return probabilities


def _latency(clients: dict[str, Any], x: Any, n: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {p: [] for p in clients}
    for _ in range(rounds):
        for protocol, client in clients.items():
            for _ in range(max(1, n // rounds)):
                t0 = time.perf_counter()
                _call(protocol, client, x)
                samples[protocol].append((time.perf_counter() - t0) * 1000)
    return {p: stats(v, 3) for p, v in samples.items()}


def _throughput(make: Callable[[], dict[str, Any]], x: Any, per_client: int, rounds: int) -> dict[str, Any]:
    """req/s of CLIENTS threads calling in a loop, per protocol; rounds alternate the protocols. Each thread makes
    its own client (tritonclient.http runs on gevent, whose hub is per thread) before the clock starts."""
    rates: dict[str, list[float]] = {"grpc": [], "http": []}
    for _ in range(rounds):
        for protocol, rate in rates.items():
            barrier = threading.Barrier(CLIENTS + 1)

            def work(protocol: str = protocol, barrier: threading.Barrier = barrier) -> None:
                client = make()[protocol]
                barrier.wait()
                for _ in range(per_client):
                    _call(protocol, client, x)
                client.close()

            threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            rate.append(CLIENTS * per_client / (time.perf_counter() - t0))
    return {
        p: {"median": round(sorted(v)[len(v) // 2], 1), "rounds": [round(r, 1) for r in v]} for p, v in rates.items()
    }


def run(quick: bool) -> dict[str, Any]:
    import numpy as np
    from modelfn_tools.localserver import free_port, serve_process

    env = get_env()
    rng = np.random.default_rng(11)
    sizes = {
        "1024x256": rng.standard_normal((BIG_ROWS, 256)).astype(np.float32),
        "1x256": rng.standard_normal((1, 256)).astype(np.float32),
    }
    plan = {  # (latency requests, latency rounds, requests per client, throughput rounds)
        "1024x256": (6, 2, 2, 1) if quick else (60, 6, 10, 3),
        "1x256": (40, 2, 10, 1) if quick else (1000, 10, 200, 3),
    }
    grpc_port = free_port()
    latency: dict[str, Any] = {}
    throughput: dict[str, Any] = {}
    args = ["--store", env.store, "--models", MODEL, "--grpc-port", str(grpc_port)]
    with env.activated(), serve_process(args, env.workdir) as base:

        def make() -> dict[str, Any]:
            return _clients(base.removeprefix("http://"), f"127.0.0.1:{grpc_port}")

        clients = make()
        for size, x in sizes.items():
            answers = {p: _call(p, c, x) for p, c in clients.items()}
            if not np.array_equal(answers["grpc"], answers["http"]):
                raise RuntimeError(f"{size}: gRPC and HTTP answers differ")
            n, rounds, per_client, t_rounds = plan[size]
            latency[size] = _latency(clients, x, n, rounds)
            throughput[size] = _throughput(make, x, per_client, t_rounds)
        for client in clients.values():
            client.close()
    summary = []
    for size, label in (("1024x256", "1024×256 FP32"), ("1x256", "one row")):
        g, h = latency[size]["grpc"]["p50"], latency[size]["http"]["p50"]
        summary.append(
            summary_row(
                "gRPC",
                f"{label}, p50 end to end (one client)",
                g,
                h,
                "ms",
                baseline_name="HTTP binary",
                ratio_label="gRPC / HTTP",
            )
        )
        gr, hr = throughput[size]["grpc"]["median"], throughput[size]["http"]["median"]
        summary.append(
            summary_row(
                "gRPC",
                f"{label}, req/s ({CLIENTS} clients)",
                gr,
                hr,
                "req/s",
                baseline_name="HTTP binary",
                ratio_label="gRPC / HTTP",
            )
        )
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "server": f"modelfn serve --models {MODEL} --grpc-port N (uvicorn, one process: both protocols)",
            "clients": "tritonclient.grpc (raw contents) and tritonclient.http (binary_data input and outputs), "
            "their defaults",
            "throughput_clients": CLIENTS,
            "plan": {
                k: dict(zip(("latency_n", "latency_rounds", "per_client", "throughput_rounds"), v, strict=True))
                for k, v in plan.items()
            },
        },
        "latency_ms": latency,
        "throughput_req_s": throughput,
        "summary": summary,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=2))
