"""onnxruntime's pool threads never spin on servers; on Lambda only where each one has a whole vCPU, and the
intra-op pool is sized to the vCPUs the function's memory buys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, save

from modelfn.model.onnx import allow_spinning, available_cpus, load_session, session_options
from modelfn.settings import Settings

SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    monkeypatch.delenv("MODELFN_INTRA_OP_THREADS", raising=False)


def _entries(opts: ort.SessionOptions) -> list[str]:
    return [opts.get_session_config_entry(k) for k in SPIN]


@pytest.mark.usefixtures("server")
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_servers_never_spin(threads: int) -> None:
    assert _entries(session_options(Settings(intra_op_threads=threads))) == ["0", "0"]
    assert not allow_spinning(threads)


@pytest.mark.usefixtures("server")
def test_server_threads_are_the_cpus_it_may_use() -> None:
    assert session_options(Settings()).intra_op_num_threads == available_cpus()


@pytest.mark.usefixtures("server")
@pytest.mark.parametrize(
    ("memory_mb", "threads", "spins"),
    [
        ("512", 2, False),  # a fraction of one vCPU: a spinning thread eats what the request needs
        ("1769", 2, False),  # one vCPU for two threads
        ("3538", 2, True),  # two whole vCPUs: spinning only shortens the hand-offs inside a run
        ("10240", 1, False),  # one thread: there is no pool to spin
    ],
)
def test_lambda_spins_only_with_a_vcpu_per_thread(
    monkeypatch: pytest.MonkeyPatch, memory_mb: str, threads: int, spins: bool
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    expected = "1" if spins else "0"
    assert _entries(session_options(Settings(intra_op_threads=threads))) == [expected, expected]


@pytest.mark.usefixtures("server")
def test_lambda_pool_sized_by_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    assert session_options(Settings()).intra_op_num_threads == 1
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    assert session_options(Settings()).intra_op_num_threads == available_cpus()  # 6 vCPUs, capped by the host's


@pytest.mark.usefixtures("server")
def test_session_without_spinning_answers(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    session = load_session(path, Settings(intra_op_threads=2))
    (y,) = session.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)})
    assert y.tolist() == [[0.0, 0.0, 2.0]]
