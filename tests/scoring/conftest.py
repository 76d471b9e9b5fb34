"""Models for the batch scoring tests, published with `modelfn publish`'s own code to a folder store: iris without
feature names (columns by position), iris with them (`--features`), a model of three inputs that each take one
column ([N] and [N, 1], FP32 and INT64), and the ranker (two [N, K] inputs, which batch scoring cannot lay out).
`score` runs `score_object` on a file in a folder and reads back both outputs; `reference` is onnxruntime itself
on the same model."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.scoring import ScoreStats, score_object
from modelfn.settings import Settings
from modelfn.store import open_store

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_multi(path: Path) -> Path:
    """Inputs x FP32 [N], w FP32 [N, 1], k INT64 [N]; outputs y = 2x + 3w + 5k (FP32 [N]), z = x - k as [N, 1],
    and kk = k (INT64 [N], to see integers come through exactly). Every input weighs differently, so a swapped
    column changes every answer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {"two": 2.0, "three": 3.0, "five": 5.0}
    inits = [numpy_helper.from_array(np.array(v, dtype=np.float32), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    nodes = [
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["w", "axis1"], ["w1"]),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Mul", ["w1", "three"], ["w3"]),
        helper.make_node("Mul", ["kf", "five"], ["k5"]),
        helper.make_node("Add", ["x2", "w3"], ["xw"]),
        helper.make_node("Add", ["xw", "k5"], ["y"]),
        helper.make_node("Sub", ["x", "kf"], ["d"]),
        helper.make_node("Unsqueeze", ["d", "axis1"], ["z"]),
        helper.make_node("Identity", ["k"], ["kk"]),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("kk", TensorProto.INT64, ["N"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@dataclass
class Published:
    store: str
    paths: dict[str, Path]

    def reference(self, name: str, **inputs: Any) -> dict[str, np.ndarray]:
        """onnxruntime's own answer on the artifact published as `name`."""
        session = ort.InferenceSession(str(self.paths[name]), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs), strict=True))


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    from modelfn_tools.examples import build_iris, build_ranker
    from modelfn_tools.publish import publish

    d = tmp_path_factory.mktemp("scoring-models")
    store = str(d / "store")
    paths = {"iris": build_iris(d / "iris.onnx"), "multi": build_multi(d / "multi.onnx")}
    publish(paths["iris"], store, "iris", progress=False)
    publish(paths["iris"], store, "iris-named", progress=False, features=IRIS_FEATURES)
    publish(paths["multi"], store, "multi", progress=False)
    publish(build_ranker(d / "ranker.onnx"), store, "ranker", progress=False)  # two [N, K] inputs
    return Published(store, {**paths, "iris-named": paths["iris"]})


@pytest.fixture
def load(published: Published, tmp_path: Path) -> Callable[[str], LoadedModel]:
    settings = Settings(store=published.store, cache_dir=tmp_path / "cache")
    registry = ModelRegistry.from_uri(published.store, settings)
    return registry.get


@dataclass
class Scored:
    stats: ScoreStats
    output: bytes
    errors: list[dict[str, Any]]

    def csv(self) -> tuple[list[str], list[list[str]]]:
        import csv
        import io

        rows = list(csv.reader(io.StringIO(self.output.decode())))
        return rows[0], rows[1:]

    def jsonl(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.decode().splitlines()]


ScoreFile = Callable[..., Scored]


@pytest.fixture
def score(tmp_path: Path) -> ScoreFile:
    """score(model, "name.csv", data, chunk_rows=...) -> both outputs, read back."""
    folder = tmp_path / "files"
    folder.mkdir()

    def run(model: LoadedModel, name: str, data: bytes, **kwargs: Any) -> Scored:
        (folder / name).write_bytes(data)
        store = open_store(str(folder))
        stats = score_object(model, store, name, store, f"out-{name}", **kwargs)
        errors = [json.loads(line) for line in (folder / f"out-{name}.errors.jsonl").read_text().splitlines()]
        return Scored(stats, (folder / f"out-{name}").read_bytes(), errors)

    return run
