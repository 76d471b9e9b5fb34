"""Servers under test, each a process of its own on a free loopback port, stopped by the figure that started it:
`modelfn serve` and the seed-style app under uvicorn (as its tutorials run it, access log off like modelfn's)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from modelfn_tools.localserver import free_port, wait_http

from bench.common import MODEL, ROOT, BenchEnv, stop_process


def _start(env: BenchEnv, argv: list[str], ready_path: str, tag: str, **extra_env: str) -> tuple[Any, str]:
    port = free_port()
    log = open(env.workdir / f"{tag}-{port}.log", "w")  # noqa: SIM115 (closed by stop())
    proc = subprocess.Popen(
        [sys.executable, *[a.replace("{port}", str(port)) for a in argv]],
        env=env.child_environ(**extra_env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + ready_path, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, base


def start_modelfn(env: BenchEnv, *extra_args: str, **extra_env: str) -> tuple[Any, str]:
    """`modelfn serve --models mlp` (uvicorn, one worker), the store in moto's S3."""
    argv = ["-m", "modelfn_tools.cli", "serve", "--store", env.store, "--models", MODEL, "--port", "{port}"]
    settings = {"MODELFN_CACHE_DIR": str(env.workdir / "serve-cache"), **extra_env}
    return _start(env, [*argv, *extra_args], f"/v2/models/{MODEL}/ready", "modelfn-serve", **settings)


def start_seed(env: BenchEnv) -> tuple[Any, str]:
    """`uvicorn bench.baselines.seed_app:app` with uvicorn's defaults (uvloop and httptools where installed)."""
    argv = ["-m", "uvicorn", "bench.baselines.seed_app:app", "--host", "127.0.0.1", "--port", "{port}"]
    argv += ["--no-access-log", "--log-level", "warning"]
    return _start(env, argv, "/health", "seed-uvicorn", MODEL_PATH=str(env.mlp_int8))


def stop(proc: Any) -> None:
    stop_process(proc)
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


def modelfn_serve_supports(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "modelfn_tools.cli", "serve", "--help"], capture_output=True, text=True, check=False
    )
    return flag in out.stdout
