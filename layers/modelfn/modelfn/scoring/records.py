"""Records that name their own columns (JSON Lines objects, Step Functions items) or do not (JSON lists), gathered
into chunks. An object is matched by key where the layout knows the names (other keys are ignored, `id` passes
through, a missing key is that row's error); where it does not, its keys but `id` are the features, in the order
of the first object (an object with other keys is that row's error). A list, or `{"features": [...]}`, holds a
single [N, K] input's features in order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from modelfn import jsonio
from modelfn.errors import InvalidInput
from modelfn.scoring.layout import ID, Layout
from modelfn.scoring.table import Chunk, Table
from modelfn.scoring.values import Rows


class RowBuilder:
    """Collects records, row by row, into the values each input takes; `chunk()` hands them over."""

    def __init__(self, layout: Layout, text: bool, keys: Sequence[str] | None = None) -> None:
        self.layout, self.text = layout, text
        self.keys = [k for k in keys if k not in (ID, "")] if keys else None
        self.matrix = len(layout.feeds) == 1 and layout.feeds[0].tail not in ((), (1,))
        self.width = layout.feeds[0].tail[0] if self.matrix else 1
        self._reset()

    def _reset(self) -> None:
        self.rows: list[int] = []
        self.ids: list[Any] = []
        self.failed: dict[int, str] = {}
        self.values: list[list[Sequence[Any]]] = [[] for _ in self.layout.feeds]

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: int, record: Any) -> None:
        try:
            self._append(row, record.get(ID) if isinstance(record, dict) else None, self._values(record))
        except InvalidInput as e:
            self.fail(row, e.message, record.get(ID) if isinstance(record, dict) else None)

    def fail(self, row: int, message: str, rid: Any = None) -> None:
        self.failed[len(self.rows)] = message
        self._append(row, rid, [() for _ in self.layout.feeds])

    def _append(self, row: int, rid: Any, values: list[Sequence[Any]]) -> None:
        self.rows.append(row)
        self.ids.append(rid)
        for acc, v in zip(self.values, values, strict=True):
            acc.append(v)

    def _values(self, record: Any) -> list[Sequence[Any]]:
        if isinstance(record, list):
            return [self._positional(record)]
        if not isinstance(record, dict):
            raise InvalidInput(f"expected a JSON object or list, got {type(record).__name__}")
        features = record.get("features")
        if self.layout.by_name:
            missing = [n for n in self.layout.needed if n not in record]
            if not missing:
                return [[record[n] for n in f.names or ()] for f in self.layout.feeds]
            if isinstance(features, list) and self.matrix:
                return [self._positional(features)]
            raise InvalidInput(f"missing column(s) {missing}")
        if isinstance(features, list):
            return [self._positional(features)]
        if self.keys is None:
            self.keys = [k for k in record if k != ID]
        keys = set(self.keys)
        missing = [k for k in self.keys if k not in record]
        extra = [k for k in record if k != ID and k not in keys]
        if missing:
            raise InvalidInput(f"missing column(s) {missing}")
        if extra:
            raise InvalidInput(f"unexpected column(s) {extra}: the features are {self.keys}, as in the first row")
        return [self._positional([record[k] for k in self.keys])]

    def _positional(self, values: list[Any]) -> list[Any]:
        if not self.matrix:
            raise InvalidInput(f"expected an object with the columns {self.layout.needed}, got a list")
        if self.width == -1:
            self.width = len(values)  # a [N, -1] input: the first row decides
        if len(values) != self.width:
            raise InvalidInput(f"expected {self.width} features, got {len(values)}")
        return values

    def chunk(self) -> Chunk:
        inputs = {}
        for feed, values in zip(self.layout.feeds, self.values, strict=True):
            if feed.names is not None:
                labels = [f"column {n!r}" for n in feed.names]
            elif self.keys is not None and len(self.keys) == self.width:
                labels = [f"column {k!r}" for k in self.keys]
            else:
                labels = [f"feature {j + 1}" for j in range(max(self.width, 0))]
            inputs[feed.name] = Rows(labels, values, self.text)
        chunk = Chunk(self.rows, self.ids, dict(inputs), self.failed)
        self._reset()
        return chunk


def read_jsonl(stream: BinaryIO, layout: Layout, chunk_rows: int) -> Table:
    """One JSON value a line; blank lines are not rows. A line that is not JSON (or not UTF-8) is that row's
    error."""
    return Table(True, _jsonl_chunks(stream, RowBuilder(layout, text=False), chunk_rows))


def _jsonl_chunks(stream: BinaryIO, rows: RowBuilder, chunk_rows: int) -> Iterator[Chunk]:
    n = 0
    for line in stream:
        if not line.strip():
            continue
        n += 1
        try:
            rows.add(n, jsonio.loads(line, "the line"))
        except InvalidInput as e:
            rows.fail(n, e.message)
        if len(rows) >= chunk_rows:
            yield rows.chunk()
    if len(rows):
        yield rows.chunk()
