"""Writers of scored chunks, per output format: each turns (ids, output columns) into bytes for the output object.
An output with no rows is still a valid file of its format (CSV: the header line; JSON Lines: empty)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from modelfn import jsonio


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


class Writer(Protocol):
    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None: ...
    def close(self) -> None: ...


_FORMATS = {"f2": "%.5g", "f4": "%.9g", "f8": "%r"}  # %d would truncate; ints and bools fall back to %s
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _as_text(col: np.ndarray) -> list[str]:
    """Shortest round-trip text per value (a float32 as a float32, not widened to a double's digits)."""
    if col.dtype.kind == "f" and col.dtype != np.float64:
        return [str(v) for v in col]
    return [str(v) for v in col.tolist()]


class CsvWriter:
    def __init__(self, sink: Sink, has_id: bool, columns: dict[str, np.dtype[Any]]) -> None:
        self.sink, self.has_id = sink, has_id
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow((["id"] if has_id else []) + list(columns))
        sink.write(buf.getvalue().encode())

    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None:
        """One %-format per row (C-speed formatting of every value); the csv module only for values that need
        quoting. Floats are written with enough digits to read back exactly (9 significant for float32)."""
        texts = ["" if i is None else str(i) for i in ids] if self.has_id else None
        if (texts is not None and any(_NEEDS_QUOTES.search(t) for t in texts)) or any(
            c.dtype == np.object_ for c in columns.values()
        ):
            buf = io.StringIO()
            cells = [_as_text(c) for c in columns.values()]
            csv.writer(buf, lineterminator="\n").writerows(
                zip(*([texts] if texts is not None else []), *cells, strict=True)
            )
            self.sink.write(buf.getvalue().encode())
            return
        values = [c.tolist() for c in columns.values()]
        row_fmt = ",".join(_FORMATS.get(c.dtype.kind + str(c.dtype.itemsize), "%s") for c in columns.values())
        if texts is not None:
            row_fmt = "%s," + row_fmt
            lines = [row_fmt % row for row in zip(texts, *values, strict=True)]
        else:
            lines = [row_fmt % row for row in zip(*values, strict=True)]
        self.sink.write(("\n".join(lines) + "\n").encode() if lines else b"")

    def close(self) -> None:
        pass


class JsonlWriter:
    def __init__(self, sink: Sink, has_id: bool, columns: dict[str, np.dtype[Any]]) -> None:
        self.sink, self.has_id = sink, has_id

    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None:
        lists = {k: v.tolist() for k, v in columns.items()}
        out = []
        for i, rid in enumerate(ids):
            obj: dict[str, Any] = {"id": rid} if self.has_id and rid is not None else {}
            obj.update({k: v[i] for k, v in lists.items()})
            out.append(jsonio.dumps(obj))
        if out:
            self.sink.write(b"\n".join(out) + b"\n")

    def close(self) -> None:
        pass
