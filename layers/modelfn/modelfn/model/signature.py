"""Tensor signatures: datatype names across ONNX, numpy, KServe v2 and TF Serving, and request validation.

Validation happens before inference so a client's mistake is a 400 that says what was expected, never an
onnxruntime error surfacing as a 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from modelfn.errors import InvalidInput

# KServe v2 datatype -> numpy dtype. BYTES is variable-length: numpy object arrays of bytes.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype[Any], str] = {v: k for k, v in V2_TO_NUMPY.items()}

ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

V2_TO_TF: dict[str, str] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}

_FLOATS = {"FP16", "FP32", "FP64"}
_INTS = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}


class TensorSpec(BaseModel):
    """One named tensor of a model's signature; -1 marks a variable dimension (as KServe v2 metadata does)."""

    name: str
    datatype: str
    shape: list[int]

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    def describe(self) -> str:
        return f"{self.name} {self.datatype}{self.shape}"


def spec_from_onnx(name: str, onnx_type: str, shape: Sequence[Any]) -> TensorSpec:
    """Build a spec from onnxruntime's NodeArg fields; symbolic or unknown dims become -1."""
    datatype = ONNX_TO_V2.get(onnx_type)
    if datatype is None:
        raise ValueError(f"tensor {name!r} has type {onnx_type}, which modelfn cannot serve")
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
    return TensorSpec(name=name, datatype=datatype, shape=dims)


def shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    return len(expected) == len(actual) and all(e in (-1, a) for e, a in zip(expected, actual, strict=True))


def coerce(spec: TensorSpec, data: Any, shape: Sequence[int] | None = None, where: str = "") -> np.ndarray:
    """Turn decoded JSON data (nested or flat lists, scalars) into an array of the spec's dtype.

    Lossless conversions are accepted (JSON integers for a float input); lossy ones are refused, because a
    silently truncated float is a wrong answer, not a served request.
    """
    label = where or f"input {spec.name!r}"
    try:
        arr = np.asarray(_to_bytes_list(data), dtype=np.object_) if spec.datatype == "BYTES" else np.asarray(data)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"{label}: data is not a rectangular array of numbers ({e})") from e
    if spec.datatype != "BYTES":
        arr = _cast(spec, arr, label)
    if shape is not None:
        count = int(np.prod(shape)) if len(shape) else 1
        if arr.size != count:
            raise InvalidInput(f"{label}: shape {list(shape)} needs {count} elements, got {arr.size}")
        arr = arr.reshape(shape)
    return arr


def _to_bytes_list(data: Any) -> Any:
    if isinstance(data, list):
        return [_to_bytes_list(x) for x in data]
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    raise TypeError(f"BYTES elements must be strings, got {type(data).__name__}")


def _cast(spec: TensorSpec, arr: np.ndarray, label: str) -> np.ndarray:
    target = spec.dtype
    if arr.dtype == target:
        return arr
    kind = arr.dtype.kind
    if arr.size == 0:
        return arr.astype(target)
    if spec.datatype in _FLOATS and kind in "iuf":
        return arr.astype(target)
    if spec.datatype in _INTS and kind in "iub":
        return arr.astype(target)
    if spec.datatype in _INTS and kind == "f" and np.all(np.mod(arr, 1) == 0):
        return arr.astype(target)
    if spec.datatype == "BOOL" and kind == "b":
        return arr
    got = "strings" if kind in "USO" else str(arr.dtype)
    raise InvalidInput(f"{label}: expected {spec.datatype} values, got {got}")


def validate_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names, datatypes and shapes against the signature; the error says what was expected."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(inputs) - set(by_name))
    if unknown:
        raise InvalidInput(f"unknown input(s) {unknown}; the model expects {[s.describe() for s in specs]}")
    missing = [s.describe() for s in specs if s.name not in inputs]
    if missing:
        raise InvalidInput(f"missing input(s): {missing}")
    batch: int | None = None
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = inputs[spec.name]
        if arr.dtype != spec.dtype:
            arr = _cast(spec, arr, f"input {spec.name!r}")
        if not shape_matches(spec.shape, arr.shape):
            raise InvalidInput(f"input {spec.name!r} has shape {list(arr.shape)}, expected {spec.shape} (-1: any size)")
        if spec.shape and spec.shape[0] == -1 and arr.ndim:
            if batch is not None and arr.shape[0] != batch:
                raise InvalidInput(f"inputs disagree on the batch size: {batch} and {arr.shape[0]} ({spec.name!r})")
            batch = arr.shape[0]
        checked[spec.name] = arr
    return checked
