"""Readers and writers per file format. A reader yields chunks of rows as (row numbers, ids, feature rows);
a writer turns scored chunks into bytes for the output object."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput

FORMATS = (".csv", ".jsonl", ".parquet")


@dataclass
class Chunk:
    rows: list[int]  # 1-based row numbers, header excluded
    ids: list[Any]  # None where the input has no id
    features: list[Any]  # one entry per row: a list of raw values, or an Exception for a row that failed to parse
    has_id: bool
    matrix: np.ndarray | None = None  # all rows already parsed as float32 [rows, features] (the fast path)


def format_of(key: str) -> str:
    for ext in FORMATS:
        if key.lower().endswith(ext):
            return ext
    raise InvalidInput(f"{key}: unsupported file type; batch scoring reads {', '.join(FORMATS)}")


def read_csv(stream: BinaryIO, chunk_rows: int) -> Iterator[Chunk]:
    """Lines are read a chunk at a time. A chunk of well-formed unquoted numeric rows is parsed by numpy's C
    reader in one call (the common case, several times faster than the csv module); any other chunk goes through
    the csv module row by row so each bad row is reported on its own. Quoted fields may not span lines."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    header_line = text.readline()
    if not header_line.strip():
        return
    header = [h.strip() for h in next(csv.reader([header_line]))]
    id_col = header.index("id") if "id" in header else None
    feature_cols = [i for i, h in enumerate(header) if i != id_col]
    width = len(header)
    n = 0
    while lines := list(itertools.islice(text, chunk_rows)):
        lines = [line for line in lines if line.strip()]  # a blank line is not a row, and does not count as one
        if not lines:
            continue
        rows = list(range(n + 1, n + len(lines) + 1))
        n += len(lines)
        matrix = _parse_numeric(lines, width, feature_cols)
        if matrix is not None:
            yield Chunk(rows, _ids(lines, id_col), [], id_col is not None, matrix)
            continue
        chunk = Chunk(rows, [], [], id_col is not None)
        for record in csv.reader(lines):
            chunk.ids.append(record[id_col] if id_col is not None and id_col < len(record) else None)
            if len(record) != width:
                chunk.features.append(InvalidInput(f"expected {width} fields as in the header, got {len(record)}"))
            else:
                chunk.features.append([record[i] for i in feature_cols])
        yield chunk


def _parse_numeric(lines: list[str], width: int, feature_cols: list[int]) -> np.ndarray | None:
    """Every line has `width` unquoted fields and every feature is a number: the float32 matrix, else None."""
    if any(line.count(",") != width - 1 or '"' in line for line in lines):
        return None
    try:
        return np.loadtxt(lines, delimiter=",", dtype=np.float32, usecols=feature_cols, ndmin=2)
    except ValueError:
        return None


def _ids(lines: list[str], id_col: int | None) -> list[Any]:
    if id_col is None:
        return [None] * len(lines)
    if id_col == 0:
        return [line.partition(",")[0] for line in lines]
    return [line.rstrip("\r\n").split(",")[id_col] for line in lines]


def read_jsonl(stream: BinaryIO, chunk_rows: int) -> Iterator[Chunk]:
    """Each line: {"id": ..., "features": [...]}, or a bare list of features."""
    chunk = Chunk([], [], [], True)
    n = 0
    for line in stream:
        if not line.strip():
            continue
        n += 1
        chunk.rows.append(n)
        try:
            obj = jsonio.loads(line, f"line {n}")
            if isinstance(obj, list):
                chunk.ids.append(None)
                chunk.features.append(obj)
            elif isinstance(obj, dict) and isinstance(obj.get("features"), list):
                chunk.ids.append(obj.get("id"))
                chunk.features.append(obj["features"])
            else:
                chunk.ids.append(obj.get("id") if isinstance(obj, dict) else None)
                chunk.features.append(InvalidInput('expected {"features": [...]} or a JSON list'))
        except InvalidInput as e:
            chunk.ids.append(None)
            chunk.features.append(e)
        if len(chunk.rows) >= chunk_rows:
            yield chunk
            chunk = Chunk([], [], [], True)
    if chunk.rows:
        yield chunk


def read_parquet(stream: BinaryIO, chunk_rows: int) -> Iterator[Chunk]:
    """Parquet needs random access: the object is spooled to a temporary file (on disk past 64 MiB), then read
    one record batch at a time."""
    import tempfile

    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InvalidInput("Parquet input needs pyarrow, which this deployment does not include") from e
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as spool:
        while block := stream.read(1024 * 1024):
            spool.write(block)
        spool.seek(0)
        pf = pq.ParquetFile(spool)
        names = pf.schema_arrow.names
        feature_names = [c for c in names if c != "id"]
        has_id = "id" in names
        n = 0
        for batch in pf.iter_batches(batch_size=chunk_rows):
            cols = batch.to_pydict()
            count = batch.num_rows
            rows = list(range(n + 1, n + count + 1))
            n += count
            ids = cols["id"] if has_id else [None] * count
            feats = [list(r) for r in zip(*(cols[c] for c in feature_names), strict=True)]
            yield Chunk(rows, ids, feats, has_id)


READERS = {".csv": read_csv, ".jsonl": read_jsonl, ".parquet": read_parquet}


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


_FORMATS = {"f2": "%.5g", "f4": "%.9g", "f8": "%r"}  # %d would truncate; ints and bools fall back to %s
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _as_text(col: np.ndarray) -> list[str]:
    """Shortest round-trip text per value (a float32 as a float32, not widened to a double's digits)."""
    if col.dtype.kind == "f" and col.dtype != np.float64:
        return [str(v) for v in col]
    return [str(v) for v in col.tolist()]


class CsvWriter:
    def __init__(self, sink: Sink, has_id: bool, columns: Sequence[str]) -> None:
        self.sink, self.has_id = sink, has_id
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow((["id"] if has_id else []) + list(columns))
        sink.write(buf.getvalue().encode())

    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None:
        """One %-format per row (C-speed formatting of every value); the csv module only for ids that need
        quoting. Floats are written with enough digits to read back exactly (9 significant for float32)."""
        texts = ["" if i is None else str(i) for i in ids] if self.has_id else None
        values = [c.tolist() for c in columns.values()]
        row_fmt = ",".join(_FORMATS.get(c.dtype.kind + str(c.dtype.itemsize), "%s") for c in columns.values())
        if texts is not None and any(_NEEDS_QUOTES.search(t) for t in texts):
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(
                zip(texts, *[_as_text(c) for c in columns.values()], strict=True)
            )
            self.sink.write(buf.getvalue().encode())
            return
        if texts is not None:
            row_fmt = "%s," + row_fmt
            lines = [row_fmt % row for row in zip(texts, *values, strict=True)]
        else:
            lines = [row_fmt % row for row in zip(*values, strict=True)]
        self.sink.write(("\n".join(lines) + "\n").encode() if lines else b"")

    def close(self) -> None:
        pass


class JsonlWriter:
    def __init__(self, sink: Sink, has_id: bool, columns: Sequence[str]) -> None:
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


class _SinkFile(io.RawIOBase):
    """The file API (closed, flush, close) that pyarrow's PythonFile needs, over a sink that only has write():
    an S3 MultipartWriter is not a file object. Closing it leaves the sink to its owner."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        self.sink.write(block)
        return len(block)


class ParquetWriter:
    """One row group per chunk, streamed into the sink (the footer is written on close)."""

    def __init__(self, sink: Sink, has_id: bool, columns: Sequence[str]) -> None:
        import pyarrow as pa

        self.pa, self.has_id = pa, has_id
        self.file = pa.PythonFile(_SinkFile(sink), mode="w")
        self.writer: Any = None

    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None:
        import pyarrow.parquet as pq

        data: dict[str, Any] = {"id": [None if i is None else str(i) for i in ids]} if self.has_id else {}
        data.update(columns)
        table = self.pa.table(data)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Writer(Protocol):
    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None: ...
    def close(self) -> None: ...


WRITERS: dict[str, Any] = {".csv": CsvWriter, ".jsonl": JsonlWriter, ".parquet": ParquetWriter}
