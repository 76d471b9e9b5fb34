"""Tensor signatures: datatype names across ONNX, numpy, KServe v2 and TF Serving, and request validation.

Validation happens before inference so a client's mistake is a 400 that says what was expected, never an
onnxruntime error surfacing as a 500.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, NoReturn

import numpy as np

from modelfn import jsonio
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
_BOOLS = (bool, np.bool_)
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce
_LARGEST = {name: float(np.finfo(V2_TO_NUMPY[name]).max) for name in _FLOATS}
_SMALL = 4096
"""Elements up to which one BLAS dot product (single-threaded at this size) is the cheapest range check."""
_EXACT_FLOAT = 2.0**53
"""Past this, float64 no longer holds every integer."""


@dataclass(kw_only=True)
class TensorSpec:
    """One named tensor of a model's signature; -1 marks a variable dimension (as KServe v2 metadata does). A
    plain dataclass: read on every request, and built at cold start, where a validation library costs its import."""

    name: str
    datatype: str
    shape: list[int]

    @functools.cached_property
    def dtype(self) -> np.dtype[Any]:
        """Kept on the spec after its first read (several per request)."""
        return V2_TO_NUMPY[self.datatype]

    def describe(self) -> str:
        return f"{self.name} {self.datatype}{self.shape}"

    def as_dict(self) -> dict[str, Any]:
        """The spec as JSON takes it (KServe v2 metadata, manifest.json): name, datatype, shape."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def spec_from_onnx(name: str, onnx_type: str, shape: Sequence[Any]) -> TensorSpec:
    """Build a spec from onnxruntime's NodeArg fields; symbolic or unknown dims become -1."""
    datatype = ONNX_TO_V2.get(onnx_type)
    if datatype is None:
        raise ValueError(f"tensor {name!r} has type {onnx_type}, which modelfn cannot serve")
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
    return TensorSpec(name=name, datatype=datatype, shape=dims)


def shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    if len(expected) != len(actual):
        return False
    for e, a in zip(expected, actual, strict=True):  # noqa: SIM110 - a loop, not all(genexpr): runs per request
        if e not in (a, -1):
            return False
    return True


def coerce(
    spec: TensorSpec, data: Any, shape: Sequence[int] | None = None, where: str = "", booleans: bool = True
) -> np.ndarray:
    """Turn decoded JSON data (nested or flat lists, scalars) into an array of the spec's dtype.

    The one place the value rules live (HTTP, SQS and batch rows alike): lossless conversions are accepted (JSON
    integers for a float input, 2.0 for an integer one); a value that does not fit (out of range, a boolean for a
    number, a fraction for an integer, a float that overflows to infinity) is refused with its position, because
    a wrapped or rounded value is a wrong answer, not a served request. BYTES become `str` (what onnxruntime's
    string tensors take); bytes are accepted only as UTF-8. `booleans=False`: the caller knows the data holds no
    JSON boolean (its raw body has no `true`/`false`), so none is searched for among the numbers.
    """
    label = where or f"input {spec.name!r}"
    if spec.datatype == "BYTES":
        arr = _text(_objects(data), label)
    elif isinstance(data, np.ndarray):
        arr = cast(spec, data, label)
    else:
        arr = _numbers(spec, data, label, booleans)
    return arr if shape is None else reshape(arr, shape, label)


def reshape(arr: np.ndarray, shape: Sequence[int], label: str) -> np.ndarray:
    """`arr` in the declared shape; the element count is computed exactly (a product past int64 cannot wrap)."""
    count = math.prod(shape)
    if arr.size != count:
        raise InvalidInput(f"{label}: shape {list(shape)} needs {count} elements, got {arr.size}")
    try:
        return arr.reshape(shape)
    except ValueError as e:  # e.g. [0, 2**62]: no elements, but a shape numpy cannot lay out
        raise InvalidInput(f"{label}: shape {list(shape)} cannot be laid out ({e})") from e


def cast(spec: TensorSpec, arr: np.ndarray, where: str = "") -> np.ndarray:
    """An array already in numpy (a preprocess hook's, a parsed file's) as the spec's dtype, refusing what does
    not fit exactly as `coerce` does. An array of the right dtype is returned as is: it is the value it says."""
    label = where or f"input {spec.name!r}"
    if spec.datatype == "BYTES":
        return _text(arr.astype(np.object_) if arr.dtype.kind in "US" else arr, label)
    target = spec.dtype
    if arr.dtype == target:
        return arr
    kind = arr.dtype.kind
    if arr.size == 0 and kind in "biuf":
        return arr.astype(target)
    if spec.datatype == "BOOL":
        if kind in "iufO":  # name the first value that is no boolean
            at = _first_not(arr.reshape(-1).tolist(), _BOOLS) if kind == "O" else 0
            _refuse(spec, arr, at, label, "BOOL takes true or false")
    elif kind == "b":
        _refuse(spec, arr, 0, label, "a boolean")
    elif kind == "O":
        return _from_objects(spec, arr, label)
    elif kind in "iuf":
        return _to_int(spec, arr, label) if spec.datatype in _INTS else _to_float(spec, arr, label)
    got = "strings" if kind in "US" else str(arr.dtype)
    raise InvalidInput(f"{label}: expected {spec.datatype} values, got {got}")


def _numbers(spec: TensorSpec, data: Any, label: str, booleans: bool = True) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"{label}: data is not a rectangular array of numbers ({e})") from e
    if spec.datatype == "BOOL" and arr.dtype.kind in "iufO":  # numbers, perhaps among true/false: name the first
        _refuse(spec, arr, _first_not(_flat(data, arr.ndim), _BOOLS), label, "BOOL takes true or false")
    if arr.dtype.kind not in "iuf" or spec.datatype == "BOOL":
        return cast(spec, arr, label)
    at = _boolean_at(data, arr) if booleans else None
    if at is not None:  # numpy reads true/false as 1/0
        _refuse(spec, arr.astype(np.bool_), at, label, "a boolean")
    if spec.datatype in _INTS and arr.dtype.kind == "f" and arr.size and _MAX(np.abs(arr), axis=None) >= _EXACT_FLOAT:
        # JSON integers mixed with floats came out as float64, rounded past 2**53: take the exact values instead
        return _from_objects(spec, np.array(data, dtype=np.object_), label)
    return cast(spec, arr, label)


def _boolean_at(data: Any, arr: np.ndarray) -> int | None:
    """The flat index of the first JSON true/false in numeric data, or None. Only elements that read as 0 or 1
    can be one, so the common case is a count and a comparison; the suspects' types are then read at C speed."""
    if arr.ndim == 0:
        return 0 if isinstance(data, _BOOLS) else None
    flat = arr.reshape(-1)
    if np.count_nonzero(flat) == flat.size and not np.count_nonzero(np.equal(flat, 1)):
        return None
    suspects = np.flatnonzero((flat == 0) | (flat == 1)).tolist()
    items = _flat(data, arr.ndim)
    picked = itemgetter(*suspects)(items) if len(suspects) > 1 else (items[suspects[0]],)
    kinds = set(map(type, picked))
    if bool not in kinds and np.bool_ not in kinds:
        return None
    return next(i for i, x in zip(suspects, picked, strict=True) if isinstance(x, _BOOLS))


def _flat(data: Any, ndim: int) -> Sequence[Any]:
    """Nested (rectangular) lists as one flat list, in numpy's order."""
    items = data
    for _ in range(ndim - 1):
        items = list(chain.from_iterable(items))
    return items if ndim else [data]


def _first_not(items: Sequence[Any], types: tuple[type, ...]) -> int:
    return next((i for i, x in enumerate(items) if not isinstance(x, types)), 0)


def _to_int(spec: TensorSpec, arr: np.ndarray, label: str) -> np.ndarray:
    target = spec.dtype
    info = np.iinfo(target)
    if arr.dtype.kind == "f":
        fraction = np.trunc(arr) != arr  # NaN too
        if fraction.any():
            _refuse(spec, arr, int(np.argmax(fraction)), label, "not a whole number")
        # The bounds as Python floats are exact (powers of two), and so is every value as one: no rounding.
        low, high = float(info.min), float(info.max) + 1.0
        if float(_MIN(arr, axis=None)) < low or float(_MAX(arr, axis=None)) >= high:
            wide = arr.astype(np.float64)
            _refuse(spec, arr, int(np.argmax((wide < low) | (wide >= high))), label, _range(info))
    elif not _widens(arr.dtype, target):
        if int(_MIN(arr, axis=None)) < info.min:
            _refuse(spec, arr, int(np.argmin(arr)), label, _range(info))
        if int(_MAX(arr, axis=None)) > info.max:
            _refuse(spec, arr, int(np.argmax(arr)), label, _range(info))
    return arr.astype(target)


def _to_float(spec: TensorSpec, arr: np.ndarray, label: str) -> np.ndarray:
    """Floats that would overflow to infinity are refused (one that is infinite already stays so)."""
    target = spec.dtype
    if _widens(arr.dtype, target) or (arr.dtype.kind in "iu" and target.itemsize >= 4):
        return arr.astype(target)  # no integer reaches float32's range
    largest = _LARGEST[spec.datatype]
    if arr.dtype.kind == "f" and _within(arr, largest):
        return arr.astype(target)
    with np.errstate(over="ignore"):
        out = arr.astype(target)
    overflow = np.isinf(out) & ~np.isinf(arr)
    if overflow.any():
        _refuse(spec, arr, int(np.argmax(overflow)), label, f"overflows {spec.datatype}, whose largest is {largest:g}")
    return out


def _within(arr: np.ndarray, largest: float) -> bool:
    """Whether no element is past ±largest (False for NaN too: look closer). A small array takes one dot product
    (a sum of squares at most largest**2; vdot, unlike dot, warns of no overflow, and an overflowed sum only means
    looking closer): one call instead of two. A large one takes two reductions, as OpenBLAS would spread the dot
    product over threads."""
    if arr.size <= _SMALL:
        return float(np.vdot(arr, arr)) <= largest * largest
    return float(_MAX(arr, axis=None)) <= largest and float(_MIN(arr, axis=None)) >= -largest


@functools.cache
def _widens(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether every value of `source` is one of `target` (numpy's safe casting; int64 to float64 counts)."""
    return bool(np.can_cast(source, target))


def _from_objects(spec: TensorSpec, arr: np.ndarray, label: str) -> np.ndarray:
    """An object array of Python numbers (integers past uint64, or exact integers past 2**53): checked exactly."""
    items = arr.reshape(-1).tolist()
    bad = next((i for i, x in enumerate(items) if type(x) not in (int, float)), None)
    if bad is not None:
        why = "a boolean" if isinstance(items[bad], _BOOLS) else f"a {type(items[bad]).__name__}"
        _refuse(spec, arr, bad, label, why)
    if spec.datatype in _INTS:
        info = np.iinfo(spec.dtype)
        for i, x in enumerate(items):
            if isinstance(x, float) and not x.is_integer():
                _refuse(spec, arr, i, label, "not a whole number")
            if not info.min <= x <= info.max:
                _refuse(spec, arr, i, label, _range(info))
        return np.array([int(x) for x in items], dtype=spec.dtype).reshape(arr.shape)
    try:
        floats = np.array(items, dtype=np.float64).reshape(arr.shape)
    except OverflowError:
        big = next(i for i, x in enumerate(items) if abs(x) > sys.float_info.max)
        _refuse(spec, arr, big, label, f"overflows {spec.datatype}")
    return _to_float(spec, floats, label)


def _range(info: np.iinfo[Any]) -> str:
    return f"out of range {info.min}..{info.max}"


def _refuse(spec: TensorSpec, arr: np.ndarray, at: int, label: str, why: str) -> NoReturn:
    """Name the value at flat index `at` and where it is (its index in the data as sent)."""
    value = arr.reshape(-1)[at]
    value = value.item() if isinstance(value, np.generic) else value
    shown = ("true" if value else "false") if isinstance(value, bool) else jsonio.shown(value)
    where = f" at {_index(at, arr.shape)}" if arr.ndim else ""
    raise InvalidInput(f"{label}: expected {spec.datatype} values, got {shown}{where} ({why})")


def _objects(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.astype(np.object_) if data.dtype.kind in "US" else data
    return np.array(data, dtype=np.object_)  # ragged data becomes an array of lists, refused just below


def _text(arr: np.ndarray, label: str) -> np.ndarray:
    """A BYTES tensor as `str` elements. onnxruntime feeds str() of anything else, so bytes are decoded here
    (UTF-8 only: nothing else fits a string tensor) and every other type is refused."""
    if arr.dtype != np.object_:
        raise InvalidInput(f"{label}: expected BYTES values (strings), got {arr.dtype} numbers")
    items = arr.reshape(-1).tolist()
    kinds = set(map(type, items))
    if kinds <= {str}:
        return arr
    out: list[str] = []
    for i, x in enumerate(items):
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, bytes):
            out.append(utf8(x, f"{label} element {_index(i, arr.shape)}"))
        else:
            shown = "a list (the data is ragged)" if isinstance(x, list) else jsonio.shown(x)
            where = f" at {_index(i, arr.shape)}" if arr.ndim else ""
            raise InvalidInput(f"{label}: expected BYTES values (strings), got {shown}{where}")
    return np.array(out, dtype=np.object_).reshape(arr.shape)


def _index(at: int, shape: tuple[int, ...]) -> list[int]:
    """A flat index as the position in the data as sent, e.g. [2, 0]."""
    return [int(i) for i in np.unravel_index(at, shape)]


def utf8(data: bytes | memoryview, where: str) -> str:
    """Bytes as text for a string tensor, or a 400 saying they are not UTF-8."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(
            f"{where}: bytes are not UTF-8 text ({e.reason} at byte {e.start}), and string tensors hold text"
        ) from e


def _refuse_names(specs: Sequence[TensorSpec], inputs: Mapping[str, Any]) -> NoReturn:
    """400 naming the unknown inputs (first) or the missing ones, and what the model expects."""
    names = {s.name for s in specs}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise InvalidInput(f"unknown input(s) {unknown}; the model expects {[s.describe() for s in specs]}")
    missing = [s.describe() for s in specs if s.name not in inputs]
    raise InvalidInput(f"missing input(s): {missing}")


def validate_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names, datatypes and shapes against the signature; the error says what was expected."""
    if len(inputs) != len(specs):  # as many inputs as the signature's, each of them present: none unknown
        _refuse_names(specs, inputs)
    for spec in specs:
        if spec.name not in inputs:
            _refuse_names(specs, inputs)
    batch: int | None = None
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = inputs[spec.name]
        if not isinstance(arr, np.ndarray):  # a hook's plain lists get the JSON rules
            arr = coerce(spec, arr, where=f"input {spec.name!r}")
        elif arr.dtype != spec.dtype or spec.datatype == "BYTES":
            arr = cast(spec, arr, f"input {spec.name!r}")
        if not shape_matches(spec.shape, arr.shape):
            raise InvalidInput(f"input {spec.name!r} has shape {list(arr.shape)}, expected {spec.shape} (-1: any size)")
        if spec.shape and spec.shape[0] == -1 and arr.ndim:
            if batch is not None and arr.shape[0] != batch:
                raise InvalidInput(f"inputs disagree on the batch size: {batch} and {arr.shape[0]} ({spec.name!r})")
            batch = arr.shape[0]
        checked[spec.name] = arr
    return checked
