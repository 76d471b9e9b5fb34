"""Synthetic models, baselines and captured requests for the drift tests. Captured objects are written here in
the contract's record format (gzip JSON Lines under <capture>/<model>/dt=YYYY-MM-DD/hour=HH/), independently of
the capture writer, so drift is tested against the format rather than one implementation of it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from modelfn.store import open_store

FEATURES = ["a", "b", "c"]
CITIES = ["paris", "lyon", "nice", "lille"]
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def tabular_model(path: Path) -> Path:
    """One [N, 3] float input `x` (its features named by the baseline's header), y = the row's sum."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "sum", [x], [y], [axes]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mixed_model(path: Path) -> Path:
    """Inputs `age` [N], `income` [N, 1] (floats) and `city` [N] (strings): three features of their own names."""
    age = helper.make_tensor_value_info("age", TensorProto.FLOAT, [None])
    income = helper.make_tensor_value_info("income", TensorProto.FLOAT, [None, 1])
    city = helper.make_tensor_value_info("city", TensorProto.STRING, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    echo = helper.make_tensor_value_info("city_out", TensorProto.STRING, [None])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Squeeze", ["income", "axes"], ["flat"]),
        helper.make_node("Add", ["age", "flat"], ["y"]),
        helper.make_node("Identity", ["city"], ["city_out"]),
    ]
    graph = helper.make_graph(nodes, "mixed", [age, income, city], [y, echo], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tabular_data(n: int, seed: int, shift: Mapping[str, float] | None = None) -> np.ndarray:
    """[n, 3]: a ~ N(0, 1), b ~ N(5, 2), c ~ Exp(1); `shift` adds to a feature's values."""
    rng = np.random.default_rng(seed)
    data = np.stack([rng.normal(0, 1, n), rng.normal(5, 2, n), rng.exponential(1, n)], axis=1)
    for name, delta in (shift or {}).items():
        data[:, FEATURES.index(name)] += delta
    return data


def mixed_data(n: int, seed: int, cities: list[float] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.normal(40, 10, n),
        "income": rng.lognormal(10, 0.5, (n, 1)),
        "city": rng.choice(np.array(CITIES, dtype=object), n, p=cities or [0.4, 0.3, 0.2, 0.1]),
    }


def write_csv(path: Path, data: np.ndarray, names: list[str] = FEATURES) -> Path:
    lines = ["id," + ",".join(names)] + [f"r{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(data)]
    path.write_text("\n".join(lines) + "\n")
    return path


def records(
    model: str, version: int, inputs: Mapping[str, np.ndarray], per_request: int = 5, start: datetime = START
) -> list[dict[str, Any]]:
    """Captured requests of `per_request` rows each, one a minute from `start`."""
    n = len(next(iter(inputs.values())))
    out = []
    for k, lo in enumerate(range(0, n, per_request)):
        rows = {name: values[lo : lo + per_request].tolist() for name, values in inputs.items()}
        out.append(
            {
                "id": f"req-{k}",
                "time": (start + timedelta(minutes=k)).isoformat().replace("+00:00", "Z"),
                "model": model,
                "version": version,
                "route": "/v2/models/{m}/infer",
                "latency_ms": 1.5,
                "inputs": rows,
                "outputs": {"y": [0.0] * len(next(iter(rows.values())))},
            }
        )
    return out


def write_capture(capture: str, recs: list[dict[str, Any]], per_object: int = 50) -> list[str]:
    """The records as gzip JSON Lines objects in their model/date/hour partitions; returns the keys written."""
    store = open_store(capture)
    parts: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        t = datetime.fromisoformat(r["time"])
        parts.setdefault(f"{r['model']}/dt={t:%Y-%m-%d}/hour={t:%H}", []).append(r)
    keys = []
    for folder, rs in parts.items():
        for j in range(0, len(rs), per_object):
            body = "".join(json.dumps(r) + "\n" for r in rs[j : j + per_object]).encode()
            key = f"{folder}/part-{j // per_object:05d}.jsonl.gz"
            store.write_bytes(key, gzip.compress(body))
            keys.append(key)
    return keys
