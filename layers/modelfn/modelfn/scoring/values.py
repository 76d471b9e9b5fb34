"""A chunk's raw values as a model input's tensor, through `coerce`: the one place the value rules live (a value
that does not fit its datatype is refused, as the HTTP API refuses it), so a row the API would refuse is a row
error here, never a silently converted value.

Each source converts a whole block of rows in one call (C speed). Where a block fails, it is halved until the rows
at fault are found; those are converted one at a time, as the API would take each, and a refused row's error names
the column at fault. The block path may refuse more than the row path (it is only faster), never less.

CSV text is read as JSON numbers are: a decimal number, surrounding whitespace allowed; `nan`, `inf`, a number
that overflows a double, and an empty field are refused (JSON cannot carry them either). BOOL takes true or false,
BYTES takes the text as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.model.signature import TensorSpec, coerce

FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTS = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_SMALL = 8
"""A failing block of at most this many rows is converted row by row rather than halved again."""


def is_number(text: str) -> bool:
    """CSV text that reads as a number (finite or not): what numpy's CSV reader accepts."""
    return bool(_NUMBER.match(text.strip()))


def parse_text(spec: TensorSpec, text: Any, label: str) -> Any:
    """One CSV field as the JSON value it stands for, for `coerce` to judge. A value that is not text (a Step
    Functions item read from JSON) is passed on as it is."""
    if not isinstance(text, str) or spec.datatype == "BYTES":
        return text
    t = text.strip()
    if spec.datatype == "BOOL":
        if t.lower() in ("true", "false"):
            return t.lower() == "true"
        raise InvalidInput(f"{label}: expected BOOL values (true or false), got {_show(text)}")
    if not t:
        raise InvalidInput(f"{label}: expected {spec.datatype} values, got an empty field")
    if spec.datatype in INTS and _INTEGER.match(t):
        return int(t)  # exact, however large: coerce checks the range
    if _NUMBER.match(t):
        value = float(t)
        if math.isfinite(value):
            return value
        raise InvalidInput(f"{label}: expected {spec.datatype} values, got {_show(text)} (overflows a double)")
    raise InvalidInput(f"{label}: expected {spec.datatype} values, got {_show(text)} (not a number)")


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


class Values(Protocol):
    """One input's raw values for every row of a chunk."""

    labels: Sequence[str]
    """Where each value of a row comes from, for messages (`column 'x'`); one per value."""

    def block(self, spec: TensorSpec, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        """The rows at these indexes in one call, or InvalidInput."""

    def row(self, spec: TensorSpec, tail: tuple[int, ...], i: int) -> np.ndarray:
        """Row i alone: the rule. InvalidInput names the column at fault."""


def tensor(
    spec: TensorSpec, tail: tuple[int, ...], values: Values, rows: np.ndarray
) -> tuple[np.ndarray, dict[int, str]]:
    """`values` at `rows` (sorted indexes into the chunk) as one array [len(rows), *tail] of the spec's dtype, and
    the rows that do not convert, by index, with the reason (their places in the array hold zeros)."""
    if not len(rows):
        return np.zeros((0, *tail), dtype=spec.dtype), {}
    try:
        return values.block(spec, (len(rows), *tail), rows), {}
    except InvalidInput:
        pass
    out = np.zeros((len(rows), *tail), dtype=spec.dtype)
    bad: dict[int, str] = {}
    todo = _halves(0, len(rows))
    while todo:
        lo, hi = todo.pop()
        if hi - lo > _SMALL:
            try:
                out[lo:hi] = values.block(spec, (hi - lo, *tail), rows[lo:hi])
            except InvalidInput:
                todo.extend(_halves(lo, hi))
            continue
        for p in range(lo, hi):
            try:
                out[p] = values.row(spec, tail, int(rows[p]))
            except InvalidInput as e:
                bad[int(rows[p])] = e.message
    return out, bad


def _halves(lo: int, hi: int) -> list[tuple[int, int]]:
    if hi - lo <= _SMALL:
        return [(lo, hi)]
    mid = (lo + hi) // 2
    return [(mid, hi), (lo, mid)]


def _row(
    spec: TensorSpec, tail: tuple[int, ...], labels: Sequence[str], values: Sequence[Any], text: bool
) -> np.ndarray:
    """One row as the API would take it (one `coerce` of the row); where it is refused, the first value refused
    on its own names its column."""
    if len(values) != len(labels):
        raise InvalidInput(f"expected {len(labels)} features, got {len(values)}")
    typed = [parse_text(spec, v, label) for v, label in zip(values, labels, strict=True)] if text else list(values)
    try:
        return coerce(spec, typed, tail, labels[0] if len(labels) == 1 else "features")
    except InvalidInput:
        for v, label in zip(typed, labels, strict=True):
            coerce(spec, v, (), label)
        raise


def _take(data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`rows` are sorted and distinct: as many as the data has means all of them, in order (no copy)."""
    return data if len(rows) == len(data) else data[rows]


@dataclass
class Parsed:
    """Numbers a reader has parsed already, one array [rows, K] (the CSV reader's fast path: float64, finite)."""

    labels: Sequence[str]
    data: np.ndarray

    def block(self, spec: TensorSpec, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        return coerce(spec, _take(self.data, rows), shape, "features")

    def row(self, spec: TensorSpec, tail: tuple[int, ...], i: int) -> np.ndarray:
        return _row(spec, tail, self.labels, list(self.data[i]), False)


@dataclass
class Rows:
    """One list of values per row, as its record holds them: JSON values, or CSV text (`text`)."""

    labels: Sequence[str]
    rows: list[Sequence[Any]]
    text: bool

    def block(self, spec: TensorSpec, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        picked = [self.rows[i] for i in rows]
        if not self.text:
            return coerce(spec, picked, shape, "features")
        if spec.datatype in FLOATS or spec.datatype in INTS:
            return coerce(spec, _read_numbers(picked, len(self.labels), spec.datatype in FLOATS), shape, "features")
        return coerce(spec, [[parse_text(spec, v, "features") for v in r] for r in picked], shape, "features")

    def row(self, spec: TensorSpec, tail: tuple[int, ...], i: int) -> np.ndarray:
        return _row(spec, tail, self.labels, self.rows[i], self.text)


def _read_numbers(rows: list[Sequence[Any]], width: int, floats: bool) -> np.ndarray:
    """CSV text fields as numbers by numpy's C reader, the one the CSV fast path uses: a double for a float input
    (finite, as `parse_text` reads it), an int64 for an integer one (exact; anything else goes row by row)."""
    try:
        lines = [",".join(r) for r in rows]
    except TypeError as e:  # values that are not text: row by row
        raise InvalidInput(str(e)) from e
    if any("\n" in line or "\r" in line for line in lines):
        raise InvalidInput("a field holds a line break")
    try:
        arr = np.loadtxt(lines, delimiter=",", dtype=np.float64 if floats else np.int64, comments=None, ndmin=2)
    except (ValueError, OverflowError) as e:
        raise InvalidInput(str(e)) from e
    if arr.shape != (len(rows), width) or (floats and not np.isfinite(arr).all()):
        raise InvalidInput("not all finite numbers")
    return arr


@dataclass
class Arrays:
    """Typed columns, one array each (a Parquet record batch's)."""

    labels: Sequence[str]
    columns: list[np.ndarray]

    def block(self, spec: TensorSpec, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        parts = []
        for c, label in zip(self.columns, self.labels, strict=True):
            column = _take(c, rows)
            if column.dtype.kind == "f" and not np.isfinite(column).all():
                raise InvalidInput(f"{label}: not all finite numbers")
            parts.append(coerce(spec, column, (len(rows),), label))
        return np.stack(parts, axis=1).reshape(shape)

    def row(self, spec: TensorSpec, tail: tuple[int, ...], i: int) -> np.ndarray:
        """A float that is nan or infinite is refused, as CSV text and JSON refuse it (a Parquet or Spark double
        can hold one: Spark's CSV reader makes 1e999 infinite)."""
        values = [c[i] for c in self.columns]
        for v, label in zip(values, self.labels, strict=True):
            if isinstance(v, (float, np.floating)) and not math.isfinite(v):
                raise InvalidInput(f"{label}: expected {spec.datatype} values, got {float(v)} (not a finite number)")
        return _row(spec, tail, self.labels, values, False)
