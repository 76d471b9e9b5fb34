"""CSV input, read a chunk of lines at a time (bounded memory whatever the file's size).

- The first line is the header (a UTF-8 byte-order mark before it is dropped); `layout.Layout.bind` decides which
  columns feed the model, and refuses a file whose first line is all numbers where it would be taken as names
  (such a file has no header: a header is required, so it is refused rather than guessed at).
- Records follow RFC 4180: a quoted field may hold commas, doubled quotes and line breaks, also across the
  reader's chunks; row numbers count records (blank lines are not rows), not lines. A record that is not valid
  CSV is that row's error. A quoted field that is never closed (it runs to the end of the file, or past the csv
  module's field size limit, which also bounds memory) fails the file, naming the row where it opened: every row
  after it would be misread.
- The text must be UTF-8: a record holding bytes that are not is that row's error (its id, if shown, has them
  replaced), never an exception out of the reader.

Speed: a chunk of lines without quotes whose inputs all take floats is parsed by numpy's C reader in one call (the
common case, several times faster than the csv module); any other chunk goes through the csv module record by
record, and its values through `values.Rows`, which reads numbers with the same numpy reader.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, BinaryIO

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.scoring.layout import Binding, Layout
from modelfn.scoring.table import Chunk, Table
from modelfn.scoring.values import Parsed, Rows, Values

_UNDECODED = re.compile("[\udc80-\udcff]")
"""What the surrogateescape error handler makes of each byte that is not UTF-8."""


def read_csv(stream: BinaryIO, layout: Layout, chunk_rows: int) -> Table:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    lines = _Lines(text)
    header = _header(lines)
    if header is None:
        return Table(False, iter(()))
    binding = layout.bind(header, text=True)
    return Table(binding.id_index is not None, _chunks(lines, binding, layout.floats, chunk_rows))


class _Lines:
    """The file's lines, counted: `block` hands out the next n at C speed, iteration one at a time."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.source = iter(text)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.source)
        self.count += 1
        return line

    def block(self, n: int) -> list[str]:
        lines = list(itertools.islice(self.source, n))
        self.count += len(lines)
        return lines


def _header(lines: _Lines) -> list[str] | None:
    """The first record that is not blank, or None for a file without one."""
    try:
        for record in csv.reader(lines, strict=True):
            if _blank(record):
                continue
            if any(_UNDECODED.search(f) for f in record):
                raise InvalidInput("the header line is not UTF-8 text")
            return record
    except csv.Error as e:
        raise InvalidInput(f"the header line is not valid CSV: {e}") from e
    return None


def _blank(record: list[str]) -> bool:
    """A blank line is not a row."""
    return not record or (len(record) == 1 and not record[0].strip())


def _chunks(lines: _Lines, binding: Binding, floats: bool, chunk_rows: int) -> Iterator[Chunk]:
    done = 0
    while block := lines.block(chunk_rows):
        joined = "".join(block)
        clean = joined.isascii() or not _UNDECODED.search(joined)
        chunk = None
        if floats and clean and '"' not in joined:
            chunk = _parse([line for line in block if not line.isspace()], binding, done)  # blank lines: no rows
        if chunk is None:
            records, more = _records(block, lines, done)
            chunk = _from_records(records, binding, done, clean and _clean(more))
        if chunk.rows:
            done += len(chunk.rows)
            yield chunk


def _parse(lines: list[str], binding: Binding, done: int) -> Chunk | None:
    """Every line has the header's field count and every value read is a finite number: the chunk, parsed by
    numpy in one call; else None."""
    if not lines or any(line.count(",") != binding.width - 1 for line in lines):
        return None
    try:
        data = np.loadtxt(lines, delimiter=",", dtype=np.float64, usecols=binding.positions, comments=None, ndmin=2)
    except ValueError:
        return None
    if not np.isfinite(data).all():
        return None
    inputs: dict[str, Values] = {}
    start = 0
    for column in binding.columns:
        width = len(column.positions)
        inputs[column.feed.name] = Parsed(column.labels, data[:, start : start + width])
        start += width
    return Chunk(list(range(done + 1, done + len(lines) + 1)), _ids(lines, binding.id_index), inputs)


def _ids(lines: list[str], id_index: int | None) -> list[Any]:
    if id_index is None:
        return [None] * len(lines)
    if id_index == 0:
        return [line.partition(",")[0] for line in lines]
    return [line.rstrip("\r\n").split(",")[id_index] for line in lines]


class _Broken:
    """A record the csv module refused."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Past:
    """Lines past a block, read only while the csv module needs them to finish a record; kept, and whether the
    file ran out (`starved`: a quoted field runs to its end)."""

    def __init__(self, lines: _Lines) -> None:
        self.lines = lines
        self.read: list[str] = []
        self.starved = False

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.read.append(line)
            yield line
        self.starved = True


def _records(block: list[str], lines: _Lines, done: int) -> tuple[list[list[str] | _Broken], list[str]]:
    """The block's records, and the lines read past it. The last record may go on past the block (a quoted line
    break): the csv module then reads on from `lines` until it ends, so no record is ever cut in two."""
    past = _Past(lines)
    reader = csv.reader(itertools.chain(block, past), strict=True)
    out: list[list[str] | _Broken] = []
    while reader.line_num < len(block):
        try:
            for record in reader:
                if not _blank(record):
                    out.append(record)
                if reader.line_num >= len(block):
                    break
            else:
                break
        except csv.Error as e:
            if past.starved or "field larger than field limit" in str(e):
                where = "the end of the file" if past.starved else f"line {lines.count}"
                raise InvalidInput(
                    f"row {done + len(out) + 1}: a quoted field is not closed before {where} ({e}): every row after "
                    "it would be misread"
                ) from e
            out.append(_Broken(f"not valid CSV: {e}"))
    return out, past.read


def _from_records(records: list[list[str] | _Broken], binding: Binding, done: int, clean: bool) -> Chunk:
    """A chunk from records the csv module split: each value still text, each bad record its row's error
    (`clean`: no record holds bytes that are not UTF-8, so none needs looking at for them). Comprehensions, not
    a loop: this is the path of every chunk with a bad row."""
    width, id_index = binding.width, binding.id_index
    fields = [r if isinstance(r, list) else [] for r in records]  # a broken record has none (and width > 0)
    ok = [len(f) == width for f in fields]
    if not clean:
        ok = [o and _undecoded(f) is None for f, o in zip(fields, ok, strict=True)]
    failed = {i: _problem(records[i], width) for i, o in enumerate(ok) if not o}
    if id_index is None:
        ids: list[Any] = [None] * len(records)
    else:
        ids = [f[id_index] if id_index < len(f) else None for f in fields]
        if not clean:
            ids = [None if i is None else _readable(i) for i in ids]
    inputs: dict[str, Values] = {}
    for column in binding.columns:
        get = _getter(column.positions)
        rows = [get(f) if o else () for f, o in zip(fields, ok, strict=True)]
        inputs[column.feed.name] = Rows(column.labels, rows, True)
    return Chunk(list(range(done + 1, done + len(records) + 1)), ids, inputs, failed)


def _problem(record: list[str] | _Broken, width: int) -> str:
    if isinstance(record, _Broken):
        return record.message
    if len(record) != width:
        return f"expected {width} fields as in the header, got {len(record)}"
    return _undecoded(record) or "not valid CSV"


def _getter(positions: tuple[int, ...]) -> Callable[[list[str]], Sequence[str]]:
    if len(positions) == 1:
        p = positions[0]
        return lambda record: (record[p],)
    return itemgetter(*positions)


def _clean(lines: list[str]) -> bool:
    return all(line.isascii() or not _UNDECODED.search(line) for line in lines)


def _undecoded(record: list[str]) -> str | None:
    for j, field in enumerate(record):
        if not field.isascii() and (m := _UNDECODED.search(field)):
            return f"not UTF-8 text: byte 0x{ord(m.group()) - 0xDC00:02x} in field {j + 1}"
    return None


def _readable(text: str) -> str:
    """Text as it can be written to the errors file: bytes that were not UTF-8 become U+FFFD."""
    if text.isascii() or not _UNDECODED.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
