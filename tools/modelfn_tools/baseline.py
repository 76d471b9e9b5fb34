"""`modelfn publish --baseline DATA`: a reference data set (CSV, JSON Lines, Parquet or .npy) read as batch
scoring reads a file (the same readers, the same columns-to-inputs rules), then summarised per feature by
`modelfn.monitoring.baseline`, which the scheduled drift function shares.

Unlike scoring, a missing value (an empty CSV field, a JSON or Parquet null, NaN) is not a row error but a null of
its feature: a baseline measures null rates too. Any other value the model would refuse (text in a numeric column,
an integer out of range) refuses the baseline, naming its row and column: statistics over silently dropped or
converted values would be wrong."""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from modelfn.errors import InvalidInput, PublishError
from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import TensorSpec, coerce
from modelfn.monitoring.baseline import Baseline, compute
from modelfn.monitoring.features import Feature, column, features_of
from modelfn.scoring.formats import READERS, format_of
from modelfn.scoring.layout import Feed, Layout
from modelfn.scoring.table import Chunk
from modelfn.scoring.values import Arrays, Rows, Values, parse_text, tensor

CHUNK_ROWS = 10_000
_MISSING_TEXT = frozenset({"", "nan", "null", "na", "n/a"})


@dataclass
class BaselineData:
    """A baseline ready to store, and the feature names it found in the file's header (for the manifest, when the
    model's [N, K] input had none)."""

    baseline: Baseline
    names: list[str] | None = None
    features: list[Feature] = field(default_factory=list)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TEXT
    return isinstance(value, float | np.floating) and math.isnan(value)


def _raw(values: Values, i: int) -> Sequence[Any] | None:
    """Row i's values as the file holds them, where the reader kept them."""
    if isinstance(values, Rows):
        return values.rows[i]
    if isinstance(values, Arrays):
        return [c[i] for c in values.columns]
    return None


def _value(spec: TensorSpec, raw: Any, label: str, text: bool) -> Any:
    """One value as the model takes it (None: missing), or the error naming it."""
    if _missing(raw):
        return None
    return coerce(spec, parse_text(spec, raw, label) if text else raw, (), label).item()


class _Feed:
    """One input's values across the file, row by row as read; missing values as None."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.blocks: list[list[Any]] = []
        self.labels: Sequence[str] = ()

    def add(self, chunk: Chunk) -> None:
        values = chunk.inputs[self.feed.name]
        self.labels = values.labels
        spec, tail = self.feed.spec, ((len(values.labels),) if self.feed.tail else ())
        live = np.array([i for i in range(len(chunk.rows)) if i not in chunk.failed], dtype=np.intp)
        arr, bad = tensor(spec, tail, values, live)
        rows: list[Any] = [None] * len(chunk.rows)
        for i, row in zip(live.tolist(), arr.tolist(), strict=True):
            rows[i] = row
        for i in sorted({*chunk.failed, *bad}):
            rows[i] = self._row(spec, tail, values, i, chunk.rows[i], chunk.failed.get(i) or bad[i])
        self.blocks.append(rows)

    @staticmethod
    def _row(spec: TensorSpec, tail: tuple[int, ...], values: Values, i: int, row: int, reason: str) -> Any:
        raw = _raw(values, i)
        if raw is None or len(raw) != len(values.labels):
            raise PublishError(f"baseline row {row}: {reason}")
        text = isinstance(values, Rows) and values.text
        try:
            taken = [_value(spec, v, label, text) for v, label in zip(raw, values.labels, strict=True)]
        except InvalidInput as e:
            raise PublishError(f"baseline row {row}: {e.message}") from e
        return taken if tail else taken[0]

    def rows(self) -> list[Any]:
        return [r for block in self.blocks for r in block]


def _header_names(labels: Sequence[str]) -> list[str] | None:
    """The column names behind a reader's labels (`column 'x'`), or None where the file has none (lists)."""
    names = []
    for label in labels:
        if not label.startswith("column "):
            return None
        names.append(str(ast.literal_eval(label.removeprefix("column "))))
    return names


def _layout(name: str, inputs: list[TensorSpec], features: list[str] | None) -> Layout:
    """The batch layout of a model with this signature (Layout reads only the signature, never a session)."""
    model = LoadedModel(name=name, version=1, session=cast(Any, None), inputs=inputs, outputs=[], features=features)
    return Layout.of(model)


def _read_table(path: Path, layout: Layout) -> tuple[dict[str, list[Any]], dict[str, Sequence[str]]]:
    feeds = [_Feed(f) for f in layout.feeds]
    with path.open("rb") as stream:
        table = READERS[format_of(path.name)](stream, layout, CHUNK_ROWS)
        for chunk in table.chunks:
            for f in feeds:
                f.add(chunk)
    return {f.feed.name: f.rows() for f in feeds}, {f.feed.name: f.labels for f in feeds}


def _read_npy(path: Path, inputs: list[TensorSpec]) -> dict[str, list[Any]]:
    if len(inputs) != 1:
        raise PublishError(f"a .npy baseline holds one array: this model has {len(inputs)} inputs, use a table file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PublishError(f"{path} is not a .npy array file: {e}") from e
    spec = inputs[0]
    if arr.ndim != len(spec.shape) or (arr.ndim == 2 and spec.shape[1] not in (-1, arr.shape[1])):
        raise PublishError(
            f"{path} holds an array of shape {list(arr.shape)}; input {spec.describe()} takes rows of it"
        )
    return {spec.name: arr.tolist()}


def _matrix(inputs: list[TensorSpec]) -> bool:
    """A single [N, K] input (K not 1): the model whose features need names."""
    return len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1


def read_baseline(path: Path, name: str, inputs: list[TensorSpec], features: list[str] | None) -> BaselineData:
    """The baseline of `path` for a model with these inputs and feature names (`--features`, or None: the file's
    header names them, else they are numbered `<input>_<j>`). Its `version` is set when the version is claimed."""
    if not path.is_file():
        raise PublishError(f"baseline {path} does not exist")
    found = None
    try:
        if path.suffix.lower() == ".npy":
            columns = _read_npy(path, inputs)
        else:
            columns, labels = _read_table(path, _layout(name, inputs, features))
            found = _header_names(labels[inputs[0].name]) if features is None and _matrix(inputs) else None
        names = features or found
        if names is None and _matrix(inputs):
            rows = columns[inputs[0].name]
            width = len(rows[0]) if rows else max(inputs[0].shape[1], 0)
            names = [f"{inputs[0].name}_{j}" for j in range(width)]
        specs = features_of(inputs, names)
        baseline = compute(name, 1, specs, {f.name: column(f, columns[f.input]) for f in specs}, path.name)
    except InvalidInput as e:
        raise PublishError(f"baseline {path}: {e.message}") from e
    return BaselineData(baseline, found, specs)
