"""JSON in and out of the request path: orjson, which parses and writes numpy arrays natively (several times
faster than json + tolist on tensors), with one place to catch its errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelfn.errors import InvalidInput

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def loads(body: bytes | str, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from e


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTS, default=_default)


def tensor_list(arr: np.ndarray) -> Any:
    """A JSON-ready nested list for one tensor, exactly as tolist() would give but serialised by orjson."""
    if arr.dtype == np.object_:  # strings: onnxruntime's are str already (any bytes go through _default)
        return arr.tolist()
    if arr.ndim == 0:
        return arr.item()
    return np.ascontiguousarray(arr)
