"""Spark: `score(df, store=URI, name=NAME, version=None)` scores a DataFrame with a published model, by the rules
and code of `modelfn score` (`modelfn.scoring`): the same columns feed the same inputs, the same values are
refused, and the answers are equal. pyspark is imported only here and only when called; it is not in the Lambda
layer.

- The driver resolves the version once (a label that moves mid-job does not split the job across versions), loads
  it (verifying its sha256) to learn its inputs and outputs, and binds the DataFrame's columns: a missing column
  fails the call at once, as it fails a whole file.
- Each executor's Python worker loads that version once, verifying its sha256, and keeps it in a module-level dict
  keyed by store, name, version and sha256; a version whose bytes changed in the store since the driver saw it is
  refused. onnxruntime gets `spark.task.cpus` intra-op threads (MODELFN_INTRA_OP_THREADS overrides), so that the
  executor's concurrent tasks do not oversubscribe its cores.
- A partition's rows are scored in chunks of `CHUNK_ROWS` consecutive rows, as `modelfn score` chunks a file:
  onnxruntime's answer for a row can depend on the batch around it (in the last bit of a float; more for a
  dynamically quantized model, whose scale is its batch's). The answers equal `modelfn score`'s where each
  partition starts at a chunk boundary of the file (Parquet row groups of a multiple of 8,192 rows; a file read
  as one partition), and equal them to within that rounding elsewhere.
- The result has `id` (when the input has one, with its type), the output columns (`<name>` for [N], `<name>_<k>`
  for [N, K]), and `error`: null for a scored row; for a row that cannot be scored, the reason, with every output
  column null. No row is dropped: filter on `error` to split them. A null input value is that row's error
  (`column 'x' is null`), as in Parquet; Spark's CSV reader turns a field it cannot parse into null, so such a row
  fails with that message where `modelfn score` names the text it could not read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from modelfn.errors import InvalidInput, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.scoring import RowScorer
from modelfn.scoring.layout import ID, Binding
from modelfn.scoring.parquet import batch_chunk
from modelfn.scoring.scorer import CHUNK_ROWS
from modelfn.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

ERROR = "error"
Key = tuple[str, str, int, str]
"""store, name, version, sha256."""

_MODELS: dict[Key, RowScorer] = {}
_LOCK = threading.Lock()

_EMITTED: dict[str, str] = {"e": "float32", "u1": "int16", "u2": "int32", "u4": "int64"}
"""Output dtypes Spark has no type for, by kind and size, and the dtype their values are sent as."""


def score(df: DataFrame, store: str, name: str, version: str | int | None = None) -> DataFrame:
    """`df` scored by model `name` (a version number, a label, or None for the default) from the store at `store`:
    one row out per row in, in the same order within each partition (see the module's docstring)."""
    model = _load(store, name, version)
    scorer = RowScorer(model)
    binding = scorer.layout.bind(df.columns)
    wanted = sorted({*binding.positions, *([] if binding.id_index is None else [binding.id_index])})
    selected = df.select(*[df.columns[i] for i in wanted])
    schema = _schema(df, binding, scorer.columns)
    return selected.mapInPandas(partial(_score_partition, (store, name, model.version, model.sha256)), schema)


def _load(store: str, name: str, version: str | int | None, threads: int | None = None) -> LoadedModel:
    """A version from the store, verified by the registry's loader (sha256 of every file)."""
    overrides: dict[str, Any] = {"store": store}
    if threads is not None and "MODELFN_INTRA_OP_THREADS" not in os.environ:
        overrides["intra_op_threads"] = threads
    settings = Settings.load(**overrides)
    return ModelRegistry.from_uri(store, settings, [name]).get(name, version)


def _scorer(key: Key) -> RowScorer:
    """This worker process's scorer for the version the driver resolved, loaded and verified on first use."""
    with _LOCK:
        scorer = _MODELS.get(key)
        if scorer is None:
            store, name, version, sha256 = key
            model = _load(store, name, version, _task_cpus())
            if model.sha256 != sha256:
                raise NotReady(
                    f"model {name!r} version {version} changed in the store while the job ran: sha256 "
                    f"{model.sha256}, the job started with {sha256}"
                )
            scorer = _MODELS[key] = RowScorer(model)
        return scorer


def _task_cpus() -> int | None:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else None


def _score_partition(key: Key, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas' function: the partition's rows in chunks of `CHUNK_ROWS` through `RowScorer`, as a file's
    chunks go (onnxruntime's answer for a row can depend on the batch around it: the same batches, the same
    answers)."""
    scorer = _scorer(key)
    for frame in _rechunk(frames, CHUNK_ROWS):
        yield _score_frame(scorer, frame)


def _rechunk(frames: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The same rows, in order, in frames of exactly `rows` (the last one shorter)."""
    import pandas as pd

    pending: pd.DataFrame | None = None
    for frame in frames:
        pending = frame if pending is None else pd.concat([pending, frame], ignore_index=True)
        while len(pending) >= rows:
            yield pending.iloc[:rows]
            pending = pending.iloc[rows:]
    if pending is not None and len(pending):
        yield pending


def _score_frame(scorer: RowScorer, frame: pd.DataFrame) -> pd.DataFrame:
    import pyarrow as pa

    (batch,) = pa.Table.from_pandas(frame, preserve_index=False).combine_chunks().to_batches()  # never empty
    binding = scorer.layout.bind(batch.schema.names)
    good, cols, errors = scorer.score(batch_chunk(batch, batch.schema.names, binding, 0))
    return _frame(batch, binding, scorer.columns, good, cols, errors)


def _frame(
    batch: Any,
    binding: Binding,
    columns: dict[str, np.dtype[Any]],
    good: list[int],
    cols: dict[str, np.ndarray],
    errors: list[dict[str, Any]],
) -> pd.DataFrame:
    """The scored rows' outputs and the others' errors, back in the rows' places; outputs null where not scored."""
    import pandas as pd
    import pyarrow as pa

    n = batch.num_rows
    out: dict[str, Any] = {}
    if binding.id_index is not None:  # Arrow arrays of one chunk each: what Spark's serializer takes
        out[ID] = pd.Series(pd.arrays.ArrowExtensionArray(batch.column(binding.id_index)))
    missing = np.ones(n, dtype=bool)
    missing[good] = False
    for name, dtype in columns.items():
        emitted = np.dtype(_EMITTED.get(f"{dtype.kind}{dtype.itemsize}", dtype))
        values = np.full(n, None, dtype=object) if emitted == np.object_ else np.zeros(n, dtype=emitted)
        if good:
            values[good] = cols[name]
        out[name] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, mask=missing)))
    reasons: list[str | None] = [None] * n
    for e in errors:
        reasons[e["row"] - 1] = e["error"]
    out[ERROR] = pd.Series(reasons, dtype=object)
    return pd.DataFrame(out)


def _schema(df: DataFrame, binding: Binding, columns: dict[str, np.dtype[Any]]) -> StructType:
    from pyspark.sql.types import StringType, StructField, StructType

    fields = [] if binding.id_index is None else [df.schema[binding.id_index]]
    fields += [StructField(name, _spark_type(name, dtype), True) for name, dtype in columns.items()]
    fields.append(StructField(ERROR, StringType(), True))
    return StructType(fields)


def _spark_type(name: str, dtype: np.dtype[Any]) -> DataType:
    """The Spark type of an output column: unsigned integers and halves widened to a type Spark has."""
    from pyspark.sql import types as t

    emitted = np.dtype(_EMITTED.get(f"{dtype.kind}{dtype.itemsize}", dtype))
    spark: dict[str, DataType] = {
        "f4": t.FloatType(),
        "f8": t.DoubleType(),
        "i1": t.ByteType(),
        "i2": t.ShortType(),
        "i4": t.IntegerType(),
        "i8": t.LongType(),
        "b1": t.BooleanType(),
        "O8": t.StringType(),
    }
    found = spark.get(f"{emitted.kind}{emitted.itemsize}")
    if found is None:
        raise InvalidInput(f"output column {name!r} is {dtype}, which Spark has no type for")
    return found
