"""Model versions written into a store by hand (artifact, external-data files, manifest, labels), so that a test
decides exactly what the registry finds there: the layout of modelfn.store.layout, without going through publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modelfn.model.onnx import read_signature
from modelfn.model.signature import TensorSpec
from modelfn.store.base import ObjectStore, file_sha256
from modelfn.store.layout import ArtifactFile, Manifest, labels_key, manifest_key

SIGNATURE = (
    [TensorSpec(name="x", datatype="FP32", shape=[-1, 3])],
    [TensorSpec(name="y", datatype="FP32", shape=[-1, 4])],
)
"""The signature of `affine`: y = x @ W + b."""


def affine(weights: np.ndarray, bias: np.ndarray, padding: int = 0) -> onnx.ModelProto:
    """y = x @ W + b, with W [3, 4] and b [4] as initializers, plus `padding` unused float32s (bulk for the bytes
    a version takes, which onnxruntime drops at load)."""
    initializers = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
    ]
    if padding:
        initializers.append(numpy_helper.from_array(np.zeros(padding, dtype=np.float32), "padding"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save_external(model: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    """Save as recent exporters do: every initializer in one data file beside the graph (of a copy: saving moves
    the data out of the proto it is given). Returns model.onnx."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


def reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's own answer on the model as built (in memory, before its data went to a file)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": x})[0])


def write_version(
    store: ObjectStore,
    name: str,
    version: int,
    artifact: Path,
    files: dict[str, Path] | None = None,
    *,
    signature: tuple[list[TensorSpec], list[TensorSpec]] | None = None,
    overrides: dict[str, object] | None = None,
) -> Manifest:
    """Upload the artifact and each file (relative path in the version folder -> local file), then the manifest
    recording every sha256 and size; `overrides` replaces manifest fields (e.g. name, version, files)."""
    files = files or {}
    if signature is None:
        signature = read_signature(ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]))
    for relative, local in [("model.onnx", artifact), *files.items()]:
        store.upload_file(f"{name}/{version}/{relative}", local)
    fields: dict[str, object] = {
        "name": name,
        "version": version,
        "sha256": file_sha256(artifact),
        "size_bytes": artifact.stat().st_size,
        "inputs": signature[0],
        "outputs": signature[1],
        "files": [
            ArtifactFile(path=relative, sha256=file_sha256(local), size_bytes=local.stat().st_size)
            for relative, local in files.items()
        ],
    }
    merged: dict[str, Any] = {**fields, **(overrides or {})}
    written = Manifest(**merged)
    store.write_bytes(manifest_key(name, version), written.to_json())
    return written


def write_labels(store: ObjectStore, name: str, labels: dict[str, int]) -> None:
    store.write_bytes(labels_key(name), json.dumps(labels).encode())
