"""Parquet in and out (pyarrow, imported only when a Parquet file comes). A null is that row's error (numpy would
read it as NaN, or as nothing at all); a file that is not Parquet fails as a whole. The output always has the
output schema, also with no rows."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.scoring.layout import ID, Binding, Layout
from modelfn.scoring.table import Chunk, Table
from modelfn.scoring.values import Arrays, Values
from modelfn.scoring.writers import Sink

SPOOL_BYTES = 64 * 1024 * 1024


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # makes pa.parquet
    except ImportError as e:
        raise InvalidInput("Parquet needs pyarrow, which this deployment does not include") from e
    return pa


def read_parquet(stream: BinaryIO, layout: Layout, chunk_rows: int) -> Table:
    """Parquet needs random access: the object is spooled to a temporary file (on disk past 64 MiB), then read one
    record batch at a time."""
    pa = _pyarrow()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115  (the chunks' generator closes it)
    try:
        while block := stream.read(1024 * 1024):
            spool.write(block)
        spool.seek(0)
        try:
            pf = pa.parquet.ParquetFile(spool)
        except (pa.ArrowException, OSError) as e:
            raise InvalidInput(f"not a Parquet file: {e}") from e
        binding = layout.bind(pf.schema_arrow.names)
    except BaseException:
        spool.close()
        raise
    return Table(binding.id_index is not None, _chunks(pa, pf, binding, spool, chunk_rows))


def _chunks(pa: Any, pf: Any, binding: Binding, spool: Any, chunk_rows: int) -> Iterator[Chunk]:
    names = pf.schema_arrow.names
    wanted = sorted({*binding.positions, *([binding.id_index] if binding.id_index is not None else [])})
    done = 0
    try:
        batches = pf.iter_batches(batch_size=chunk_rows, columns=[names[i] for i in wanted])
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                raise InvalidInput(f"the Parquet file cannot be read past row {done}: {e}") from e
            if batch is None:
                return
            yield batch_chunk(batch, names, binding, done)
            done += batch.num_rows
    finally:
        spool.close()


def batch_chunk(batch: Any, names: Sequence[str], binding: Binding, done: int) -> Chunk:
    """An Arrow record batch as a chunk (rows numbered after `done`): a Parquet file's, or a Spark partition's."""
    count = batch.num_rows
    failed: dict[int, str] = {}
    inputs: dict[str, Values] = {}
    for column in binding.columns:
        arrays = []
        for p in column.positions:
            arr = batch.column(names[p])
            if arr.null_count:
                for i in np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)).tolist():
                    failed.setdefault(i, f"column {names[p]!r} is null")
            if hasattr(arr, "dictionary_decode"):
                arr = arr.dictionary_decode()
            arrays.append(arr.to_numpy(zero_copy_only=False))
        inputs[column.feed.name] = Arrays(column.labels, arrays)
    ids = batch.column(names[binding.id_index]).to_pylist() if binding.id_index is not None else [None] * count
    return Chunk(list(range(done + 1, done + count + 1)), ids, inputs, failed)


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
    """One row group per chunk, streamed into the sink (the footer is written on close). Every row group has the
    schema the model's outputs give, so a file with no rows still has it."""

    def __init__(self, sink: Sink, has_id: bool, columns: dict[str, np.dtype[Any]]) -> None:
        pa = _pyarrow()
        self.pa, self.has_id = pa, has_id
        fields = [pa.field(ID, pa.string())] if has_id else []
        fields += [
            pa.field(name, pa.string() if dt == np.object_ else pa.from_numpy_dtype(dt)) for name, dt in columns.items()
        ]
        self.schema = pa.schema(fields)
        self.writer = pa.parquet.ParquetWriter(pa.PythonFile(_SinkFile(sink), mode="w"), self.schema)

    def write(self, ids: Sequence[Any], columns: dict[str, np.ndarray]) -> None:
        data: dict[str, Any] = {ID: [None if i is None else str(i) for i in ids]} if self.has_id else {}
        data.update(columns)
        self.writer.write_table(self.pa.table(data, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
