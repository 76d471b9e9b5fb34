"""Figure 2: cold start. A fresh process from nothing to the first response, the artifact in moto's S3:
modelfn's function (functions/mlp/app.py: fetch, sha256 check, session, warm-up at init, then the first HTTP API
event) against the minimal cold path (import onnxruntime and boto3, get_object, create the session, run once,
through the hand-written handler). Also modelfn on a warm disk cache (a new environment whose /tmp still holds
the artifact). Runs alternate between the variants; medians are reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL, ROOT, BenchEnv, get_env, lambda_environ, median, summary_row

NAME = "cold_start"
TITLE = "Cold start: fresh process to first response (artifact in moto's S3)"
WORKER = ROOT / "bench" / "_cold_worker.py"
PHASES = ("interpreter", "imports", "fetch", "session", "warmup", "first_request")


def _env(env: BenchEnv, kind: str, cache_dir: Path) -> dict[str, str]:
    return env.child_environ(
        BENCH_ROOT=str(ROOT),
        MODELFN_STORE=env.store,
        MODELFN_MODEL=MODEL,
        MODELFN_CACHE_DIR=str(cache_dir),
        MODEL_BUCKET=env.bucket,
        MODEL_KEY=env.int8_key,
        **lambda_environ(),
    )


def cold_run(env: BenchEnv, kind: str, cache_dir: Path, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One fresh process; wall time from spawn to the first response's line on the result pipe."""
    import json

    worker_kind = "modelfn" if kind.startswith("modelfn") else "minimal"
    read_fd, write_fd = os.pipe()
    child_env = _env(env, kind, cache_dir)
    child_env["BENCH_RESULT_FD"] = str(write_fd)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *extra_args, str(WORKER), worker_kind],
        env=child_env,
        cwd=ROOT,
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    buf = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while not buf.endswith(b"\n"):
            chunk = pipe.read(65536)
            if not chunk:
                break
            buf += chunk
    wall = (time.perf_counter() - started) * 1000
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or not buf:
        raise RuntimeError(
            f"cold worker {worker_kind} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}"
        )
    phases: dict[str, Any] = dict(json.loads(buf))
    if phases.get("status") != 200:
        raise RuntimeError(f"cold worker {worker_kind}: first response was {phases.get('status')}")
    phases["wall"] = wall
    phases["interpreter"] = wall - phases["in_process_total"]
    return phases


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = [*PHASES, "wall"]
    return {k: round(median([r.get(k, 0.0) for r in runs]), 1) for k in keys}


def run(quick: bool, *, repeats: int | None = None) -> dict[str, Any]:
    env = get_env()
    n = repeats or (2 if quick else 7)
    scratch = Path(tempfile.mkdtemp(prefix="modelfn-bench-cold-"))
    warm_cache = scratch / "warm-cache"
    runs: dict[str, list[dict[str, Any]]] = {"modelfn": [], "modelfn (warm disk cache)": [], "minimal cold path": []}
    try:
        # one discarded run of each first: the OS page cache then holds every module and library for all variants
        cold_run(env, "modelfn", warm_cache)
        cold_run(env, "minimal", scratch / "unused")
        for i in range(n):
            runs["modelfn"].append(cold_run(env, "modelfn", scratch / f"empty-{i}"))
            runs["minimal cold path"].append(cold_run(env, "minimal", scratch / "unused"))
            runs["modelfn (warm disk cache)"].append(cold_run(env, "modelfn warm", warm_cache))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    med = {k: _medians(v) for k, v in runs.items()}
    imports = import_table(1 if quick else 3)
    cold, warm, base = med["modelfn"], med["modelfn (warm disk cache)"], med["minimal cold path"]
    downloads = [r.get("cache_stats", {}).get("downloads") for r in runs["modelfn (warm disk cache)"]]
    summary = [
        summary_row(
            "2 cold start",
            "fresh process → first response",
            cold["wall"],
            base["wall"],
            "ms",
            baseline_name="minimal cold path",
            op="<=",
            target=1.1,
        ),
        summary_row(
            "2 cold start",
            "same, warm disk cache",
            warm["wall"],
            base["wall"],
            "ms",
            baseline_name="minimal cold path",
            op="<=",
            target=1.1,
        ),
    ]
    return {
        "name": NAME,
        "title": TITLE,
        "quick": quick,
        "config": {
            "repeats": n,
            "model": f"{MODEL} int8 (stable), {env.mlp_int8.stat().st_size} bytes",
            "phases": "interpreter = wall − in-process total (spawn, interpreter start-up); imports; fetch = init "
            "minus session and warm-up (S3 client, labels, manifest, artifact download + sha256 for modelfn; "
            "client + get_object for the baseline); session = InferenceSession(); warmup = modelfn's warm-up run; "
            "first_request = the first HTTP API event to its response "
            "(an inference request: the fast path, no FastAPI)",
        },
        "medians_ms": med,
        "warm_cache_downloads": downloads,
        "import_self_ms_by_package": imports,
        "runs_ms": {k: [round(r["wall"], 1) for r in v] for k, v in runs.items()},
        "summary": summary,
    }


def import_table(repeats: int, rows: int = 25) -> dict[str, dict[str, float]]:
    """`-X importtime` self ms per package of modelfn's and the minimal path's cold workers (bench/cold_imports.py),
    the largest `rows` packages of each: what the imports phase is made of."""
    from bench.cold_imports import by_package

    found = by_package({"modelfn": ("modelfn", ROOT), "minimal cold path": ("minimal", ROOT)}, repeats)
    return {name: dict(list(table.items())[:rows]) for name, table in found.items()}


def profile(kind: str = "modelfn") -> str:
    """`python -X importtime` of one cold modelfn start: the twenty most expensive imports (self + children)."""
    env = get_env()
    scratch = Path(tempfile.mkdtemp(prefix="modelfn-bench-cold-prof-"))
    try:
        read_fd, write_fd = os.pipe()
        child_env = _env(env, kind, scratch)
        child_env["BENCH_RESULT_FD"] = str(write_fd)
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(WORKER), kind],
            env=child_env,
            cwd=ROOT,
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
        os.close(write_fd)
        os.close(read_fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        level = (len(name) - len(name.lstrip()) - 1) // 2
        if level <= 1:
            rows.append((int(cum_us), int(self_us), name.rstrip()[1:]))
    rows.sort(reverse=True)
    lines = [f"{'cumulative ms':>14} {'self ms':>8}  module (indent = imported by the line above it)"]
    lines += [f"{c / 1000:14.1f} {s / 1000:8.1f}  {n}" for c, s, n in rows[:30]]
    return "\n".join(lines)
