"""One captured inference and its JSON line. The observer keeps references to the request's decoded inputs and the
model's outputs (no copy, no encoding on the response path); the line is written when the buffer is flushed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from modelfn import jsonio

STRING_BYTES = 64
"""What a string element is counted as in the buffer's size (its pointer plus a typical short string)."""


@dataclass(slots=True)
class Entry:
    """Built on the response path (positional, not frozen: the cheapest construction), read once when written."""

    id: str | None
    """The request's own id, or None: a uuid is drawn when the line is written."""
    time: float
    """Seconds since the epoch (UTC) when the request was answered."""
    model: str
    version: int
    route: str
    latency_ms: float
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    size: int
    """Bytes the arrays hold: what the buffer counts against its limit."""

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)

    def line(self) -> bytes:
        """`{"id", "time", "model", "version", "route", "latency_ms", "inputs", "outputs"}` and a newline; tensors as
        nested JSON lists, strings as strings (bytes decoded as UTF-8)."""
        doc = {
            "id": self.id or uuid.uuid4().hex,
            "time": self.when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "model": self.model,
            "version": self.version,
            "route": self.route,
            "latency_ms": round(self.latency_ms, 3),
            "inputs": {k: _values(v) for k, v in self.inputs.items()},
            "outputs": {k: _values(v) for k, v in self.outputs.items()},
        }
        return jsonio.dumps(doc) + b"\n"


def _values(value: Any) -> Any:
    """A tensor as orjson writes it: numeric arrays natively (contiguous), strings and bytes as lists of str."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.object_ or value.dtype.kind in "SU":
            return [_text(v) for v in value.ravel().tolist()] if value.ndim == 1 else _nested(value.tolist())
        return np.ascontiguousarray(value) if value.ndim else value.item()
    return value


def _nested(value: Any) -> Any:
    return [_nested(v) for v in value] if isinstance(value, list) else _text(value)


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def size_of(tensors: Mapping[str, Any]) -> int:
    """Bytes held by a request's tensors, counted without reading them (strings at STRING_BYTES each)."""
    total = 0
    for value in tensors.values():
        if isinstance(value, np.ndarray):
            total += value.size * STRING_BYTES if value.dtype == np.object_ else value.nbytes
        else:
            total += STRING_BYTES
    return total
