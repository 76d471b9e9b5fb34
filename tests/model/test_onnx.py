"""onnxruntime sessions: CPU budget from affinity and cgroups, provider fallback, options, and predict()."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelfn.errors import InvalidInput
from modelfn.model import onnx as session_mod
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import (
    CPU,
    available_cpus,
    cgroup_cpu_limit,
    choose_providers,
    example_inputs,
    load_session,
    read_signature,
    session_options,
)
from modelfn.model.signature import TensorSpec
from modelfn.settings import Settings

CUDA = "CUDAExecutionProvider"

# --- CPU budget --------------------------------------------------------------------------------------------------


def _cgroup_v1(root: Path, quota: str, period: str = "100000") -> None:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000", 2.0), ("50000 100000\n", 0.5)],
)
def test_cgroup_v2(tmp_path: Path, content: str, expected: float | None) -> None:
    (tmp_path / "cpu.max").write_text(content)
    assert cgroup_cpu_limit(tmp_path) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("-1", "100000", None), ("50000", "100000", 0.5), ("300000", "100000", 3.0), ("0", "100000", None)],
)
def test_cgroup_v1(tmp_path: Path, quota: str, period: str, expected: float | None) -> None:
    _cgroup_v1(tmp_path, quota, period)
    assert cgroup_cpu_limit(tmp_path) == expected


def test_cgroup_v2_unlimited_wins_over_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    _cgroup_v1(tmp_path, "50000")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_unreadable_v2_falls_back_to_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("garbage\n")
    _cgroup_v1(tmp_path, "250000")
    assert cgroup_cpu_limit(tmp_path) == 2.5


def test_cgroup_nothing_known(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "does-not-exist") is None
    _cgroup_v1(tmp_path, "not-a-number")
    assert cgroup_cpu_limit(tmp_path) is None


def test_available_cpus_within_affinity() -> None:
    n = available_cpus()
    assert isinstance(n, int)
    assert 1 <= n <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("limit", "cap"), [(None, None), (1.5, 2), (0.2, 1), (1000.0, None)])
def test_available_cpus_respects_cgroup(monkeypatch: pytest.MonkeyPatch, limit: float | None, cap: int | None) -> None:
    monkeypatch.setattr(session_mod, "cgroup_cpu_limit", lambda root=None: limit)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus() == (affinity if cap is None else min(affinity, cap))


# --- providers ---------------------------------------------------------------------------------------------------


def test_choose_providers_falls_back_to_cpu_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        chosen = choose_providers([CUDA, CPU], available=[CPU])
    assert chosen == [CPU]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"asked for {[CUDA, CPU]}" in message
    assert f"using {[CPU]}" in message
    assert CUDA in message


def test_choose_providers_keeps_available_in_order_cpu_last(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelfn"):
        assert choose_providers([CPU, CUDA], available=[CUDA, CPU]) == [CUDA, CPU]
        assert choose_providers([CUDA], available=[CUDA, CPU]) == [CUDA, CPU]
        assert choose_providers([CPU], available=[CPU]) == [CPU]
    assert caplog.records == []


def test_choose_providers_defaults_to_this_build() -> None:
    chosen = choose_providers([CPU])
    assert chosen == [CPU]
    assert set(chosen) <= set(ort.get_available_providers())


# --- session options ---------------------------------------------------------------------------------------------


def test_session_options_threads_from_settings() -> None:
    opts = session_options(Settings(intra_op_threads=3, inter_op_threads=2))
    assert opts.intra_op_num_threads == 3
    assert opts.inter_op_num_threads == 2
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_session_options_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELFN_INTRA_OP_THREADS", raising=False)
    monkeypatch.delenv("MODELFN_INTER_OP_THREADS", raising=False)
    opts = session_options(Settings())
    assert opts.intra_op_num_threads == available_cpus()
    assert opts.inter_op_num_threads == 1


def test_settings_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_INTRA_OP_THREADS", "2")
    assert session_options(Settings()).intra_op_num_threads == 2


# --- LoadedModel.predict ----------------------------------------------------------------------------------------


def _loaded(path: Path, name: str) -> LoadedModel:
    sess = load_session(path, Settings(intra_op_threads=2))
    inputs, outputs = read_signature(sess)
    return LoadedModel(name=name, version=1, session=sess, inputs=inputs, outputs=outputs)


def _plain(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=[CPU])


def test_read_signature(example_dir: Path) -> None:
    model = _loaded(example_dir / "ranker.onnx", "ranker")
    assert model.inputs == [
        TensorSpec(name="dense", datatype="FP32", shape=[-1, 4]),
        TensorSpec(name="item_ids", datatype="INT64", shape=[-1, 3]),
    ]
    assert model.output_names == ["score", "embedding"]
    assert [o.shape for o in model.outputs] == [[-1, 1], [-1, 8]]
    zeros = example_inputs(model.inputs, batch=3)
    assert zeros["dense"].shape == (3, 4)
    assert zeros["item_ids"].dtype == np.int64


def test_predict_matches_plain_onnxruntime_ranker(example_dir: Path) -> None:
    path = example_dir / "ranker.onnx"
    model = _loaded(path, "ranker")
    rng = np.random.default_rng(7)
    feed: dict[str, np.ndarray] = {
        "dense": rng.standard_normal((5, 4)).astype(np.float32),
        "item_ids": rng.integers(0, 100, size=(5, 3)).astype(np.int64),
    }
    ours = model.predict(feed)
    score, embedding = _plain(path).run(["score", "embedding"], feed)
    assert list(ours) == ["score", "embedding"]
    np.testing.assert_allclose(ours["score"], score, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours["embedding"], embedding, rtol=1e-6, atol=1e-7)
    only = model.predict(feed, outputs=["embedding"])
    assert list(only) == ["embedding"]
    np.testing.assert_allclose(only["embedding"], embedding, rtol=1e-6, atol=1e-7)


def test_predict_matches_plain_onnxruntime_iris_and_mlp(example_dir: Path) -> None:
    iris = _loaded(example_dir / "iris.onnx", "iris")
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
    label, probs = _plain(example_dir / "iris.onnx").run(["label", "probabilities"], {"float_input": x})
    ours = iris.predict({"float_input": x})
    np.testing.assert_array_equal(ours["label"], label)
    assert ours["label"].tolist() == [0, 2, 1]
    np.testing.assert_allclose(ours["probabilities"], probs, rtol=1e-6, atol=1e-7)
    # float64 input (what JSON decoding gives) is cast to the model's FP32, same answer
    np.testing.assert_allclose(iris.predict({"float_input": x.astype(np.float64)})["probabilities"], probs, rtol=1e-6)

    mlp = _loaded(example_dir / "mlp.onnx", "mlp")
    xm = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    (logits,) = _plain(example_dir / "mlp.onnx").run(["logits"], {"input": xm})
    np.testing.assert_allclose(mlp.predict({"input": xm})["logits"], logits, rtol=1e-5, atol=1e-5)


def test_predict_refuses_bad_requests_as_invalid_input(example_dir: Path) -> None:
    model = _loaded(example_dir / "ranker.onnx", "ranker")
    feed: dict[str, np.ndarray] = {
        "dense": np.zeros((1, 4), dtype=np.float32),
        "item_ids": np.zeros((1, 3), dtype=np.int64),
    }
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) \['nope'\]"):
        model.predict(feed, outputs=["nope"])
    with pytest.raises(InvalidInput, match="missing input"):
        model.predict({"dense": feed["dense"]})
    with pytest.raises(InvalidInput, match=r"expected \[-1, 3\]"):
        model.predict({"dense": feed["dense"], "item_ids": np.zeros((1, 4), dtype=np.int64)})
