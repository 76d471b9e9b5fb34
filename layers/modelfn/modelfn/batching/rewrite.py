"""The int8 graph rewrite that lets dynamically quantized models be joined: activations quantized per request.

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
verified when the runner starts (`plan.verify_segments`): random requests of several row counts and ranges (and an
all-zero one) are run joined and alone and must match exactly; otherwise, or when the graph has any other shape
(quantization feeding something other than MatMulInteger, inside a subgraph, a non-float input to verify with,
`onnx` not installed), the model's requests run one at a time in the worker thread (correct, not joined), and
`/health` says why. The rewritten graph is unfused (about 30 small ops per quantized MatMul instead of
onnxruntime's fused DynamicQuantizeMatMul), so a joined batch costs more than the same rows naively joined (and
wrong) would, but far less than running the rows one by one: on the example MLP on a quiet 2-CPU machine, 32
one-row requests take about 0.6 ms joined against about 2 ms as 32 single runs. A batch of one request always
runs the original graph.

`onnx` is imported only inside functions: it is a `server` extra, never in the Lambda layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

SEGMENTS = "__modelfn_segments"
"""Extra int64 [rows] input of a rewritten (segment-aware) graph: the request index of each row."""

BATCH_SENSITIVE = (b"DynamicQuantize", b"MatMulIntegerToFloat", b"QAttention", b"MeanVarianceNormalization")
"""Op types (as they appear in the protobuf bytes) whose result for a row depends on the other rows of a batch."""

_RESERVED = "__modelfn"
"""Prefix of every name the rewrite adds; a graph already using it is not rewritten."""


def segment_graph(data: bytes) -> bytes | None:
    """The model with every DynamicQuantizeLinear computed per request instead of per tensor (see the module
    docstring), taking the extra SEGMENTS input; None when the graph has a shape this rewrite does not cover."""
    import onnx

    model = onnx.load_from_string(data)
    if not _rewritable(model):
        return None
    return _SegmentRewriter(model).rewrite()


def _opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _rewritable(model: ModelProto) -> bool:
    """The preconditions on the graph as a whole: an opset with DynamicQuantizeLinear, no batch-dependent op
    inside an If/Loop/Scan body (those are not rewritten), and no name the rewrite could collide with."""
    if _opset(model) < 11:
        return False
    graph = model.graph
    if any(_has_batch_sensitive(g) for node in graph.node for g in _subgraphs(node)):
        return False
    names = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    return not (any(n.startswith(_RESERVED) for n in names) or SEGMENTS in {i.name for i in graph.input})


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    return [g for attr in node.attribute for g in ([attr.g] if attr.HasField("g") else list(attr.graphs))]


def _has_batch_sensitive(graph: GraphProto) -> bool:
    for node in graph.node:
        if any(token.decode() in node.op_type for token in BATCH_SENSITIVE):
            return True
        if any(_has_batch_sensitive(g) for g in _subgraphs(node)):
            return True
    return False


def _ranks(model: ModelProto) -> dict[str, int]:
    """The rank of every tensor shape inference can tell (none when it fails: the rewrite then reshapes by the
    runtime shape)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        return {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in (*inferred.value_info, *inferred.input)
            if v.type.tensor_type.HasField("shape")
        }
    except Exception:
        return {}


@dataclass
class _Quantization:
    """One DynamicQuantizeLinear: its input, its outputs, and the MatMulIntegers (node indices) taking its zero
    point."""

    x: str
    yq: str
    yscale: str
    yzp: str
    zp_users: list[int]


class _SegmentRewriter:
    """One rewrite of one graph. New nodes and initializers are emitted in order, with names from one counter,
    so the rewritten graph is the same bytes for the same model. The shared prologue (the segment mask and the
    constants) comes first; each DynamicQuantizeLinear's replacement takes its place in the node list, and the
    MatMulIntegers it feeds are replaced by their zero-point-corrected form there too."""

    def __init__(self, model: ModelProto) -> None:
        self.model = model
        self.opset = _opset(model)
        graph = model.graph
        self.inits = {i.name: i for i in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.nodes = list(graph.node)
        self.consumers: dict[str, list[tuple[int, int]]] = {}  # tensor -> (node index, input index)
        for n, node in enumerate(self.nodes):
            for idx, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((n, idx))
        self.ranks = _ranks(model)
        self._counter = itertools.count()
        self.new_nodes: list[NodeProto] = []
        self.new_inits: list[Any] = []
        self.replacement: dict[int, list[NodeProto]] = {}  # DynamicQuantizeLinear index -> its replacement
        self.dropped: set[int] = set()  # node indices of the MatMulIntegers replaced

    # -- emitting nodes and initializers
    def fresh(self, base: str) -> str:
        return f"{_RESERVED}_{base}_{next(self._counter)}"

    def const(self, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper

        name = self.fresh("c")
        self.new_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self.fresh(op_type.lower())
        self.new_nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def reduce(self, op_type: str, x: str, keepdims: int) -> str:
        """A reduction over axis 1 (an attribute before opset 18, an input from it on)."""
        if self.opset >= 18:
            return self.op(op_type, [x, self.const([1], np.int64)], keepdims=keepdims)
        return self.op(op_type, [x], axes=[1], keepdims=keepdims)

    # -- the rewrite
    def rewrite(self) -> bytes | None:
        self._prologue()
        for n, node in enumerate(self.nodes):
            if node.op_type != "DynamicQuantizeLinear" or node.domain not in ("", "ai.onnx"):
                continue
            if not self._quantize(n, node):
                return None
        if not self.replacement:
            return None
        return self._assemble()

    def _prologue(self) -> None:
        """Shared: mask[i, j] = rows i and j belong to the same request; the float constants."""
        col = self.op("Reshape", [SEGMENTS, self.const([-1, 1], np.int64)])
        row = self.op("Reshape", [SEGMENTS, self.const([1, -1], np.int64)])
        self.mask = self.op("Equal", [col, row])
        f32 = np.float32
        self.inf, self.ninf, self.zero, self.one, self.q255 = (
            self.const(v, f32) for v in (np.inf, -np.inf, 0.0, 1.0, 255.0)
        )

    def _uses(self, node: NodeProto) -> _Quantization | None:
        """The node's outputs and zero-point users, when every use is one the rewrite keeps exact: no output is a
        graph output, the quantized tensor is only ever MatMulInteger's A, the scale only goes into Mul, and the
        zero point is only the A zero point of a MatMulInteger whose A is this node's quantized tensor."""
        nodes, consumers = self.nodes, self.consumers
        x = node.input[0]
        yq, yscale, yzp = [*node.output, "", "", ""][:3]
        if {yq, yscale, yzp} & self.outputs:
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
        return _Quantization(x, yq, yscale, yzp, zp_users)

    def _quantize(self, n: int, node: NodeProto) -> bool:
        """Replace DynamicQuantizeLinear node `n` (and the MatMulIntegers taking its zero point) by its
        per-request form; False when the graph uses it in a way this rewrite does not cover."""
        uses = self._uses(node)
        if uses is None:
            return False
        from onnx import TensorProto

        start = len(self.new_nodes)
        scale, zp = self._scale_and_zero_point(uses.x)
        x, q255, zero = uses.x, self.q255, self.zero
        quantized = self.op(
            "Max", [self.op("Min", [self.op("Add", [self.op("Round", [self.op("Div", [x, scale])]), zp]), q255]), zero]
        )
        self.op("Cast", [quantized], uses.yq, to=TensorProto.UINT8)
        if uses.yscale:
            self.op("Identity", [scale], uses.yscale)
        zp_int = self.op("Cast", [zp], to=TensorProto.INT32)
        for c in uses.zp_users:
            if not self._correct(self.nodes[c], uses.yq, zp_int):
                return False
            self.dropped.add(c)
        self.replacement[n] = self.new_nodes[start:]
        del self.new_nodes[start:]
        return True

    def _scale_and_zero_point(self, x: str) -> tuple[str, str]:
        """Each request's scale and zero point, as onnxruntime computes them for a whole tensor, one per row
        ([rows, 1], reshaped to broadcast against `x` when it is not 2-D)."""
        op, reduce = self.op, self.reduce
        zero, one, q255 = self.zero, self.one, self.q255
        rank = self.ranks.get(x)
        flat = x if rank == 2 else op("Flatten", [x], axis=1)
        rmin = reduce("ReduceMin", flat, 0)  # [rows]: per-row min, broadcast as [1, rows] against the mask
        rmax = reduce("ReduceMax", flat, 0)
        smin = op("Min", [reduce("ReduceMin", op("Where", [self.mask, rmin, self.inf]), 1), zero])  # [rows, 1]
        smax = op("Max", [reduce("ReduceMax", op("Where", [self.mask, rmax, self.ninf]), 1), zero])
        scale = op("Where", [op("Equal", [smax, smin]), one, op("Div", [op("Sub", [smax, smin]), q255])])
        zp = op("Round", [op("Max", [op("Min", [op("Sub", [zero, op("Div", [smin, scale])]), q255]), zero])])
        if rank == 2:
            return scale, zp
        shape = self._row_shape(x, rank)
        return op("Reshape", [scale, shape]), op("Reshape", [zp, shape])

    def _row_shape(self, x: str, rank: int | None) -> str:
        """[-1, 1, ..., 1] with x's rank: [rows, 1] -> [rows, 1, ..., 1] broadcasts against x."""
        if rank is not None:
            return self.const([-1] + [1] * (rank - 1), np.int64)
        from onnx import TensorProto, helper

        ones = self.op(
            "ConstantOfShape",
            [self.op("Sub", [self.op("Shape", [self.op("Shape", [x])]), self.const([1], np.int64)])],
            value=helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        )
        return self.op("Concat", [self.const([-1], np.int64), ones], axis=0)

    def _correct(self, consumer: NodeProto, yq: str, zp_int: str) -> bool:
        """Replace a MatMulInteger by one with A's zero point 0, minus the exact integer term
        `zp_request * colsum(B - zp_B)`; False unless B (and its zero point) are 2-D constants whose column sums
        fit int32."""
        b = consumer.input[1]
        b_zp_name = consumer.input[3] if len(consumer.input) > 3 else ""
        colsum = self._colsum(b, b_zp_name)
        if colsum is None:
            return False
        acc = self.op("MatMulInteger", [yq, b, "", *([b_zp_name] if b_zp_name else [])])
        correction = self.op("Mul", [zp_int, self.const(colsum, np.int32)])
        self.op("Sub", [acc, correction], consumer.output[0])
        return True

    def _colsum(self, b: str, b_zp_name: str) -> np.ndarray | None:
        """colsum(B - zp_B) over B's rows, when B and its zero point are initializers, B is 2-D, and every sum
        fits int32."""
        from onnx import numpy_helper

        if b not in self.inits:
            return None
        weights = numpy_helper.to_array(self.inits[b]).astype(np.int64)
        if weights.ndim != 2 or (b_zp_name and b_zp_name not in self.inits):
            return None
        b_zp = numpy_helper.to_array(self.inits[b_zp_name]).astype(np.int64) if b_zp_name else np.int64(0)
        colsum: np.ndarray = (weights - b_zp).sum(axis=0)
        if np.abs(colsum).max(initial=0) >= 2**31:
            return None
        return colsum

    def _assemble(self) -> bytes:
        """The prologue first, then every node kept or replaced in its place; the SEGMENTS input added."""
        import onnx
        from onnx import TensorProto, helper

        final: list[NodeProto] = list(self.new_nodes)
        for n, node in enumerate(self.nodes):
            if n in self.replacement:
                final.extend(self.replacement[n])
            elif n not in self.dropped:
                kept = onnx.NodeProto()
                kept.CopyFrom(node)
                final.append(kept)
        graph = self.model.graph
        del graph.node[:]
        graph.node.extend(final)
        graph.initializer.extend(self.new_inits)
        graph.input.append(helper.make_tensor_value_info(SEGMENTS, TensorProto.INT64, ["__modelfn_rows"]))
        return bytes(self.model.SerializeToString())
