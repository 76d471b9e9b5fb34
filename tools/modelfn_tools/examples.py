"""The example models, made with code (no hub downloads): an iris classifier (scikit-learn + skl2onnx), an MLP
256→1024×3→10 built with onnx.helper (fp32 and int8), and a small ranker with FP32 and INT64 inputs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime from 1.10 on

IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def build_iris(path: Path) -> Path:
    """Logistic regression on the iris data that ships with scikit-learn; probabilities as a plain tensor."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x.astype(np.float32), y)
    onx = to_onnx(
        clf,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(clf.steps[-1][1]): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    onx.ir_version = IR_VERSION
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def _save(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelfn-examples")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def build_mlp(path: Path, sizes: tuple[int, ...] = (256, 1024, 1024, 1024, 10), seed: int = 0) -> Path:
    """Dense ReLU layers with He-initialised weights; outputs logits and their softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], ["logits" if last else f"pre{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [f"h{i}"]))
            prev = f"h{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", sizes[0]])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", sizes[-1]]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", sizes[-1]]),
        ],
        inits,
    )
    return _save(graph, path)


def build_ranker(path: Path, items: int = 100, dim: int = 8, seed: int = 1) -> Path:
    """Two named inputs of two datatypes: dense features (FP32 [N,4]) and item ids (INT64 [N,3]) looked up in an
    embedding table, averaged, concatenated and scored. Outputs `score` [N,1] and `embedding` [N,8]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    table = rng.standard_normal((items, dim)).astype(np.float32)
    w = rng.standard_normal((dim + 4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "item_ids"], ["looked_up"], axis=0),
        helper.make_node("ReduceMean", ["looked_up"], ["embedding"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["dense", "embedding"], ["joined"], axis=1),
        helper.make_node("MatMul", ["joined", "w"], ["raw"]),
        helper.make_node("Sigmoid", ["raw"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ranker",
        [
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("item_ids", TensorProto.INT64, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim]),
        ],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def publish_examples(store_uri: str, workdir: Path) -> list[dict[str, Any]]:
    """Build and publish every example: iris v1, mlp v1 (fp32) and v2 (int8, stable), ranker v1."""
    from modelfn_tools.publish import publish

    iris = build_iris(workdir / "iris.onnx")
    mlp = build_mlp(workdir / "mlp.onnx")
    ranker = build_ranker(workdir / "ranker.onnx")
    return [
        publish(iris, store_uri, "iris", labels=["stable"], progress=False),
        publish(mlp, store_uri, "mlp", labels=["fp32"], progress=False),
        publish(mlp, store_uri, "mlp", quantize="int8", labels=["int8", "stable"], progress=False),
        publish(ranker, store_uri, "ranker", labels=["stable"], progress=False),
    ]
