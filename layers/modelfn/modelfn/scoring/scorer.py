"""Score a tabular object chunk by chunk: read, convert, run, write. Rows that cannot be scored go to the errors
file with their row number (1-based, header excluded), id and reason, and to the log; the rest to the results.
Every input row lands in exactly one of the two."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError
from modelfn.model.loaded import LoadedModel
from modelfn.scoring.formats import READERS, WRITERS, format_of
from modelfn.scoring.layout import Layout
from modelfn.scoring.pipeline import Drain, Prefetch
from modelfn.scoring.report import FailureLog
from modelfn.scoring.table import Chunk
from modelfn.scoring.values import tensor
from modelfn.scoring.writers import Sink, Writer
from modelfn.store.base import ObjectStore

CHUNK_ROWS = 8192
PIPELINE_DEPTH = 2
"""Chunks waiting between two stages of the pipeline, at most: enough to keep every stage busy."""
ERRORS_SUFFIX = ".errors.jsonl"


@dataclass
class ScoreStats:
    input: str = ""
    output: str = ""
    errors_output: str = ""
    rows: int = 0
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """What a handler or the CLI reports for one scored object."""
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def output_columns(model: LoadedModel) -> dict[str, np.dtype[Any]]:
    """[N] outputs are one column named after them; [N, K] outputs are <name>_0 .. <name>_{K-1}."""
    cols: dict[str, np.dtype[Any]] = {}
    for spec in model.outputs:
        if len(spec.shape) == 1:
            cols[spec.name] = spec.dtype
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            cols.update({f"{spec.name}_{k}": spec.dtype for k in range(spec.shape[1])})
        else:
            raise InvalidInput(f"output {spec.describe()} is not [N] or [N, K]: batch scoring cannot lay it out")
    return cols


def _flatten(model: LoadedModel, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for spec in model.outputs:
        arr = results[spec.name]
        if arr.ndim == 1:
            cols[spec.name] = arr
        else:
            for k in range(arr.shape[1]):
                cols[f"{spec.name}_{k}"] = arr[:, k]
    return cols


Scored = tuple[list[int], dict[str, np.ndarray], list[dict[str, Any]]]
"""The indexes of the rows scored, their output columns, and an error record for each other row."""


class RowScorer:
    """Scores chunks for a model: its inputs fed as `Layout` says, each row that cannot be scored isolated."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.layout = Layout.of(model)
        self.columns = output_columns(model)

    def score(self, chunk: Chunk) -> Scored:
        reasons = dict(chunk.failed)
        n = len(chunk.rows)
        live = np.array([i for i in range(n) if i not in reasons], dtype=np.intp) if reasons else np.arange(n)
        feed: dict[str, np.ndarray] = {}
        for f in self.layout.feeds:
            values = chunk.inputs[f.name]
            tail = (len(values.labels),) if f.tail else ()  # a [N, -1] input: as many as the file has
            feed[f.name], bad = tensor(f.spec, tail, values, live)
            for i, message in bad.items():
                reasons.setdefault(i, message)
        if len(reasons) > len(chunk.failed):
            keep = np.array([i not in reasons for i in live.tolist()], dtype=bool)
            live = live[keep]
            feed = {k: v[keep] for k, v in feed.items()}
        good = live.tolist()
        if not good:
            return [], {}, self._errors(chunk, reasons)
        try:
            cols = _flatten(self.model, self.model.predict(feed))
        except ModelfnError:
            good, cols = self._isolate(good, feed, reasons)
        return good, cols, self._errors(chunk, reasons)

    def _isolate(
        self, good: list[int], feed: dict[str, np.ndarray], reasons: dict[int, str]
    ) -> tuple[list[int], dict[str, np.ndarray]]:
        """The chunk failed as a whole: run row by row so only the rows at fault become errors."""
        kept: list[int] = []
        parts: list[dict[str, np.ndarray]] = []
        for j, i in enumerate(good):
            try:
                parts.append(_flatten(self.model, self.model.predict({k: v[j : j + 1] for k, v in feed.items()})))
                kept.append(i)
            except ModelfnError as e:
                reasons[i] = e.message
        if not kept:
            return [], {}
        return kept, {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}

    @staticmethod
    def _errors(chunk: Chunk, reasons: dict[int, str]) -> list[dict[str, Any]]:
        records = []
        for i in sorted(reasons):
            record: dict[str, Any] = {"row": chunk.rows[i]}
            if chunk.ids[i] is not None:
                record["id"] = chunk.ids[i]
            record["error"] = reasons[i]
            records.append(record)
        return records


def score_object(
    model: LoadedModel,
    src: ObjectStore,
    src_key: str,
    dest: ObjectStore,
    dest_key: str,
    chunk_rows: int = CHUNK_ROWS,
    depth: int = PIPELINE_DEPTH,
) -> ScoreStats:
    """Stream src_key through the model into dest_key (same format) and dest_key + '.errors.jsonl'.

    Three threads overlap (`pipeline`): one reads and parses the chunks ahead, this one converts and runs them,
    one formats and uploads the results; `depth` chunks at most wait between two of them, so memory is bounded
    whatever the file's size, and the rows keep their order. Both outputs appear only if the whole file was
    processed: they are written as multipart uploads that are completed at the end and aborted on failure (of
    any stage), so no half-written output object is ever visible. The results object is completed first, so an
    errors object never appears without its results. A file that cannot be scored as a whole (its format, a
    missing column, a quote never closed) raises InvalidInput."""
    started = time.perf_counter()
    ext = format_of(src_key)
    scorer = RowScorer(model)
    errors_key = dest_key + ERRORS_SUFFIX
    stats = ScoreStats(src.join(src_key), dest.join(dest_key), dest.join(errors_key))
    failures = FailureLog(model, stats.input)
    with src.open_reader(src_key) as stream:
        table = READERS[ext](stream, scorer.layout, chunk_rows)
        # `with` exits in reverse: `out` (opened last) is completed before `err`
        with dest.open_writer(errors_key) as err, dest.open_writer(dest_key) as out:
            writer = WRITERS[ext](out, table.has_id, scorer.columns)
            emit = _Emit(writer, err, failures)
            with Prefetch(table.chunks, depth) as chunks, Drain(emit, depth) as drain:
                for chunk in chunks:
                    good, cols, errors = scorer.score(chunk)
                    stats.rows += len(chunk.rows)
                    stats.scored += len(good)
                    stats.errors += len(errors)
                    drain.put(([chunk.ids[i] for i in good], cols, errors))
                drain.finish()
            writer.close()
    failures.close()
    stats.seconds = time.perf_counter() - started
    return stats


Results = tuple[list[Any], dict[str, np.ndarray], list[dict[str, Any]]]
"""A scored chunk as the writers take it: the ids of the rows scored, their output columns, the error records."""


class _Emit:
    """The last stage: a scored chunk's rows to the results, its errors to the errors file and the log."""

    def __init__(self, writer: Writer, err: Sink, failures: FailureLog) -> None:
        self.writer, self.err, self.failures = writer, err, failures

    def __call__(self, results: Results) -> None:
        ids, cols, errors = results
        if ids:
            self.writer.write(ids, cols)
        if errors:
            self.err.write(b"".join(jsonio.dumps(e) + b"\n" for e in errors))
            self.failures.add(errors)
