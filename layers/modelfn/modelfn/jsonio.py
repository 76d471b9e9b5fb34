"""JSON in and out of the request path: orjson, which parses and writes numpy arrays natively (several times
faster than json + tolist on tensors), with one place to catch its errors."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np
import orjson

from modelfn.errors import InvalidInput

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
MAX_DEPTH = 1024
"""orjson's own bound: a document nested deeper is refused by the parser, before any of it is built."""
_BRIEF = reprlib.Repr()  # Python 3.11's Repr takes its bounds as attributes only
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxstring = 3, 8, 4, 64


def loads(body: bytes | str, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "limit" in e.msg:  # orjson's "depth limit exceeded" (older releases: "recursion limit reached")
            raise InvalidInput(f"{what} is nested more than {MAX_DEPTH} levels deep, which is not read ({e})") from e
        raise InvalidInput(f"{what} is not valid JSON: {e}") from e


def shown(value: Any, limit: int = 64) -> str:
    """A client's value for an error message, at most `limit` characters. Lists and objects are shown only a few
    levels deep: repr() of a value nested 1,000 deep (which JSON admits) exceeds Python's recursion limit."""
    text = _BRIEF.repr(value) if isinstance(value, list | dict) else repr(value)
    return text[:limit]


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
