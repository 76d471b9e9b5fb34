"""Fixtures for the container path: `python -m modelfn.container serve` as a real process against the test store,
and onnxruntime's own answers for the published artifacts to check what it serves."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import free_port, wait_http

from modelfn.store import open_store
from modelfn.store.layout import artifact_key

GPU_FIRST = "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"


# tests/conftest.py has these too, but its module name (`conftest`) is not unique in a whole-suite run.


@dataclass
class Container:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_container(env_overrides: dict[str, str], log: Path, args: tuple[str, ...] = ("serve",)) -> Container:
    port = free_port()
    env = dict(os.environ, MODELFN_HOST="127.0.0.1", MODELFN_PORT=str(port), MODELFN_LOG_LEVEL="info")
    env.update(env_overrides)
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "modelfn.container", *args], env=env, stdout=out, stderr=out)
    out.close()
    container = Container(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(f"{container.base}/v2/health/live", timeout=60, proc=proc)
    except Exception:
        stop_container(container)
        raise RuntimeError(f"container did not start:\n{container.output()}") from None
    return container


def stop_container(container: Container) -> None:
    if container.proc.poll() is None:
        container.proc.terminate()
        try:
            container.proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            container.proc.kill()
            container.proc.wait()


@pytest.fixture(scope="session")
def container(s3_store: str, aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The container entrypoint serving mlp (default) and iris from the test store, asked to prefer TensorRT and
    CUDA (absent here: it must fall back to CPU and still serve)."""
    d = tmp_path_factory.mktemp("container")
    c = start_container(
        {
            "MODELFN_STORE": s3_store,
            "MODELFN_MODELS": "mlp,iris",
            "MODELFN_MODEL": "mlp",
            "MODELFN_PROVIDERS": GPU_FIRST,
            "MODELFN_CACHE_DIR": str(d / "cache"),
        },
        d / "container.log",
    )
    yield c
    stop_container(c)


class Reference:
    """onnxruntime on the very artifacts the store holds: what the container must answer."""

    def __init__(self, store: str) -> None:
        self.store = open_store(store)
        self.sessions: dict[tuple[str, int], ort.InferenceSession] = {}

    def run(self, model: str, version: int, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        key = (model, version)
        if key not in self.sessions:
            data = self.store.read_bytes(artifact_key(model, version))
            self.sessions[key] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        session = self.sessions[key]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))


@pytest.fixture(scope="session")
def reference(s3_store: str) -> Reference:
    return Reference(s3_store)
