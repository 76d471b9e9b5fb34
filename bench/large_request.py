"""Figure 3: large requests. 1024×256 FP32 through POST /v2/models/mlp/infer on `modelfn serve` (loopback), with
tritonclient.http as a user would call it: the binary tensor data extension (binary input and outputs) against
JSON tensors. End to end: the client encodes, sends, the server decodes, runs, encodes, the client decodes into
numpy. The model's own time (the same in both) is measured in process and reported beside."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from bench.common import MODEL, ROOT, get_env, median, stats, summary_row
from bench.profiling import collapse_report
from bench.servers import start_modelfn, stop

NAME = "large_request"
TITLE = "Large request: 1024×256 FP32 through /v2/models/mlp/infer, binary extension vs JSON (modelfn serve)"
ROWS = 1024
MAX_BODY = 64 * 1024 * 1024


def _client(base: str) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(
        base.removeprefix("http://"), connection_timeout=120.0, network_timeout=120.0, concurrency=1
    )


def infer(client: Any, x: Any, binary: bool) -> tuple[Any, dict[str, float]]:
    """One request as tritonclient users write it; returns the probabilities and where the client's time went."""
    import tritonclient.http as httpclient

    t0 = time.perf_counter()
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "probabilities")]
    t1 = time.perf_counter()
    result = client.infer(MODEL, [inp], outputs=outs)
    probs = result.as_numpy("probabilities")
    logits = result.as_numpy("logits")
    t2 = time.perf_counter()
    assert probs is not None and logits is not None and probs.shape == (x.shape[0], 10)
    return probs, {"encode_ms": (t1 - t0) * 1000, "request_ms": (t2 - t1) * 1000, "total_ms": (t2 - t0) * 1000}


def _body_sizes(x: Any) -> dict[str, int]:
    """Request body sizes as tritonclient builds them."""
    import json

    json_body = len(
        json.dumps(
            {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        )
    )
    return {"json_request_bytes": json_body, "binary_request_bytes": x.nbytes + 200}


def run(quick: bool, *, iterations: int | None = None) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    env = get_env()
    n = iterations or (3 if quick else 15)
    x = np.random.default_rng(3).standard_normal((ROWS, 256)).astype(np.float32)
    # the model's own time for this batch, in process, for reference
    sess = ort.InferenceSession(str(env.mlp_int8), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    model_ms = []
    for _ in range(max(3, n // 3)):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        model_ms.append((time.perf_counter() - t) * 1000)
    del sess
    proc, base = start_modelfn(env, MODELFN_MAX_BODY_BYTES=str(MAX_BODY))
    try:
        client = _client(base)
        p_bin, _ = infer(client, x, True)
        p_json, _ = infer(client, x, False)
        agree = bool(np.allclose(p_bin, p_json, atol=1e-5))
        samples: dict[str, list[dict[str, float]]] = {"binary": [], "json": []}
        for _ in range(n):  # alternate, so that drift hits both alike
            samples["binary"].append(infer(client, x, True)[1])
            samples["json"].append(infer(client, x, False)[1])
        client.close()
    finally:
        stop(proc)
    totals = {k: stats([s["total_ms"] for s in v]) for k, v in samples.items()}
    phases = {
        k: {p: round(median([s[p] for s in v]), 2) for p in ("encode_ms", "request_ms", "total_ms")}
        for k, v in samples.items()
    }
    b, j = totals["binary"]["p50"], totals["json"]["p50"]
    model_p50 = round(median(model_ms), 2)
    summary = [
        summary_row(
            "3 large request",
            "1024×256 FP32 end to end, p50",
            b,
            j,
            "ms",
            baseline_name="JSON tensors",
            ratio=j / b if b else None,
            ratio_label="speed-up (JSON / binary)",
            op=">=",
            target=10,
            target_text="binary ≥ 10× faster",
        ),
        summary_row(
            "3 large request",
            "same, less the model's own run",
            round(b - model_p50, 2),
            round(j - model_p50, 2),
            "ms",
            baseline_name="JSON tensors",
            ratio=(j - model_p50) / (b - model_p50) if b > model_p50 else None,
            ratio_label="speed-up (JSON / binary)",
        ),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "iterations": n,
            "shape": [ROWS, 256],
            "client": "tritonclient.http (binary_data=True for input and outputs vs False)",
            "server": f"modelfn serve --models {MODEL} (uvicorn, one worker), MODELFN_MAX_BODY_BYTES={MAX_BODY}: the "
            "JSON body is past Lambda's 6 MiB synchronous limit, so the server's limit is raised for this figure",
            **_body_sizes(x),
        },
        "results_ms": totals,
        "client_phases_ms": phases,
        "model_run_ms_p50": model_p50,
        "answers_agree": agree,
        "summary": summary,
    }


def profile(seconds: float = 6.0) -> str:
    """py-spy over the server while JSON requests arrive: where the server's share of the JSON path goes."""
    import shutil

    env = get_env()
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(spy):
        return "py-spy is not installed: no server-side profile"
    import numpy as np

    x = np.random.default_rng(3).standard_normal((ROWS, 256)).astype(np.float32)
    proc, base = start_modelfn(env, MODELFN_MAX_BODY_BYTES=str(MAX_BODY))
    out = env.workdir / "large_request.pyspy.txt"
    try:
        client = _client(base)
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            infer(client, x, False)
        spy_proc.wait(timeout=60)
        client.close()
    finally:
        stop(proc)
    return collapse_report(out) if out.exists() else "py-spy produced no profile"
