"""The clients users already have, as the README's migration notes show them (TF Serving REST, Triton HTTP, a
FastAPI/Flask `/predict`, TorchServe), run exactly as written there against the stack `make demo` builds
(`modelfn dev`: the example models published to an embedded S3, the repository's function hooks, one server), with
only the host, port and model name changed. Each answer is checked against onnxruntime on the same example model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from modelfn_tools.localserver import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
ROW = [5.1, 3.5, 1.4, 0.2]
SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)
EXPECTED = {"triton-http", "triton-grpc", "tfserving-rest", "torchserve", "fastapi-predict"}  # grpc: test_grpc.py


def readme_snippets() -> dict[str, str]:
    return dict(SNIPPET.findall((ROOT / "README.md").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`modelfn dev` (what `make demo` runs) from the repository root, kept running; its address and the folder its
    example models were built in."""
    work = tmp_path_factory.mktemp("demo")
    port = free_port()
    argv = [sys.executable, "-m", "modelfn_tools.cli", "dev", "--port", str(port), "--workdir", str(work)]
    with (work / "dev.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/models/iris/ready", timeout=180, proc=proc)
            yield f"127.0.0.1:{port}", work / "examples"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def adapted(code: str, host: str) -> str:
    """The snippet with the documentation's host and port and `my_model` replaced (and, for `/predict` on a server
    of several models, `?model=` naming it); every line is otherwise the README's."""
    out = re.sub(r"localhost:\d+", host, code).replace("my_model", "iris")
    out = out.replace(f'"http://{host}/predict"', f'"http://{host}/predict?model=iris"')
    for before, after in zip(code.splitlines(), out.splitlines(), strict=True):
        masked = after.replace(host, "HOST").replace("?model=iris", "").replace("iris", "MODEL")
        assert masked == re.sub(r"localhost:\d+", "HOST", before).replace("my_model", "MODEL"), (before, after)
    return out


def run(name: str, host: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    namespace: dict[str, Any] = {"__name__": f"snippet_{name}"}
    exec(compile(adapted(readme_snippets()[name], host), f"README.md snippet {name}", "exec"), namespace)
    return namespace, capsys.readouterr().out


def expected_probabilities(examples: Path) -> np.ndarray:
    session = ort.InferenceSession(str(examples / "iris.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"float_input": np.array([ROW], np.float32)})
    return np.asarray(probabilities)


def test_the_readme_holds_every_snippet() -> None:
    assert set(readme_snippets()) == EXPECTED


def test_triton_http(demo: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    host, examples = demo
    namespace, printed = run("triton-http", host, capsys)
    got = namespace["result"].as_numpy("probabilities")
    np.testing.assert_allclose(got, expected_probabilities(examples), rtol=1e-5, atol=1e-6)
    assert printed.strip().startswith("[[")


def test_tfserving_rest(demo: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    host, examples = demo
    namespace, printed = run("tfserving-rest", host, capsys)
    resp = namespace["resp"]
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["predictions"]
    np.testing.assert_allclose([row["probabilities"]], expected_probabilities(examples), rtol=1e-5, atol=1e-6)
    assert "probabilities" in printed


@pytest.mark.parametrize("name", ["torchserve", "fastapi-predict"])
def test_predict_style_clients(name: str, demo: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """TorchServe's route and a seed-style /predict answer alike, with the iris function's own hook (class names)."""
    host, examples = demo
    namespace, printed = run(name, host, capsys)
    resp = namespace["resp"]
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["predictions"]
    np.testing.assert_allclose([row["probabilities"]], expected_probabilities(examples), rtol=1e-5, atol=1e-6)
    assert row["class"] == "setosa" and row["label"] == 0
    assert "setosa" in printed


def test_only_host_port_and_model_change() -> None:
    snippets = readme_snippets()
    for name, code in snippets.items():
        changed = adapted(code, "10.0.0.1:9")
        assert len(changed.splitlines()) == len(code.splitlines()), name
        assert changed != code, name  # each names a host the test replaces
