"""Servers under test, each a process of its own on a free loopback port, stopped by the figure that started it:
`modelfn serve` (granian or uvicorn, N workers), the seed-style app and the trivial app, and the peers
(`bench.peers`), optionally pinned to one CPU with taskset. Each `Server` knows its request (path and body), how
long it took to answer its ready route, and reads its process tree's CPU time and RSS from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfn_tools.localserver import free_port, wait_http

from bench.common import MODEL, ROOT, BenchEnv, predict_body, stop_process
from bench.loadgen import pinned

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Server:
    label: str
    proc: Any
    base: str
    path: str
    body: str
    startup_s: float
    cpu: int | None
    log: Any = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return self.base + self.path

    def pids(self) -> list[int]:
        """The server and every process under it (workers, and the workers' own children)."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def rss_mb(self) -> dict[str, float]:
        """RSS of the parent and of each process under it (a worker holds its own copy of the model)."""
        return {str(p): rss_mb(p) for p in self.pids()}


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def launch(
    env: BenchEnv,
    label: str,
    argv: list[str],
    ready: str,
    path: str,
    body: str,
    cpu: int | None = None,
    cwd: Path = ROOT,
    port: int | None = None,
    environ: dict[str, str] | None = None,
) -> Server:
    """Start `argv` ({port} filled in) on `port` (default: a free one), pinned to `cpu` when given; return once
    `ready` answers."""
    port = port or free_port()
    tag = "".join(c if c.isalnum() else "-" for c in label)[:40]
    log = open(env.workdir / f"{tag}-{port}.log", "w")  # noqa: SIM115 (closed by stop())
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*pinned(cpu), *[a.replace("{port}", str(port)) for a in argv]],
        env=env.child_environ(**(environ or {})),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    server = Server(label, proc, base, path, body, 0.0, cpu, log)
    try:
        wait_http(base + ready, proc=proc, timeout=180)
    except BaseException:
        stop(server)
        raise
    server.startup_s = round(time.perf_counter() - started, 3)
    return server


def modelfn(
    env: BenchEnv,
    label: str,
    server: str = "granian",
    workers: int = 1,
    cpu: int | None = None,
    path: str = "/predict",
    body: str | None = None,
    extra_args: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
    **extra_env: str,
) -> Server:
    """`modelfn serve --models mlp` from the bench store (moto's S3), with `environ` and `extra_env` set."""
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", env.store, "--models", MODEL]
    argv += ["--port", "{port}", "--server", server, "--workers", str(workers), *extra_args]
    settings = {"MODELFN_CACHE_DIR": str(env.workdir / "serve-cache"), **(environ or {}), **extra_env}
    ready = f"/v2/models/{MODEL}/ready"
    return launch(env, label, argv, ready, path, body or predict_body(seed=5), cpu, environ=settings)


def seed(env: BenchEnv, label: str, cpu: int | None = None) -> Server:
    """`uvicorn bench.baselines.seed_app:app` with uvicorn's defaults (uvloop and httptools where installed)."""
    argv = [sys.executable, "-m", "uvicorn", "bench.baselines.seed_app:app", "--host", "127.0.0.1", "--port", "{port}"]
    argv += ["--no-access-log", "--log-level", "warning"]
    model = {"MODEL_PATH": str(env.mlp_int8)}
    return launch(env, label, argv, "/health", "/predict", predict_body(seed=5), cpu, environ=model)


def trivial(env: BenchEnv, label: str, server: str, cpu: int | None = None) -> Server:
    """The trivial app (bench/baselines/trivial_app.py) under granian or uvicorn, as modelfn serve runs them."""
    target = "bench.baselines.trivial_app:app"
    if server == "granian":
        argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}"]
        argv += ["--log-level", "warning", "--no-ws", target]
    else:
        argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "{port}"]
        argv += ["--no-access-log", "--log-level", "warning"]
    return launch(env, label, argv, "/", "/predict", predict_body(seed=5), cpu)


def peer(env: BenchEnv, name: str, label: str, cpu: int | None = None) -> Server:
    from bench.peers import PEERS, command, request_body

    spec = PEERS[name]
    port = free_port()
    argv, extra = command(name, env, port)
    features = json.loads(predict_body(seed=5))["features"]
    body = request_body(spec.body, features)
    return launch(env, label, argv, spec.ready, spec.infer, body, cpu, ROOT / "bench" / "baselines", port, extra)


def stop(server: Server | Any) -> None:
    """Stop a server this module started (a Server, or a bare process from the older helpers)."""
    proc = server.proc if isinstance(server, Server) else server
    stop_process(proc)
    log = getattr(server, "log", None)
    if log is not None:
        log.close()


def start_modelfn(env: BenchEnv, *extra_args: str, **extra_env: str) -> tuple[Any, str]:
    """`modelfn serve --models mlp` with its defaults (one worker), as (process, base URL)."""
    s = modelfn(env, "modelfn serve", extra_args=extra_args, environ=dict(extra_env))
    s.proc.log = s.log
    return s.proc, s.base


def start_seed(env: BenchEnv) -> tuple[Any, str]:
    s = seed(env, "seed-style app")
    s.proc.log = s.log
    return s.proc, s.base


def modelfn_serve_supports(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "modelfn_tools.cli", "serve", "--help"], capture_output=True, text=True, check=False
    )
    return flag in out.stdout
