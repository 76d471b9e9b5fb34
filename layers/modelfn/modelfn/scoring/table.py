"""What a reader hands the scorer: a file's rows, a chunk at a time, with each model input's raw values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelfn.scoring.values import Values


@dataclass
class Chunk:
    rows: list[int]
    """1-based row numbers, header excluded."""
    ids: list[Any]
    """Each row's id; None where it has none."""
    inputs: dict[str, Values]
    """Per model input, its raw values for every row (what rows in `failed` hold there is never read)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Rows the reader could not take apart (a wrong field count, bytes that are not UTF-8, ...), by index."""


@dataclass
class Table:
    has_id: bool
    """Whether the file has an id column: the outputs then have one too."""
    chunks: Iterator[Chunk]
