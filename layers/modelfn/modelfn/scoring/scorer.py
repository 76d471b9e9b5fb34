"""Score a tabular object chunk by chunk: parse, validate, run, write. Rows that cannot be scored go to the
errors file with their row number (1-based, header excluded), id and reason; the rest to the results."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelfn import jsonio
from modelfn.errors import InvalidInput, ModelfnError
from modelfn.model.loaded import LoadedModel
from modelfn.scoring.formats import READERS, WRITERS, Chunk, format_of
from modelfn.store.base import ObjectStore

CHUNK_ROWS = 8192


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


def output_columns(model: LoadedModel) -> list[str]:
    """[N] outputs are one column named after them; [N, K] outputs are <name>_0 .. <name>_{K-1}."""
    cols: list[str] = []
    for spec in model.outputs:
        if len(spec.shape) == 1:
            cols.append(spec.name)
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            cols.extend(f"{spec.name}_{k}" for k in range(spec.shape[1]))
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


class RowScorer:
    """Scores chunks for a model with a single 2-D input [N, F]."""

    def __init__(self, model: LoadedModel) -> None:
        if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2:
            raise InvalidInput(
                f"batch scoring feeds one 2-D input; model {model.name!r} has {[s.describe() for s in model.inputs]}"
            )
        self.model = model
        self.spec = model.inputs[0]
        self.width = self.spec.shape[1]
        self.columns = output_columns(model)

    def _parse_one(self, values: Any) -> np.ndarray:
        if isinstance(values, Exception):
            raise values
        if self.width != -1 and len(values) != self.width:
            raise InvalidInput(f"expected {self.width} features, got {len(values)}")
        try:
            return np.asarray(values, dtype=self.spec.dtype)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"features are not all {self.spec.datatype} numbers: {e}") from e

    def score(self, chunk: Chunk) -> tuple[list[int], dict[str, np.ndarray], list[dict[str, Any]]]:
        """Returns the indexes of scored rows, their output columns, and error records for the others."""
        x, good, errors = self._parse(chunk)
        if not good:
            return [], {}, errors
        try:
            results = self.model.predict({self.spec.name: x})
        except ModelfnError:
            return self._isolate(chunk, good, x, errors)
        return good, _flatten(self.model, results), errors

    def _fits(self, x: np.ndarray) -> bool:
        return x.ndim == 2 and (self.width == -1 or x.shape[1] == self.width)

    def _parse(self, chunk: Chunk) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
        """The chunk as a matrix: at once when the reader parsed it, or when every row converts in one numpy call
        (C speed); else row by row, so that each bad row becomes an error of its own."""
        everyone = list(range(len(chunk.rows)))
        features: list[Any] = chunk.features
        if chunk.matrix is not None:
            if self._fits(chunk.matrix):
                return chunk.matrix.astype(self.spec.dtype, copy=False), everyone, []
            features = [InvalidInput(f"expected {self.width} features, got {chunk.matrix.shape[1]}")] * len(everyone)
        elif features and not any(isinstance(f, Exception) for f in features):
            try:
                x = np.asarray(features, dtype=self.spec.dtype)
                if self._fits(x):
                    return x, everyone, []
            except (ValueError, TypeError):
                pass
        parsed: list[np.ndarray] = []
        good: list[int] = []
        errors: list[dict[str, Any]] = []
        for i, values in enumerate(features):
            try:
                parsed.append(self._parse_one(values))
                good.append(i)
            except ModelfnError as e:
                errors.append(self._error(chunk, i, e.message))
        x = np.stack(parsed) if parsed else np.empty((0, max(self.width, 0)), dtype=self.spec.dtype)
        return x, good, errors

    def _isolate(
        self, chunk: Chunk, good: list[int], x: np.ndarray, errors: list[dict[str, Any]]
    ) -> tuple[list[int], dict[str, np.ndarray], list[dict[str, Any]]]:
        """The chunk failed as a whole: run row by row so only the rows at fault become errors."""
        kept: list[int] = []
        parts: list[dict[str, np.ndarray]] = []
        for j, i in enumerate(good):
            try:
                parts.append(_flatten(self.model, self.model.predict({self.spec.name: x[j : j + 1]})))
                kept.append(i)
            except ModelfnError as e:
                errors.append(self._error(chunk, i, e.message))
        if not kept:
            return [], {}, errors
        cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
        return kept, cols, errors

    @staticmethod
    def _error(chunk: Chunk, i: int, message: str) -> dict[str, Any]:
        record: dict[str, Any] = {"row": chunk.rows[i]}
        if chunk.has_id and chunk.ids[i] is not None:
            record["id"] = chunk.ids[i]
        record["error"] = message
        return record


def score_chunks(
    scorer: RowScorer, chunks: Iterable[Chunk]
) -> Iterator[tuple[Chunk, list[int], dict[str, np.ndarray], list[dict[str, Any]]]]:
    for chunk in chunks:
        yield (chunk, *scorer.score(chunk))


def score_object(
    model: LoadedModel,
    src: ObjectStore,
    src_key: str,
    dest: ObjectStore,
    dest_key: str,
    chunk_rows: int = CHUNK_ROWS,
) -> ScoreStats:
    """Stream src_key through the model into dest_key (same format) and dest_key + '.errors.jsonl'.

    Both outputs appear only if the whole file was processed: they are written as multipart uploads that are
    completed at the end and aborted on failure, so no half-written output object is ever visible."""
    started = time.perf_counter()
    ext = format_of(src_key)
    scorer = RowScorer(model)
    stats = ScoreStats(src.join(src_key), dest.join(dest_key), dest.join(dest_key + ".errors.jsonl"))
    with src.open_reader(src_key) as stream:
        chunks = READERS[ext](stream, chunk_rows)
        first = next(chunks, None)
        has_id = first.has_id if first is not None else False
        with dest.open_writer(dest_key) as out, dest.open_writer(dest_key + ".errors.jsonl") as err:
            writer = WRITERS[ext](out, has_id, scorer.columns)
            if first is not None:
                for chunk, good, cols, errors in score_chunks(scorer, _chain(first, chunks)):
                    stats.rows += len(chunk.rows)
                    if good:
                        writer.write([chunk.ids[i] for i in good], cols)
                        stats.scored += len(good)
                    if errors:
                        err.write(b"".join(jsonio.dumps(e) + b"\n" for e in errors))
                        stats.errors += len(errors)
            writer.close()
    stats.seconds = time.perf_counter() - started
    return stats


def _chain(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest
