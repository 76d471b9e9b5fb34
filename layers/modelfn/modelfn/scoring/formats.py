"""The file formats batch scoring reads and writes, by extension: a reader turns an input stream into a `Table`
(chunks of rows, each input's raw values), a writer turns scored chunks into the output object's bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.scoring.csvfile import read_csv
from modelfn.scoring.layout import Layout
from modelfn.scoring.parquet import ParquetWriter, read_parquet
from modelfn.scoring.records import read_jsonl
from modelfn.scoring.table import Table
from modelfn.scoring.writers import CsvWriter, JsonlWriter, Sink, Writer

FORMATS = (".csv", ".jsonl", ".parquet")
Reader = Callable[[BinaryIO, Layout, int], Table]
WriterFactory = Callable[[Sink, bool, dict[str, np.dtype[Any]]], Writer]


def format_of(key: str) -> str:
    for ext in FORMATS:
        if key.lower().endswith(ext):
            return ext
    raise InvalidInput(f"{key}: unsupported file type; batch scoring reads {', '.join(FORMATS)}")


READERS: dict[str, Reader] = {".csv": read_csv, ".jsonl": read_jsonl, ".parquet": read_parquet}
WRITERS: dict[str, WriterFactory] = {".csv": CsvWriter, ".jsonl": JsonlWriter, ".parquet": ParquetWriter}
