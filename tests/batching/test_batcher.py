"""Dynamic batching (modelfn.batching): joined runs split back to the right requests, limits honoured, bad
requests failing alone, dynamically quantized models joined without changing any request's result, and the
acceptance run: 64 concurrent mixed-protocol requests against `modelfn serve --batching` as a real process."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.localserver import serve_process

from modelfn.batching.batcher import Batcher
from modelfn.batching.rewrite import SEGMENTS, segment_graph
from modelfn.batching.stats import BatchStats
from modelfn.errors import InvalidInput
from modelfn.http import create_app
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.settings import Settings

HEADER = "Inference-Header-Content-Length"
BUCKET = "test-models"  # where the session fixture `s3_store` published the examples (tests/conftest.py)


# ---- fixtures ------------------------------------------------------------------------------------------------
def build_small(path: Path) -> Path:
    """y = x @ W + b (FP32 [N,4] -> [N,3]) and its sigmoid: rows never interact."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Sigmoid", ["y"], ["p"]),
        ],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory, example_dir: Path) -> str:
    """A folder store: `small` v1 and `mlpq` v1 (the int8 MLP published as it is, no quantization metadata, so
    the batcher has to find the dynamic quantization in the graph itself)."""
    from modelfn_tools.publish import publish

    root = tmp_path_factory.mktemp("batch-store")
    small = build_small(root / "small.onnx")
    store = str(root / "store")
    publish(small, store, "small", progress=False)
    publish(example_dir / "mlp_int8.onnx", store, "mlpq", progress=False)
    return store


@pytest.fixture
def registry(local_store: str, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry.from_uri(local_store, Settings(cache_dir=tmp_path / "cache"))


def batcher_for(registry: ModelRegistry, adaptive: bool = False, **settings: Any) -> Batcher:
    """A batcher with its own stats, on the registry's settings plus `settings`; joining whatever it costs unless
    `adaptive` (these models are far too small for a joined run to pay)."""
    cfg = registry.settings.replace(**settings)
    return Batcher(cfg, default=True, stats=BatchStats(), adaptive=adaptive)


def rows(n: int, seed: int, scale: float = 1.0, width: int = 4) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, width)) * scale).astype(np.float32)


def alone(model: LoadedModel, x: np.ndarray, name: str | None = None) -> dict[str, np.ndarray]:
    names = model.output_names
    return dict(zip(names, model.session.run(names, {name or model.inputs[0].name: x}), strict=True))


# ---- the batcher on its own ------------------------------------------------------------------------------------
def test_joined_run_is_split_back_by_each_requests_rows(registry: ModelRegistry) -> None:
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_size=64, max_batch_wait_ms=50)
    sizes = [1, 2, 3, 1, 4, 1, 2]
    xs = [rows(n, seed=i, scale=i + 1) for i, n in enumerate(sizes)]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.predict(model, {"x": x}) for x in xs))

    results = asyncio.run(main())
    for x, got in zip(xs, results, strict=True):
        want = alone(model, x)
        assert set(got) == {"y", "p"}
        for name in want:
            assert got[name].shape == (len(x), 3)
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    stats = batcher.stats.snapshot()
    assert stats["runs"] == 1  # all seven were queued before the first run: one session.run
    assert stats["batched_runs"] == 1
    assert stats["max_batch_requests"] == 7
    assert stats["batch_sizes"] == {str(sum(sizes)): 1}
    assert batcher.snapshot()["models"]["small/1"]["mode"] == "join"


def test_max_batch_size_is_honoured_and_bigger_requests_run_alone(registry: ModelRegistry) -> None:
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_size=4, max_batch_wait_ms=50)
    xs = [rows(1, seed=i) for i in range(10)] + [rows(6, seed=99)]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.predict(model, {"x": x}) for x in xs))

    for x, got in zip(xs, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(got["y"], alone(model, x)["y"], rtol=1e-6, atol=1e-7)
    stats = batcher.stats.snapshot()
    # ten one-row requests in runs of at most 4 rows (4 + 4 + 2); the 6-row request alone
    assert stats["batch_sizes"] == {"2": 1, "4": 2, "6": 1}
    assert stats["batched_runs"] == 3
    assert stats["requests"] == 11


def test_a_burst_after_a_quiet_spell_is_joined(registry: ModelRegistry) -> None:
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    xs = [rows(1, seed=i) for i in range(7)]

    async def main() -> list[dict[str, np.ndarray]]:
        first = await batcher.predict(model, {"x": xs[0]})  # alone, and it prepares the runner's plan
        return [first, *await asyncio.gather(*(batcher.predict(model, {"x": x}) for x in xs[1:]))]

    for x, got in zip(xs, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(got["y"], alone(model, x)["y"], rtol=1e-6, atol=1e-7)
    stats = batcher.stats.snapshot()
    assert stats["batch_sizes"] == {"1": 1, "6": 1}
    assert stats["batched_runs"] == 1


def test_requests_asking_for_different_outputs_are_not_joined(registry: ModelRegistry) -> None:
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    a, b, c = rows(1, 1), rows(2, 2), rows(1, 3)

    async def main() -> tuple[dict[str, np.ndarray], ...]:
        return await asyncio.gather(
            batcher.predict(model, {"x": a}, ["p"]),
            batcher.predict(model, {"x": b}),
            batcher.predict(model, {"x": c}, ["p"]),
        )

    ra, rb, rc = asyncio.run(main())
    assert set(ra) == {"p"} and set(rc) == {"p"} and set(rb) == {"y", "p"}
    np.testing.assert_allclose(ra["p"], alone(model, a)["p"], rtol=1e-6)
    np.testing.assert_allclose(rb["y"], alone(model, b)["y"], rtol=1e-6)
    np.testing.assert_allclose(rc["p"], alone(model, c)["p"], rtol=1e-6)
    stats = batcher.stats.snapshot()
    assert stats["runs"] == 2 and stats["batched_runs"] == 1  # {a, c} joined, b on its own
    assert stats["batch_sizes"] == {"2": 2}


def test_a_bad_request_fails_alone(registry: ModelRegistry) -> None:
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    good = [rows(1 + i % 3, seed=i) for i in range(6)]
    bad = np.zeros((1, 5), dtype=np.float32)

    async def main() -> list[Any]:
        calls = [batcher.predict(model, {"x": x}) for x in good[:3]]
        calls.append(batcher.predict(model, {"x": bad}))
        calls += [batcher.predict(model, {"x": x}) for x in good[3:]]
        calls.append(batcher.predict(model, {"x": good[0]}, ["nope"]))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[3], InvalidInput) and results[3].status == 400
    assert "shape [1, 5]" in results[3].message
    assert isinstance(results[-1], InvalidInput) and "nope" in results[-1].message
    for x, got in zip(good, results[:3] + results[4:-1], strict=True):
        np.testing.assert_allclose(got["y"], alone(model, x)["y"], rtol=1e-6, atol=1e-7)
    stats = batcher.stats.snapshot()
    assert stats["requests"] == 6 and stats["batched_runs"] == 1


class NaNRefusingSession:
    """The real session, except that any NaN in a feed makes run() raise (a request that passes validation but
    fails inside the model)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        if any(np.isnan(v).any() for v in feed.values() if v.dtype.kind == "f"):
            raise RuntimeError("NaN in the input")
        return self.session.run(names, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_a_failing_joined_run_is_retried_one_by_one(registry: ModelRegistry) -> None:
    loaded = registry.get("small", 1)
    model = LoadedModel(
        loaded.name,
        loaded.version,
        cast(ort.InferenceSession, NaNRefusingSession(loaded.session)),
        loaded.inputs,
        loaded.outputs,
        sha256=loaded.sha256,
    )
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    xs = [rows(2, seed=i) for i in range(5)]
    xs[2] = xs[2].copy()
    xs[2][1, 1] = np.nan

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(batcher.predict(model, {"x": x}) for x in xs), return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[2], RuntimeError)
    for i in (0, 1, 3, 4):
        np.testing.assert_allclose(results[i]["y"], alone(loaded, xs[i])["y"], rtol=1e-6, atol=1e-7)
    stats = batcher.stats.snapshot()
    assert stats["fallbacks"] == 1
    assert stats["batched_runs"] == 0 and stats["requests"] == 4  # the four good ones, one run each


def test_max_wait_is_honoured_while_more_requests_are_announced(registry: ModelRegistry) -> None:
    """A request arriving alone while others are announced (but never come) waits at most max_batch_wait_ms,
    then runs; with a zero wait it runs at once."""
    model = registry.get("small", 1)
    x = rows(3, seed=5)
    for wait in (20.0, 0.0):
        batcher = batcher_for(registry, max_batch_wait_ms=wait)

        async def main(b: Batcher = batcher) -> dict[str, np.ndarray]:
            with b.arriving():  # an announced request that never calls predict
                return await b.predict(model, {"x": x})

        got = asyncio.run(main())
        np.testing.assert_allclose(got["y"], alone(model, x)["y"], rtol=1e-6, atol=1e-7)
        assert batcher.stats.snapshot()["runs"] == 1
        assert batcher.incoming == 0


def test_prometheus_metrics_are_recorded(registry: ModelRegistry) -> None:
    prom = pytest.importorskip("prometheus_client")
    model = registry.get("small", 1)
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    labels = {"model": "small", "version": "1"}
    before = prom.REGISTRY.get_sample_value("modelfn_batches_total", labels) or 0.0
    rows_before = prom.REGISTRY.get_sample_value("modelfn_batch_size_sum", labels) or 0.0

    async def main() -> None:
        await asyncio.gather(*(batcher.predict(model, {"x": rows(1, seed=i)}) for i in range(3)))

    asyncio.run(main())
    assert prom.REGISTRY.get_sample_value("modelfn_batches_total", labels) == before + 1
    assert prom.REGISTRY.get_sample_value("modelfn_batch_size_sum", labels) == rows_before + 3


# ---- dynamically quantized models -----------------------------------------------------------------------------
def quantized_requests() -> list[np.ndarray]:
    """Requests of 1-3 rows with very different ranges (and an all-zero one): per-tensor activation scales
    would differ a lot between them and a naively joined batch."""
    sizes = [1, 1, 2, 3, 1, 1, 2, 1]
    scales = [1.0, 50.0, 0.01, 3.0, 0.0, 1.0, 10.0, 0.5]
    return [rows(n, seed=10 + i, scale=s, width=256) for i, (n, s) in enumerate(zip(sizes, scales, strict=True))]


def test_naive_joining_would_change_int8_results(registry: ModelRegistry) -> None:
    """The premise: DynamicQuantizeLinear scales over the whole tensor, so joining rows changes their results."""
    model = registry.get("mlpq", 1)
    xs = quantized_requests()
    naive = model.session.run(["logits"], {"input": np.concatenate(xs)})[0]
    singles = np.concatenate([alone(model, x)["logits"] for x in xs])
    assert not np.allclose(naive, singles, rtol=1e-2, atol=1e-3)


def test_int8_requests_are_joined_with_bit_identical_results(registry: ModelRegistry) -> None:
    model = registry.get("mlpq", 1)
    batcher = batcher_for(registry, max_batch_wait_ms=50)
    xs = quantized_requests()

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.predict(model, {"input": x}) for x in xs))

    for x, got in zip(xs, asyncio.run(main()), strict=True):
        want = alone(model, x)
        for name in ("logits", "probabilities"):
            assert np.array_equal(got[name], want[name]), name  # exact, not merely close
    stats = batcher.stats.snapshot()
    assert stats["runs"] == 1 and stats["max_batch_requests"] == len(xs)
    info = batcher.snapshot()["models"]["mlpq/1"]
    assert info["mode"] == "segments", info


def test_int8_model_without_its_artifact_is_never_joined(registry: ModelRegistry) -> None:
    model = registry.get("mlpq", 1)
    batcher = Batcher(registry.settings, default=True, artifact=lambda m: None, stats=BatchStats(), adaptive=False)
    xs = quantized_requests()[:4]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.predict(model, {"input": x}) for x in xs))

    for x, got in zip(xs, asyncio.run(main()), strict=True):
        assert np.array_equal(got["logits"], alone(model, x)["logits"])
    stats = batcher.stats.snapshot()
    assert stats["batched_runs"] == 0 and stats["runs"] == len(xs)
    assert batcher.snapshot()["models"]["mlpq/1"]["mode"] == "alone"


def test_segment_graph_only_rewrites_dynamic_quantization(example_dir: Path) -> None:
    assert segment_graph((example_dir / "mlp.onnx").read_bytes()) is None
    rewritten = segment_graph((example_dir / "mlp_int8.onnx").read_bytes())
    assert rewritten is not None
    session = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    assert SEGMENTS in [i.name for i in session.get_inputs()]
    original = ort.InferenceSession(str(example_dir / "mlp_int8.onnx"), providers=["CPUExecutionProvider"])
    xs = quantized_requests()
    joined = session.run(
        ["logits"],
        {"input": np.concatenate(xs), SEGMENTS: np.repeat(np.arange(len(xs)), [len(x) for x in xs])},
    )[0]
    singles = np.concatenate([original.run(["logits"], {"input": x})[0] for x in xs])
    assert np.array_equal(joined, singles)


def hand_quantized(opset: int, shape: list[Any] | None, b_zero_point: bool = True) -> Any:
    """Two layers as quantize_dynamic writes them (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul by the
    activation scale times the weight scale), built by hand to cover what the example MLP does not: other opsets,
    an input of rank 3 or of unknown rank, weights without a zero point. Returns the onnx ModelProto."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(opset)
    nodes, inits = [], []
    prev, width = "x", 6
    for i, out in enumerate((5, 4)):
        w = rng.integers(-127, 128, (width, out), dtype=np.int8)
        inits += [
            numpy_helper.from_array(w, f"Wq{i}"),
            numpy_helper.from_array(np.array(0.01 * (i + 1), dtype=np.float32), f"Ws{i}"),
        ]
        if b_zero_point:
            inits.append(numpy_helper.from_array(np.array(i - 1, dtype=np.int8), f"Wzp{i}"))
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [prev], [f"q{i}", f"s{i}", f"z{i}"]),
            helper.make_node("Mul", [f"s{i}", f"Ws{i}"], [f"scale{i}"]),
            helper.make_node(
                "MatMulInteger", [f"q{i}", f"Wq{i}", f"z{i}", *([f"Wzp{i}"] if b_zero_point else [])], [f"acc{i}"]
            ),
            helper.make_node("Cast", [f"acc{i}"], [f"accf{i}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"accf{i}", f"scale{i}"], [f"y{i}"]),
            helper.make_node("Relu", [f"y{i}"], [f"h{i}"]),
        ]
        prev, width = f"h{i}", out
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None if shape is None else [*shape[:-1], width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modelfn-tests")
    model.ir_version = 8
    return model


HAND = {  # name: (opset, input shape, weights with a zero point)
    "opset 17, rank 2": (17, ["N", 6], True),
    "opset 18, rank 2, no weight zero point": (18, ["N", 6], False),
    "opset 18, rank 3": (18, ["N", 2, 6], True),
    "opset 13, unknown rank": (13, None, True),
}


def refusals() -> dict[str, Any]:
    """Graphs this rewrite does not cover, each made from a hand-built one by a single change."""
    from onnx import TensorProto, helper

    def changed(change: Callable[[Any], None], opset: int = 17) -> Any:
        model = hand_quantized(opset, ["N", 6])
        change(model.graph)
        return model

    def weights_as_input(graph: Any) -> None:
        w = next(i for i in graph.initializer if i.name == "Wq0")
        graph.initializer.remove(w)
        graph.input.append(helper.make_tensor_value_info("Wq0", TensorProto.INT8, [6, 5]))

    def weights_of_rank_3(graph: Any) -> None:
        w = next(i for i in graph.initializer if i.name == "Wq0")
        w.dims[:] = [1, 6, 5]

    def zero_point_as_input(graph: Any) -> None:
        zp = next(i for i in graph.initializer if i.name == "Wzp0")
        graph.initializer.remove(zp)
        graph.input.append(helper.make_tensor_value_info("Wzp0", TensorProto.INT8, []))

    def quantization_in_a_subgraph(graph: Any) -> None:
        body = helper.make_graph(
            [helper.make_node("DynamicQuantizeLinear", ["x"], ["bq", "bs", "bz"])],
            "body",
            [],
            [helper.make_tensor_value_info("bq", TensorProto.UINT8, None)],
        )
        graph.node.append(helper.make_node("If", ["c"], ["branch"], then_branch=body, else_branch=body))

    return {
        "opset 10": hand_quantized(10, ["N", 6]),
        "quantized tensor is a graph output": changed(
            lambda g: g.output.append(helper.make_tensor_value_info("q0", TensorProto.UINT8, None))
        ),
        "quantized tensor feeds another op": changed(
            lambda g: g.node.append(helper.make_node("Identity", ["q0"], ["e"]))
        ),
        "scale feeds another op": changed(lambda g: g.node.append(helper.make_node("Identity", ["s0"], ["e"]))),
        "zero point feeds another op": changed(lambda g: g.node.append(helper.make_node("Identity", ["z0"], ["e"]))),
        "zero point of another quantized tensor": changed(
            lambda g: g.node.append(helper.make_node("MatMulInteger", ["q1", "Wq1", "z0"], ["e"]))
        ),
        "weights not an initializer": changed(weights_as_input),
        "weights of rank 3": changed(weights_of_rank_3),
        "weight zero point not an initializer": changed(zero_point_as_input),
        "quantization inside a subgraph": changed(quantization_in_a_subgraph),
        "a name the rewrite would use": changed(
            lambda g: g.node.append(helper.make_node("Relu", ["h1"], ["__modelfn_c_0"]))
        ),
        "already taking the segments input": changed(
            lambda g: g.input.append(helper.make_tensor_value_info(SEGMENTS, TensorProto.INT64, ["N"]))
        ),
    }


# Pinned: the sha256 of segment_graph's output computed before the rewrite was split into a class (one function of
# complexity 33 then): the same model must still give the same bytes. The example's input is pinned too, so a
# failure tells a changed rewrite from a changed example (tools' build_mlp/quantize, onnx, onnxruntime).
EXAMPLE_INT8_MLP = "2c62fd3a2fa1c8b38e56d7122f4979f3191e49ccf7fe992587b979c53ff8b026"
EXAMPLE_INT8_MLP_REWRITTEN = "e4ac46547f027edaafe04b6925191b27b6c81bb9f9cdcf0a20ed090507a8e472"
HAND_REWRITTEN = {
    "opset 17, rank 2": "a80c40cceb30f85e60b0cf2b0109d6f03cce692dc490f72900a39958b1af612b",
    "opset 18, rank 2, no weight zero point": "12a98175af583a6f21c5603d623f3f81f9c9a3d6be9a6f0177f259a3eed0bd0d",
    "opset 18, rank 3": "08c2a8ab8a65cbc1e62454986a3c167c4bc9ebc9a30c8f83c3057e67429171d2",
    "opset 13, unknown rank": "820d1d3546c67a6892586a7c6eed1275a8bba860aada64e913cc68ad02900e08",
}


def test_segment_graph_of_the_example_int8_mlp_is_byte_identical_to_before(example_dir: Path) -> None:
    data = (example_dir / "mlp_int8.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == EXAMPLE_INT8_MLP, "the example int8 MLP itself changed"
    rewritten = segment_graph(data)
    assert rewritten is not None
    assert hashlib.sha256(rewritten).hexdigest() == EXAMPLE_INT8_MLP_REWRITTEN


@pytest.mark.parametrize("case", list(HAND))
def test_segment_graph_of_hand_built_graphs_is_byte_identical_to_before_and_exact(case: str) -> None:
    data = hand_quantized(*HAND[case]).SerializeToString()
    rewritten = segment_graph(data)
    assert rewritten is not None
    assert hashlib.sha256(rewritten).hexdigest() == HAND_REWRITTEN[case]
    original = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    joined_session = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    inner = [2, 6] if len(HAND[case][1] or []) == 3 else [6]
    rng = np.random.default_rng(3)
    xs = [
        (rng.standard_normal((n, *inner)) * s).astype(np.float32) for n, s in [(1, 1.0), (2, 50.0), (1, 0.0), (3, 0.01)]
    ]
    feed = {"x": np.concatenate(xs), SEGMENTS: np.repeat(np.arange(len(xs)), [len(x) for x in xs])}
    joined = joined_session.run(None, feed)[0]
    singles = np.concatenate([original.run(None, {"x": x})[0] for x in xs])
    assert np.array_equal(joined, singles)


@pytest.mark.parametrize("case", list(refusals()))
def test_segment_graph_refuses_graphs_it_does_not_cover(case: str) -> None:
    """Each is the hand-built graph of opset 17 (rewritten above) with one change the rewrite cannot keep exact."""
    assert segment_graph(refusals()[case].SerializeToString()) is None


# ---- the app ----------------------------------------------------------------------------------------------------
def test_batching_off_means_no_batcher(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the batcher must not be used when batching is off")

    monkeypatch.setattr(Batcher, "predict", never)
    app = create_app(registry)  # settings.batching is False by default
    assert app.state.batcher is None
    with TestClient(app) as client:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        r = client.post("/v2/models/small/infer", json=body)
        assert r.status_code == 200, r.text
        assert "batching" not in client.get("/health").json()
    assert create_app(registry, batching=False).state.batcher is None

    on = ModelRegistry(registry.repo, registry.settings.replace(batching=True))
    assert create_app(on).state.batcher is not None
    assert create_app(on, batching=False).state.batcher is None
    per_model = registry.settings.replace(models_config={"small": {"batching": True}})
    batcher = create_app(ModelRegistry(registry.repo, per_model)).state.batcher
    assert batcher is not None and batcher.enabled("small") and not batcher.enabled("mlpq")


def test_lambda_functions_never_batch(local_store: str, tmp_path: Path) -> None:
    from modelfn.function import ModelFunction

    fn = ModelFunction(Settings(store=local_store, model="small", batching=True, cache_dir=tmp_path / "c"))
    assert fn.service.batcher is None


def test_serve_flags() -> None:
    from modelfn_tools.cli import build_parser

    a = build_parser().parse_args(["serve", "--batching", "--max-batch-size", "8", "--max-batch-wait-ms", "1.5"])
    assert (a.batching, a.max_batch_size, a.max_batch_wait_ms) == (True, 8, 1.5)
    assert build_parser().parse_args(["serve", "--no-batching"]).batching is False
    assert build_parser().parse_args(["serve"]).batching is None


def test_app_batches_all_three_protocols(registry: ModelRegistry) -> None:
    app = create_app(registry, batching=True)
    batcher = app.state.batcher
    batcher.stats = BatchStats()
    batcher.adaptive = False
    xs = [rows(1 + i % 2, seed=i) for i in range(12)]

    async def one(client: httpx.AsyncClient, i: int, x: np.ndarray) -> np.ndarray:
        if i % 3 == 0:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
            r = await client.post("/v2/models/small/infer", json=body)
            assert r.status_code == 200, r.text
            y = next(o for o in r.json()["outputs"] if o["name"] == "y")
            return np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])
        if i % 3 == 1:
            r = await client.post("/v1/models/small:predict", json={"instances": x.tolist()})
            assert r.status_code == 200, r.text
            return np.asarray([p["y"] for p in r.json()["predictions"]], dtype=np.float32)
        r = await client.post("/predict?model=small", json={"features": x.tolist()})
        assert r.status_code == 200, r.text
        return np.asarray([p["y"] for p in r.json()["predictions"]], dtype=np.float32)

    async def main() -> tuple[list[np.ndarray], dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://batch") as client:
            got = await asyncio.gather(*(one(client, i, x) for i, x in enumerate(xs)))
            health = (await client.get("/health")).json()
        return got, health

    got, health = asyncio.run(main())
    model = registry.get("small", 1)
    for x, y in zip(xs, got, strict=True):
        np.testing.assert_allclose(y, alone(model, x)["y"], rtol=1e-6, atol=1e-6)
    assert health["batching"]["requests"] == len(xs)
    assert health["batching"]["models"]["small/1"]["mode"] == "join"
    assert health["batching"]["max_batch_requests"] > 1


# ---- acceptance: `modelfn serve --batching` as a real process ---------------------------------------------------
@pytest.fixture(scope="module")
def batching_server(s3_store: str, aws: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = ["--batching-always", "--max-batch-size", "16", "--max-batch-wait-ms", "20"]
    with serve_process(
        ["--store", s3_store, "--models", "mlp", *flags], tmp_path_factory.mktemp("batch-serve")
    ) as base:
        yield base


@pytest.fixture(scope="module")
def published_mlp(s3_store: str) -> dict[int, ort.InferenceSession]:
    """onnxruntime sessions on the exact bytes published for mlp v1 (fp32) and v2 (int8)."""
    s3 = boto3.client("s3")
    sessions = {}
    for version in (1, 2):
        data = s3.get_object(Bucket=BUCKET, Key=f"models/mlp/{version}/model.onnx")["Body"].read()
        sessions[version] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sessions


async def send(client: httpx.AsyncClient, kind: str, version: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """One request in one of the protocols; the outputs it answered, by name, as float32 arrays."""
    n = len(x)
    if kind == "tf":
        r = await client.post(f"/v1/models/mlp/versions/{version}:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        return {k: np.asarray([p[k] for p in preds], dtype=np.float32) for k in ("logits", "probabilities")}
    url = f"/v2/models/mlp/versions/{version}/infer"
    if kind == "v2-binary":
        spec = {"name": "input", "datatype": "FP32", "shape": [n, 256], "parameters": {"binary_data_size": x.nbytes}}
        head = json.dumps({"inputs": [spec]}).encode()
        r = await client.post(
            url,
            content=head + x.astype("<f4").tobytes(),
            headers={HEADER: str(len(head)), "Content-Type": "application/octet-stream"},
        )
    else:
        body: dict[str, Any] = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 256], "data": x.ravel().tolist()}]
        }
        if kind == "v2-probabilities":
            body["outputs"] = [{"name": "probabilities"}]
        r = await client.post(url, json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in r.json()["outputs"]}


def test_64_concurrent_mixed_requests_each_get_their_own_result(
    batching_server: str, published_mlp: dict[int, ort.InferenceSession]
) -> None:
    kinds = ["v2-json", "v2-binary", "tf", "v2-probabilities"]
    cases = []
    for i in range(64):
        version = 1 if i % 4 == 3 else 2  # 16 requests to fp32 v1, 48 to int8 v2: never joined together
        n = 1 if i % 5 else 2 + i % 2  # mostly one row, some of 2 or 3
        x = rows(n, seed=1000 + i, scale=[1.0, 5.0, 0.1, 20.0][i % 4], width=256)
        cases.append((kinds[(i // 2) % 4], version, x))

    async def main() -> list[dict[str, np.ndarray]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=batching_server, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(send(client, kind, v, x) for kind, v, x in cases))

    results = asyncio.run(main())
    for (kind, version, x), got in zip(cases, results, strict=True):
        logits, probabilities = published_mlp[version].run(["logits", "probabilities"], {"input": x})
        want = {"logits": logits, "probabilities": probabilities}
        assert set(got) == ({"probabilities"} if kind == "v2-probabilities" else {"logits", "probabilities"})
        for name, value in got.items():
            assert value.shape == (len(x), 10)
            np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-5, err_msg=f"{kind} v{version}")
            if version == 2:  # int8: joined requests are quantized per request, so results are bit-identical
                assert np.array_equal(value, want[name]), f"{kind} v{version} {name}"

    info = httpx.get(f"{batching_server}/health").json()["batching"]
    assert info["max_batch_rows"] > 1 and info["max_batch_requests"] > 1 and info["batched_runs"] >= 1
    assert info["models"]["mlp/2"]["mode"] == "segments", info["models"]
    assert info["models"]["mlp/1"]["mode"] == "join"


def test_one_bad_request_among_concurrent_good_ones_fails_alone(
    batching_server: str, published_mlp: dict[int, ort.InferenceSession]
) -> None:
    xs = [rows(1, seed=2000 + i, width=256) for i in range(12)]
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 255], "data": [0.5] * 255}]}

    async def main() -> tuple[list[dict[str, np.ndarray]], httpx.Response]:
        async with httpx.AsyncClient(base_url=batching_server, timeout=60) as client:
            good = [send(client, "v2-json", 2, x) for x in xs]
            bad_call = client.post("/v2/models/mlp/versions/2/infer", json=bad)
            results: list[Any] = list(await asyncio.gather(*good, bad_call))
            return results[:-1], results[-1]

    answers, bad_response = asyncio.run(main())
    assert bad_response.status_code == 400
    assert set(bad_response.json()) == {"error"} and "[1, 255]" in bad_response.json()["error"]
    for x, got in zip(xs, answers, strict=True):
        assert np.array_equal(got["logits"], published_mlp[2].run(["logits"], {"input": x})[0])
