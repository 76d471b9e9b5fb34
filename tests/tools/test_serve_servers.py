"""`modelfn serve --server granian|uvicorn --workers N`: both servers answer the same bytes; N workers are N
processes, each with its own models and its share of the CPUs for onnxruntime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from modelfn_tools.cli import build_parser
from modelfn_tools.localserver import free_port, wait_http
from modelfn_tools.serve import WORKER_CONFIG, ServeOptions, hand_over, worker_threads

from modelfn.model.onnx import available_cpus

ROW = [5.1, 3.5, 1.4, 0.2]


@contextmanager
def serving(store: str, tmp: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", store, "--models", "iris"]
    env = {**os.environ, "MODELFN_CACHE_DIR": str(tmp / "cache")}
    env.pop("MODELFN_INTRA_OP_THREADS", None)
    tmp.mkdir(parents=True, exist_ok=True)
    with (tmp / "serve.log").open("w") as log:
        proc = subprocess.Popen([*argv, "--port", str(port), *flags], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/v2/models/iris/ready", proc=proc)
            yield proc, base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def predict(base: str) -> bytes:
    r = httpx.post(f"{base}/predict", json={"features": [ROW]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def test_granian_workers_are_processes_sharing_the_cpus(s3_store: str, tmp_path: Path) -> None:
    with serving(s3_store, tmp_path / "g", "--server", "granian", "--workers", "2") as (proc, base):
        granian = predict(base)
        assert len(children(proc.pid)) == 2
    with serving(s3_store, tmp_path / "u", "--server", "uvicorn") as (_, base):
        assert predict(base) == granian  # the same app under either server


def test_uvicorn_workers(s3_store: str, tmp_path: Path) -> None:
    with serving(s3_store, tmp_path, "--server", "uvicorn", "--workers", "2") as (proc, base):
        predict(base)
        spawned = [p for p in children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(spawned) == 2


def test_flags() -> None:
    a = build_parser().parse_args(["serve"])
    assert (a.server, a.workers, a.batching_always) == ("uvicorn", 1, False)
    a = build_parser().parse_args(["serve", "--server", "uvicorn", "--workers", "3", "--batching-always"])
    assert (a.server, a.workers, a.batching_always) == ("uvicorn", 3, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--server", "hypercorn"])


def test_zero_workers_is_refused(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "modelfn_tools.cli", "serve", "--store", str(tmp_path), "--workers", "0"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--workers 0" in r.stderr


def test_workers_get_their_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_threads(1) == available_cpus()
    assert worker_threads(available_cpus() * 4) == 1
    monkeypatch.delenv("MODELFN_INTRA_OP_THREADS", raising=False)
    monkeypatch.delenv(WORKER_CONFIG, raising=False)
    options = ServeOptions("file:///store", "iris", workers=2)
    hand_over(options, None)
    assert os.environ["MODELFN_INTRA_OP_THREADS"] == str(max(1, available_cpus() // 2))
    assert ServeOptions(**json.loads(os.environ[WORKER_CONFIG])) == options
    monkeypatch.setenv("MODELFN_INTRA_OP_THREADS", "3")
    hand_over(options, 3)  # the operator's own choice stands
    assert os.environ["MODELFN_INTRA_OP_THREADS"] == "3"
