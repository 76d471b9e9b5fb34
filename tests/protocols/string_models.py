"""String (BYTES) models made by code for the string tests, and onnxruntime's own answers for them.

- `echo`: Identity on tensor(string) [-1]: a string input comes back as a string output, unchanged.
- `cities`: scikit-learn's OneHotEncoder on a string column, then LogisticRegression, converted by skl2onnx
  (string input [N, 1]; outputs `label`, a string tensor [N], and `probabilities` FP32 [N, 3]). A category the
  encoder does not know scores like any other unknown one, so a string mangled on its way in (the "b'paris'"
  onnxruntime makes of bytes) gives a different answer.

Imported by the tests as `protocols.string_models` (tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from modelfn_tools.publish import publish
from onnx import TensorProto, helper, save_model

TEXTS = ["Zürich", "東京", "", "paris", "naïve ☃ text", "b'quoted'"]
"""Unicode, an empty string, and a string that looks like a Python bytes literal."""

CITIES = ["paris", "Zürich", "東京", "", "lyon", "osaka"]
REGIONS = ["eu", "eu", "asia", "none", "eu", "asia"]


def build_echo(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, [None])],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build_cities(path: Path) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = np.array([[c] for c in CITIES * 5], dtype=np.object_)
    y = np.array(REGIONS * 5)
    clf = LogisticRegression(max_iter=1000)
    pipe = make_pipeline(OneHotEncoder(handle_unknown="ignore"), clf).fit(x, y)
    onx = convert_sklearn(
        pipe,
        initial_types=[("city", StringTensorType([None, 1]))],
        options={id(clf): {"zipmap": False}},
    )
    path.write_bytes(onx.SerializeToString())
    return path


@dataclass
class StringModels:
    """The published string models (both `stable`, version 1) and onnxruntime sessions on the same files."""

    store: str
    sessions: dict[str, ort.InferenceSession]

    def run(self, model: str, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """onnxruntime's own answer; string inputs are given as `str`, what its string tensors take."""
        session = self.sessions[model]
        names = [o.name for o in session.get_outputs()]
        arrays = {k: np.asarray(v, dtype=np.object_) for k, v in feed.items()}
        return dict(zip(names, session.run(names, arrays), strict=True))


def publish_string_models(store: str, workdir: Path) -> StringModels:
    paths = {"echo": build_echo(workdir / "echo.onnx"), "cities": build_cities(workdir / "cities.onnx")}
    for name, path in paths.items():
        publish(path, store, name, labels=["stable"], progress=False)
    sessions = {n: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for n, p in paths.items()}
    return StringModels(store, sessions)


def as_text(values: Any) -> list[Any]:
    """A string tensor as nested lists of str, whether it came as str or as UTF-8 bytes (tritonclient's binary)."""
    arr = np.asarray(values, dtype=np.object_)
    text: list[Any] = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(
        arr
    ).tolist()
    return text


def city_rows(cities: Sequence[str]) -> list[list[str]]:
    return [[c] for c in cities]
