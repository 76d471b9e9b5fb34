"""Dynamic batching for long-running servers: concurrent requests for the same model version become one
`session.run`.

How a request goes through it (`Batcher.predict`):

1. It is validated on its own first (requested outputs, `signature.validate_inputs`), so a bad request fails alone
   with its own 400 and never reaches a batch.
2. It gets a join key: the dtypes and non-batch dims of its inputs and the outputs it asks for. Only requests with
   equal keys are joined, and only when every input and requested output has a variable leading (batch)
   dimension. A request that cannot be joined, or has more rows than `max_batch_size`, runs alone.
3. Each model version has one runner: a queue drained by one asyncio task into one worker thread (onnxruntime
   releases the GIL, so the event loop keeps serving while a batch runs). While the worker is busy the queue
   keeps filling. When it is free, the group whose oldest request has waited longest runs as soon as it holds
   `max_batch_size` rows, or `max_batch_wait_ms` after that oldest request arrived, or at once when no other
   request is on its way (the app counts requests between their arrival and `predict` with `arriving()`), so a
   lone client never waits for company. (Sending a request that finds the runner idle straight to the worker,
   skipping the queue, saves ~20 us at one connection but measured ~35% fewer requests/s at 32: it splits the
   requests arriving together into a run of one and a run of the rest.)
4. Joined inputs are concatenated along the batch axis, run once, and the outputs are split back by each
   request's row count; every future gets the rows of its own request. If the joined run raises (or an output
   cannot be split), every member runs again alone, so only the culprit fails.

Per-model settings come from `settings.for_model(name)` (`batching`, `max_batch_size`, `max_batch_wait_ms` in
MODELFN_MODELS_CONFIG). The Lambda path never creates a batcher: one environment serves one request at a time.

Dynamically quantized models (the trade-off)
--------------------------------------------
`quantize_dynamic` models (the int8 MLP) quantize activations at run time with `DynamicQuantizeLinear`, whose
scale and zero point come from the min and max of the *whole* tensor. Joining requests would therefore change
every row's result: a row is quantized with a scale that depends on the other requests in its batch (measured
on the example int8 MLP: up to 10x relative error for a row joined with one of a wider range). Naively joining
them is wrong, and refusing to join them would give up batching for exactly the model that wants it.

What we do instead is run a rewritten copy of the graph for joined batches: it takes one extra input,
`__modelfn_segments` (the request index of each row), and computes each `DynamicQuantizeLinear`'s min/max per
request (a per-row min/max, then a min/max over the rows of the same request via an [rows x rows] mask), so every
request is quantized with exactly the scale and zero point it would get alone. `MatMulInteger`, which
onnxruntime only accepts with a per-tensor zero point for A, is run with a zero point of 0 and corrected by the
exact integer term `zp_request * colsum(B - zp_B)`. Each step is the same float or integer operation onnxruntime
performs (scale = (max - min) / 255, zero point = round-half-even(clamp(-min / scale)), q = clamp(round(x / scale)
+ zp)), so results are bit-identical to running each request alone, not just close. Because kernels could still
differ on some CPU or onnxruntime build (e.g. a fused multiply-add in the fused kernel), the rewritten graph is
verified when the runner starts: random requests of several row counts and ranges (and an all-zero one) are run
joined and alone and must match exactly; otherwise, or when the graph has any other shape (quantization feeding
something other than MatMulInteger, inside a subgraph, a non-float input to verify with, `onnx` not installed),
the model's requests run one at a time in the worker thread (correct, not joined), and `/health` says why.
The rewritten graph is unfused (about 30 small ops per quantized MatMul instead of onnxruntime's fused
DynamicQuantizeMatMul), so a joined batch costs more than the same rows naively joined (and wrong) would, but
far less than running the rows one by one: on the example MLP on a quiet 2-CPU machine, 32 one-row requests take
about 0.6 ms joined against about 2 ms as 32 single runs. A batch of one request always runs the original graph.

The rewritten graph gets a session of its own with spin-waiting off (its pool threads would otherwise take the
CPUs the event loop needs to decode the next batch while one runs).

How a model is classified (once per version, in its worker thread, the first time it is asked for): the artifact
is read where the model cache keeps it (`<cache_dir>/sha256/<sha256>.onnx`) and checked against the sha256 again;
if its bytes name none of the batch-dependent op types (BATCH_SENSITIVE: dynamic quantization ops,
MeanVarianceNormalization) its requests are joined as they are; if they do, the rewrite above is tried; if the
artifact cannot be read, nothing is joined. A model whose graph mixes the rows of a batch in some other way (an
explicit reduction over the batch axis) must not be joined: set `{"<model>": {"batching": false}}` in
MODELFN_MODELS_CONFIG. fp32 models are joined as they are; their joined results can differ from single runs in
the last bits (a GEMM's blocking depends on the row count).

Batch sizes are recorded in `batch_stats` (always) and, when prometheus_client is importable (the `server`
extra), in the `modelfn_batch_size` histogram and `modelfn_batches_total` counter (labels model, version).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.model.onnx import session_options
from modelfn.model.signature import validate_inputs
from modelfn.settings import Settings

log = logging.getLogger("modelfn")

SEGMENTS = "__modelfn_segments"
"""Extra int64 [rows] input of a rewritten (segment-aware) graph: the request index of each row."""

BATCH_SENSITIVE = (b"DynamicQuantize", b"MatMulIntegerToFloat", b"QAttention", b"MeanVarianceNormalization")
"""Op types (as they appear in the protobuf bytes) whose result for a row depends on the other rows of a batch."""

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


# ---- statistics ------------------------------------------------------------------------------------------------
class BatchStats:
    """Process-wide record of the runs a batcher made: how many, how many rows, how many joined requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.runs = 0  # every session.run the batcher made
            self.batched_runs = 0  # runs that joined more than one request
            self.requests = 0
            self.rows = 0
            self.fallbacks = 0  # joined runs that raised and were retried request by request
            self.max_rows = 0
            self.max_requests = 0
            self.sizes: Counter[int] = Counter()  # rows per run -> count

    def record(self, rows: int, requests: int) -> None:
        with self._lock:
            self.runs += 1
            self.batched_runs += requests > 1
            self.requests += requests
            self.rows += rows
            self.max_rows = max(self.max_rows, rows)
            self.max_requests = max(self.max_requests, requests)
            self.sizes[rows] += 1

    def fallback(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": self.runs,
                "batched_runs": self.batched_runs,
                "requests": self.requests,
                "rows": self.rows,
                "fallbacks": self.fallbacks,
                "max_batch_rows": self.max_rows,
                "max_batch_requests": self.max_requests,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            }


batch_stats = BatchStats()

_metrics: dict[str, tuple[Any, Any]] = {}
_metrics_lock = threading.Lock()


def prometheus_metrics() -> tuple[Any, Any] | None:
    """(modelfn_batch_size histogram, modelfn_batches_total counter) in the default registry, or None when
    prometheus_client is not installed (it is never imported on the Lambda path)."""
    if "default" in _metrics:
        return _metrics["default"]
    try:
        import prometheus_client as prom
    except ImportError:
        return None
    with _metrics_lock:
        if "default" not in _metrics:
            _metrics["default"] = (
                _collector(
                    prom,
                    "modelfn_batch_size",
                    lambda: prom.Histogram(
                        "modelfn_batch_size",
                        "Rows per session.run made by the dynamic batcher",
                        ["model", "version"],
                        buckets=SIZE_BUCKETS,
                    ),
                ),
                _collector(
                    prom,
                    "modelfn_batches_total",
                    lambda: prom.Counter(
                        "modelfn_batches", "session.run calls made by the dynamic batcher", ["model", "version"]
                    ),
                ),
            )
    return _metrics["default"]


def _collector(prom: Any, name: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ValueError:  # already registered (by this module under another import, or by the container app)
        return prom.REGISTRY._names_to_collectors[name]


# ---- how a model version is joined ---------------------------------------------------------------------------
@dataclass
class Plan:
    """`join`: run joined batches with the model's own session; `segments`: with `session`, the rewritten
    per-request-quantization graph; `alone`: never join (the reason says why)."""

    mode: str
    reason: str = ""
    session: Any = None

    def describe(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason} if self.reason else {"mode": self.mode}


def cached_artifact(settings: Settings) -> Callable[[LoadedModel], Path | None]:
    """Where the model cache keeps a model's verified artifact: the path its loader recorded, else (a model built
    by hand from a cached one) the disk cache's folder for an artifact without external data."""
    from modelfn.registry.loader import cached_path

    def locate(model: LoadedModel) -> Path | None:
        recorded = model.metadata.get("artifact")
        if isinstance(recorded, str):
            path = Path(recorded)
        elif model.sha256:
            path = cached_path(settings.for_model(model.name).cache_dir, model.sha256)
        else:
            return None
        return path if path.exists() else None

    return locate


def make_plan(model: LoadedModel, artifact: Path | None, settings: Settings) -> Plan:
    """Decide how this model version's requests may be joined (runs once per version, in its worker thread)."""
    if artifact is None:
        return Plan("alone", "the artifact is not available to inspect, so rows are never mixed")
    try:
        data = artifact.read_bytes()
    except OSError as e:
        return Plan("alone", f"cannot read the artifact: {e}")
    if model.sha256:
        import hashlib

        if hashlib.sha256(data).hexdigest() != model.sha256:
            return Plan("alone", "the cached artifact no longer matches the model's sha256")
    if not any(token in data for token in BATCH_SENSITIVE):
        return Plan("join")
    try:
        rewritten = segment_graph(data)
    except ImportError:
        return Plan("alone", "dynamic quantization: per-request batching needs the onnx package")
    except Exception as e:  # a graph onnx cannot parse or rewrite is simply not joined
        return Plan("alone", f"dynamic quantization: graph rewrite failed: {type(e).__name__}: {e}")
    if rewritten is None:
        return Plan("alone", "batch-dependent ops this batcher cannot make per-request")
    try:
        import onnxruntime as ort

        opts = session_options(settings.for_model(model.name))
        # No spin-waiting in the pool threads after a run: while a batch runs, the event loop needs the CPUs to
        # decode the next batch's requests (measured on 2 CPUs, 32 connections: ~1.6x the requests/s).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(rewritten, sess_options=opts, providers=model.providers or None)
    except Exception as e:
        return Plan("alone", f"dynamic quantization: the per-request graph does not load: {e}")
    problem = verify_segments(model, session)
    if problem:
        log.warning("model %r version %d is not joined: %s", model.name, model.version, problem)
        return Plan("alone", f"dynamic quantization: {problem}")
    return Plan("segments", "dynamic quantization: activations quantized per request (verified bit-exact)", session)


def verify_segments(model: LoadedModel, session: Any, seed: int = 0) -> str | None:
    """Run random requests of several row counts and ranges joined (segment graph) and alone (the model's own
    session); None when every output is bit-identical, else what differs."""
    rng = np.random.default_rng(seed)
    for spec in model.inputs:
        if spec.dtype.kind != "f":
            return f"cannot verify with a non-float input ({spec.describe()})"
    names = model.output_names
    layouts = [[1, 2, 1, 3, 1, 1], [1] * 7, [4], [2, 2]]
    scales = [1.0, 100.0, 0.01, 0.0, 10.0, 3.0, 0.5]
    for layout in layouts:
        parts: list[dict[str, np.ndarray]] = []
        for i, rows in enumerate(layout):
            scale = scales[i % len(scales)]
            parts.append(
                {
                    s.name: (rng.standard_normal((rows, *[3 if d == -1 else d for d in s.shape[1:]])) * scale).astype(
                        s.dtype
                    )
                    for s in model.inputs
                }
            )
        feed = {s.name: np.concatenate([p[s.name] for p in parts]) for s in model.inputs}
        feed[SEGMENTS] = np.repeat(np.arange(len(layout), dtype=np.int64), layout)
        try:
            joined = session.run(names, feed)
            alone = [model.session.run(names, p) for p in parts]
        except Exception as e:
            return f"verification run failed: {type(e).__name__}: {e}"
        for j, name in enumerate(names):
            expected = np.concatenate([a[j] for a in alone])
            if expected.shape != joined[j].shape or not np.array_equal(expected, joined[j], equal_nan=True):
                return f"output {name!r} of a joined batch differs from single runs (layout {layout})"
    return None


def segment_graph(data: bytes) -> bytes | None:
    """The model with every DynamicQuantizeLinear computed per request instead of per tensor (see the module
    docstring), taking the extra SEGMENTS input; None when the graph has a shape this rewrite does not cover."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        return None
    for node in graph.node:  # quantization inside If/Loop/Scan bodies is not rewritten
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            if any(_has_batch_sensitive(g) for g in subgraphs):
                return None
    names = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    if any(n.startswith("__modelfn") for n in names) or SEGMENTS in {i.name for i in graph.input}:
        return None
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    nodes = list(graph.node)
    consumers: dict[str, list[tuple[int, int]]] = {}  # tensor -> (node index, input index)
    for n, node in enumerate(nodes):
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, []).append((n, idx))
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in (*inferred.value_info, *inferred.input)
            if v.type.tensor_type.HasField("shape")
        }
    except Exception:
        ranks = {}

    counter = itertools.count()
    new_nodes: list[Any] = []
    new_inits: list[Any] = []

    def fresh(base: str) -> str:
        return f"__modelfn_{base}_{next(counter)}"

    def const(value: Any, dtype: Any) -> str:
        name = fresh("c")
        new_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        out = output or fresh(op_type.lower())
        new_nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def reduce(op_type: str, x: str, keepdims: int) -> str:
        if opset >= 18:
            return op(op_type, [x, const([1], np.int64)], keepdims=keepdims)
        return op(op_type, [x], axes=[1], keepdims=keepdims)

    # Shared: mask[i, j] = rows i and j belong to the same request.
    col = op("Reshape", [SEGMENTS, const([-1, 1], np.int64)])
    row = op("Reshape", [SEGMENTS, const([1, -1], np.int64)])
    mask = op("Equal", [col, row])
    f32 = np.float32
    inf, ninf, zero, one, q255 = (const(v, f32) for v in (np.inf, -np.inf, 0.0, 1.0, 255.0))

    dropped: set[int] = set()  # node indices of the MatMulIntegers replaced
    replacement: dict[int, list[Any]] = {}
    rewritten = 0
    for n, node in enumerate(nodes):
        if node.op_type != "DynamicQuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        x = node.input[0]
        yq, yscale, yzp = [*node.output, "", "", ""][:3]
        if {yq, yscale, yzp} & outputs:
            return None
        if any(nodes[c].op_type != "MatMulInteger" or idx != 0 for c, idx in consumers.get(yq, [])):
            return None
        if any(nodes[c].op_type != "Mul" for c, _ in consumers.get(yscale, [])):
            return None
        zp_users = [c for c, _ in consumers.get(yzp, [])] if yzp else []
        if any(nodes[c].op_type != "MatMulInteger" or nodes[c].input[2:3] != [yzp] for c in zp_users):
            return None
        if any(nodes[c].input[0] != yq for c in zp_users):
            return None

        start = len(new_nodes)
        rank = ranks.get(x)
        flat = x if rank == 2 else op("Flatten", [x], axis=1)
        rmin = reduce("ReduceMin", flat, 0)  # [rows]: per-row min, broadcast as [1, rows] against the mask
        rmax = reduce("ReduceMax", flat, 0)
        smin = op("Min", [reduce("ReduceMin", op("Where", [mask, rmin, inf]), 1), zero])  # [rows, 1]
        smax = op("Max", [reduce("ReduceMax", op("Where", [mask, rmax, ninf]), 1), zero])
        scale = op("Where", [op("Equal", [smax, smin]), one, op("Div", [op("Sub", [smax, smin]), q255])])
        zp = op("Round", [op("Max", [op("Min", [op("Sub", [zero, op("Div", [smin, scale])]), q255]), zero])])
        if rank != 2:  # [rows, 1] -> [rows, 1, ..., 1] to broadcast against x
            if rank is not None:
                shape = const([-1] + [1] * (rank - 1), np.int64)
            else:
                ones = op(
                    "ConstantOfShape",
                    [op("Sub", [op("Shape", [op("Shape", [x])]), const([1], np.int64)])],
                    value=helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                )
                shape = op("Concat", [const([-1], np.int64), ones], axis=0)
            scale = op("Reshape", [scale, shape])
            zp = op("Reshape", [zp, shape])
        quantized = op("Max", [op("Min", [op("Add", [op("Round", [op("Div", [x, scale])]), zp]), q255]), zero])
        op("Cast", [quantized], yq, to=TensorProto.UINT8)
        if yscale:
            op("Identity", [scale], yscale)
        zp_int = op("Cast", [zp], to=TensorProto.INT32)
        for c in zp_users:
            consumer = nodes[c]
            b = consumer.input[1]
            if b not in inits:
                return None
            weights = numpy_helper.to_array(inits[b]).astype(np.int64)
            if weights.ndim != 2:
                return None
            b_zp_name = consumer.input[3] if len(consumer.input) > 3 else ""
            if b_zp_name and b_zp_name not in inits:
                return None
            b_zp = numpy_helper.to_array(inits[b_zp_name]).astype(np.int64) if b_zp_name else np.int64(0)
            colsum = (weights - b_zp).sum(axis=0)
            if np.abs(colsum).max(initial=0) >= 2**31:
                return None
            acc = op("MatMulInteger", [yq, b, "", *([b_zp_name] if b_zp_name else [])])
            correction = op("Mul", [zp_int, const(colsum, np.int32)])
            op("Sub", [acc, correction], consumer.output[0])
            dropped.add(c)
        replacement[n] = new_nodes[start:]
        del new_nodes[start:]
        rewritten += 1
    if not rewritten:
        return None

    final: list[Any] = list(new_nodes)  # the shared prologue (segment mask, constants) first
    for n, node in enumerate(nodes):
        if n in replacement:
            final.extend(replacement[n])
        elif n not in dropped:
            kept = onnx.NodeProto()
            kept.CopyFrom(node)
            final.append(kept)
    del graph.node[:]
    graph.node.extend(final)
    graph.initializer.extend(new_inits)
    graph.input.append(helper.make_tensor_value_info(SEGMENTS, TensorProto.INT64, ["__modelfn_rows"]))
    return bytes(model.SerializeToString())


def _has_batch_sensitive(graph: Any) -> bool:
    for node in graph.node:
        if any(token.decode() in node.op_type for token in BATCH_SENSITIVE):
            return True
        for attr in node.attribute:
            if any(_has_batch_sensitive(g) for g in ([attr.g] if attr.HasField("g") else attr.graphs)):
                return True
    return False


# ---- the batcher ----------------------------------------------------------------------------------------------
_ALONE = object()
"""Marker in a join key: the request never joins another."""


@dataclass(eq=False)
class _Item:
    model: LoadedModel
    feed: dict[str, np.ndarray]
    names: list[str]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    arrived: float


@dataclass(eq=False)
class _Runner:
    """One model version: its queue, the task draining it, and the single worker thread that runs its batches."""

    name: str
    version: int
    max_rows: int
    wait_s: float
    executor: ThreadPoolExecutor
    plan: Plan | None = None
    loop: asyncio.AbstractEventLoop | None = None
    pending: dict[Any, deque[_Item]] = field(default_factory=dict)
    rows: dict[Any, int] = field(default_factory=dict)
    wake: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    state: str = "idle"  # the drain task: idle (nothing queued), waiting (filling `filling`), busy
    filling: Any = None


class Batcher:
    """Joins concurrent requests for the same model version into one session.run (see the module docstring).

    `default` is whether models without a `batching` entry in MODELFN_MODELS_CONFIG are batched (default:
    settings.batching); `artifact` finds a loaded model's verified .onnx file (default: the model cache's)."""

    def __init__(
        self,
        settings: Settings,
        default: bool | None = None,
        artifact: Callable[[LoadedModel], Path | None] | None = None,
        stats: BatchStats | None = None,
    ) -> None:
        self.settings = settings
        self.default = settings.batching if default is None else default
        self.artifact = artifact or cached_artifact(settings)
        self.stats = stats or batch_stats
        self.metrics = prometheus_metrics()
        self.incoming = 0
        self._runners: dict[tuple[str, int, str], _Runner] = {}
        self._enabled: dict[str, bool] = {}

    # -- configuration
    def enabled(self, name: str) -> bool:
        known = self._enabled.get(name)
        if known is None:
            override = self.settings.models_config.get(name) or {}
            known = bool(self.settings.for_model(name).batching) if "batching" in override else self.default
            self._enabled[name] = known
        return known

    @staticmethod
    def wanted(settings: Settings, batching: bool | None) -> bool:
        """Whether an app should have a batcher: the explicit choice, else settings.batching or any model's."""
        if batching is not None:
            return batching
        return settings.batching or any(bool(cfg.get("batching")) for cfg in settings.models_config.values())

    # -- request side
    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request from its arrival until it calls `predict`, so waiting batches know company is coming."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1
            if self.incoming == 0:
                loop = asyncio.get_running_loop()
                for runner in self._runners.values():
                    if runner.state == "waiting" and runner.wake is not None and runner.loop is loop:
                        runner.wake.set()

    async def predict(
        self, model: LoadedModel, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """What `model.predict(inputs, outputs)` returns, computed in the model's worker thread, possibly joined
        with other requests. Raises this request's own InvalidInput before anything is queued."""
        names = list(outputs) if outputs else model.output_names
        unknown = [n for n in names if n not in model.output_names]
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; the model has {model.output_names}")
        feed = validate_inputs(model.inputs, inputs)
        runner = self._runner(model)
        loop = asyncio.get_running_loop()
        if runner.loop is not loop:
            self._start(runner, loop)
        rows, key = self._key(model, feed, names, runner)
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        item = _Item(model, feed, names, rows, future, loop.time())
        if key is _ALONE:
            key = (_ALONE, id(item))
        group = runner.pending.get(key)
        if group is None:
            runner.pending[key] = deque([item])
            runner.rows[key] = rows
        else:
            group.append(item)
            runner.rows[key] += rows
        if runner.state == "idle" or (
            runner.state == "waiting" and (self.incoming == 0 or runner.rows.get(runner.filling, 0) >= runner.max_rows)
        ):
            assert runner.wake is not None
            runner.wake.set()
        return await future

    def _key(self, model: LoadedModel, feed: dict[str, np.ndarray], names: list[str], runner: _Runner) -> Any:
        """(rows, join key); the key is _ALONE when the request must not be joined."""
        rows = -1
        parts = []
        for spec in model.inputs:
            arr = feed[spec.name]
            if not spec.shape or spec.shape[0] != -1 or arr.ndim == 0:
                return 0, _ALONE
            if rows not in (-1, arr.shape[0]):
                return 0, _ALONE
            rows = arr.shape[0]
            parts.append((spec.name, arr.dtype.str, arr.shape[1:]))
        specs = {o.name: o for o in model.outputs}
        if any(not specs[n].shape or specs[n].shape[0] != -1 for n in names):
            return max(rows, 0), _ALONE
        if rows <= 0 or rows > runner.max_rows or not self.enabled(model.name):
            return max(rows, 0), _ALONE
        plan = runner.plan
        if plan is not None and plan.mode == "alone":
            return rows, _ALONE
        return rows, (tuple(parts), tuple(names))

    # -- runner side
    def _runner(self, model: LoadedModel) -> _Runner:
        key = (model.name, model.version, model.sha256)
        runner = self._runners.get(key)
        if runner is None:
            cfg = self.settings.for_model(model.name)
            runner = _Runner(
                name=model.name,
                version=model.version,
                max_rows=cfg.max_batch_size,
                wait_s=cfg.max_batch_wait_ms / 1000.0,
                executor=ThreadPoolExecutor(1, thread_name_prefix=f"modelfn-batch-{model.name}-v{model.version}"),
            )
            self._runners[key] = runner
        return runner

    def _start(self, runner: _Runner, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)bind a runner to the running loop: its queue and task live there."""
        runner.loop = loop
        runner.pending = {}
        runner.rows = {}
        runner.wake = asyncio.Event()
        runner.state, runner.filling = "idle", None
        runner.task = loop.create_task(self._drain(runner), name=f"modelfn-batcher-{runner.name}-v{runner.version}")

    async def _drain(self, runner: _Runner) -> None:
        loop = asyncio.get_running_loop()
        wake = runner.wake
        assert wake is not None
        while True:
            if not runner.pending:
                runner.state = "idle"
                wake.clear()
                await wake.wait()
                continue
            runner.state = "busy"
            batch: list[_Item] = []
            try:
                if runner.plan is None:
                    model = next(iter(runner.pending.values()))[0].model
                    runner.plan = await loop.run_in_executor(runner.executor, self._prepare, model)
                    self._requeue_alone(runner)
                # the group whose oldest request has waited longest goes next (no group starves another)
                key = min(runner.pending, key=lambda k: runner.pending[k][0].arrived)
                group = runner.pending[key]
                if key[0] is not _ALONE:
                    await self._fill(runner, key, group[0].arrived + runner.wait_s)
                rows = taken = 0
                while group and (not batch or rows + group[0].rows <= runner.max_rows):
                    item = group.popleft()
                    taken += item.rows
                    if item.future.done():  # the client went away
                        continue
                    batch.append(item)
                    rows += item.rows
                runner.rows[key] -= taken
                if not group:
                    del runner.pending[key]
                    del runner.rows[key]
                if not batch:
                    continue
                results = await loop.run_in_executor(runner.executor, self._run, runner, batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never leave a request hanging: fail this batch, keep draining
                log.exception("batcher for model %r version %d failed", runner.name, runner.version)
                results = [e] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    async def _fill(self, runner: _Runner, key: Any, deadline: float) -> None:
        """Wait until the group is full, nobody else is on the way, or the deadline. Woken only by what can end
        the wait (predict, arriving() and one timer), so a waiting batch costs no work per arriving request."""
        loop = asyncio.get_running_loop()
        wake = runner.wake
        assert wake is not None
        if runner.rows[key] >= runner.max_rows or self.incoming == 0 or loop.time() >= deadline:
            return
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            wake.set()

        timer = loop.call_at(deadline, expire)
        runner.state, runner.filling = "waiting", key
        try:
            while not expired and runner.rows[key] < runner.max_rows and self.incoming > 0:
                wake.clear()
                await wake.wait()
        finally:
            timer.cancel()
            runner.state, runner.filling = "busy", None

    def _requeue_alone(self, runner: _Runner) -> None:
        """Once a plan says `alone`, split the groups queued before it was known."""
        if runner.plan is None or runner.plan.mode != "alone":
            return
        pending: dict[Any, deque[_Item]] = {}
        rows: dict[Any, int] = {}
        for group in runner.pending.values():
            for item in group:
                key = (_ALONE, id(item))
                pending[key] = deque([item])
                rows[key] = item.rows
        runner.pending, runner.rows = pending, rows

    def _prepare(self, model: LoadedModel) -> Plan:
        try:
            plan = make_plan(model, self.artifact(model), self.settings)
        except Exception as e:
            plan = Plan("alone", f"could not prepare batching: {type(e).__name__}: {e}")
        log.info("batching model %r version %d: %s %s", model.name, model.version, plan.mode, plan.reason)
        return plan

    # -- worker thread
    def _run(self, runner: _Runner, batch: list[_Item]) -> list[dict[str, np.ndarray] | BaseException]:
        if len(batch) == 1:
            return [self._alone(runner, batch[0])]
        plan = runner.plan
        model = batch[0].model
        names = batch[0].names
        total = sum(item.rows for item in batch)
        feed = {name: np.concatenate([item.feed[name] for item in batch]) for name in batch[0].feed}
        session = model.session
        if plan is not None and plan.mode == "segments":
            session = plan.session
            feed[SEGMENTS] = np.repeat(np.arange(len(batch), dtype=np.int64), [item.rows for item in batch])
        try:
            outputs = [np.asarray(r) for r in session.run(names, feed)]
            if any(o.ndim == 0 or o.shape[0] != total for o in outputs):
                raise ValueError("an output does not keep the batch dimension")
        except Exception as e:
            log.info("model %r version %d: joined run of %d requests failed (%s); running them one by one",
                     model.name, model.version, len(batch), e)  # fmt: skip
            self.stats.fallback()
            return [self._alone(runner, item) for item in batch]
        self._record(runner, total, len(batch))
        results: list[dict[str, np.ndarray] | BaseException] = []
        start = 0
        for item in batch:
            end = start + item.rows
            results.append({name: out[start:end] for name, out in zip(names, outputs, strict=True)})
            start = end
        return results

    def _alone(self, runner: _Runner, item: _Item) -> dict[str, np.ndarray] | BaseException:
        try:
            result = item.model.predict(item.feed, item.names)
        except Exception as e:
            return e
        self._record(runner, item.rows, 1)
        return result

    def _record(self, runner: _Runner, rows: int, requests: int) -> None:
        self.stats.record(rows, requests)
        if self.metrics is not None:
            labels = (runner.name, str(runner.version))
            self.metrics[0].labels(*labels).observe(rows)
            self.metrics[1].labels(*labels).inc()

    # -- introspection and shutdown
    def snapshot(self) -> dict[str, Any]:
        models = {
            f"{name}/{version}": {
                **(runner.plan.describe() if runner.plan else {"mode": "pending"}),
                "enabled": self.enabled(name),
                "max_batch_size": runner.max_rows,
                "max_batch_wait_ms": runner.wait_s * 1000.0,
                "queued": sum(len(g) for g in runner.pending.values()),
            }
            for (name, version, _), runner in self._runners.items()
        }
        return {
            "default": self.default,
            "max_batch_size": self.settings.max_batch_size,
            "max_batch_wait_ms": self.settings.max_batch_wait_ms,
            **self.stats.snapshot(),
            "models": models,
        }

    def close(self) -> None:
        for runner in self._runners.values():
            if runner.task is not None and runner.loop is not None and not runner.loop.is_closed():
                runner.loop.call_soon_threadsafe(runner.task.cancel)
            runner.executor.shutdown(wait=False, cancel_futures=True)
        self._runners.clear()
