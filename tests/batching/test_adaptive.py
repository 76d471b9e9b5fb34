"""Adaptive batching: a version is joined only where a joined run measured worth it at start (modelfn.batching.costs);
a model too cheap for that runs each request on the event loop, as with batching off, even under concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from modelfn.batching.batcher import Batcher
from modelfn.batching.costs import MARGIN, Costs, loop_costs, run_costs
from modelfn.batching.stats import BatchStats
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import load_session, read_signature
from modelfn.settings import Settings


def loaded(path: Path, name: str) -> LoadedModel:
    session = load_session(path, Settings(intra_op_threads=1))
    inputs, outputs = read_signature(session)
    return LoadedModel(
        name=name, version=1, session=session, inputs=inputs, outputs=outputs, metadata={"artifact": str(path)}
    )


def concurrent(batcher: Batcher, model: LoadedModel, xs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    async def main() -> list[dict[str, np.ndarray]]:
        first = await batcher.predict(model, {"x": xs[0]})  # prepares the plan and measures the costs
        return [first, *await asyncio.gather(*(batcher.predict(model, {"x": x}) for x in xs[1:]))]

    return asyncio.run(main())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return loaded(chain(tmp_path_factory.mktemp("tiny") / "tiny.onnx", ops=2), "tiny")


def chain(path: Path, ops: int = 3000) -> Path:
    """[N, 8] -> [N, 8] through `ops` elementwise Sin/Cos nodes: each run costs hundreds of microseconds whatever its
    rows (every node is dispatched once per run), in runs short enough that a busy machine rarely interrupts one."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sin" if i % 2 else "Cos", [f"t{i}" if i else "x"], [f"t{i + 1}"]) for i in range(ops)]
    nodes.append(helper.make_node("Identity", [f"t{ops}"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """session.run dominates: a fixed cost per run that 16 rows pay once."""
    return loaded(chain(tmp_path_factory.mktemp("heavy") / "heavy.onnx"), "heavy")


def rows(n: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def test_a_model_too_cheap_to_join_runs_each_request_on_the_loop(tiny: LoadedModel) -> None:
    batcher = Batcher(Settings(), default=True, stats=BatchStats())
    xs = [rows(1 + i % 2, 8, i) for i in range(24)]  # the tiny model's input is [N, 8] too
    for x, got in zip(xs, concurrent(batcher, tiny, xs), strict=True):
        np.testing.assert_allclose(got["y"], tiny.session.run(None, {"x": x})[0], rtol=1e-6)
    info = batcher.snapshot()["models"]["tiny/1"]
    assert info["mode"] == "join" and info["inline"] is True
    assert info["costs"]["joined"] is False
    assert info["costs"]["saving_us"] < MARGIN * info["costs"]["overhead_us"]
    stats = batcher.stats.snapshot()
    assert stats["batched_runs"] == 0 and stats["runs"] == len(xs)  # 23 concurrent requests, none joined
    assert not batcher.enabled("tiny")  # from now on the server's batching-off path serves it


def test_the_same_model_is_joined_when_told_to_join_whatever_it_costs(tiny: LoadedModel) -> None:
    batcher = Batcher(Settings(), default=True, stats=BatchStats(), adaptive=False)
    xs = [rows(1, 8, i) for i in range(12)]
    concurrent(batcher, tiny, xs)
    assert batcher.stats.snapshot()["batched_runs"] >= 1
    assert "costs" not in batcher.snapshot()["models"]["tiny/1"]


def test_a_model_whose_run_dominates_is_joined(heavy: LoadedModel) -> None:
    batcher = Batcher(Settings(), default=True, stats=BatchStats())
    xs = [rows(1, 8, i) for i in range(17)]
    for x, got in zip(xs, concurrent(batcher, heavy, xs), strict=True):
        np.testing.assert_allclose(got["y"], heavy.session.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    info = batcher.snapshot()["models"]["heavy/1"]
    assert info["inline"] is False and info["costs"]["joined"] is True, info
    assert batcher.enabled("heavy")
    stats = batcher.stats.snapshot()
    assert stats["batched_runs"] >= 1 and stats["max_batch_requests"] == 16  # the 16 sent together, one run


def test_an_unjoinable_model_runs_on_the_loop(tiny: LoadedModel) -> None:
    batcher = Batcher(Settings(), default=True, stats=BatchStats(), artifact=lambda m: None)
    concurrent(batcher, tiny, [rows(1, 8, i) for i in range(6)])
    info = batcher.snapshot()["models"]["tiny/1"]
    assert info["mode"] == "alone" and info["inline"] is True


def test_costs_measure_a_saving_for_the_heavy_model_only(tiny: LoadedModel, heavy: LoadedModel) -> None:
    def run(model: LoadedModel) -> Costs:
        return run_costs(model, 16, lambda feed, n: model.session.run(None, dict(feed)), 0.05)

    light, big = run(tiny), run(heavy)
    assert big.saving_us > 10 * light.saving_us
    assert big.joined_us < 16 * big.single_us  # one run of 16 rows beats 16 runs of one


def test_loop_costs_are_positive() -> None:
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> tuple[float, float]:
        with ThreadPoolExecutor(1) as pool:
            return await loop_costs(pool, 8, rounds=3)

    per_batch, per_request = asyncio.run(main())
    assert per_batch > 0 and per_request > 0


def test_pays_needs_the_margin() -> None:
    # the fp32 MLP 1024-4096-4096-1024: milliseconds saved against 16 round trips
    assert Costs(16, single_us=10_000.0, joined_us=30_000.0, batch_us=60.0, request_us=5.0).pays()
    # the int8 MLP: 530 µs saved at 16 rows, but 16 round trips cost 16 x 65 µs (always joining lost on it)
    assert not Costs(16, single_us=55.0, joined_us=350.0, batch_us=60.0, request_us=5.0).pays()
    assert Costs(16, single_us=500.0, joined_us=1000.0, batch_us=60.0, request_us=5.0).pays()  # 7000 vs 2 x 1040
