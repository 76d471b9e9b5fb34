"""The outputs: valid files of their format also with no rows, the results complete before the errors file
appears, and every row that fails logged with its reason, a bounded number of lines per file."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelfn.model.loaded import LoadedModel
from modelfn.scoring import score_object
from modelfn.scoring.report import LOGGED_ROWS
from modelfn.store import open_store

from .conftest import ScoreFile

Load = Callable[[str], LoadedModel]
RESULT_COLUMNS = ["id", "label", "probabilities_0", "probabilities_1", "probabilities_2"]


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        parquet(pa.table({"id": pa.array([], pa.string()), **{c: pa.array([], pa.float64()) for c in "abcd"}})),
        parquet(pa.table({"id": ["x"], "a": [None], "b": [1.0], "c": [1.0], "d": [1.0]})),  # no row scored
    ],
    ids=["no rows", "no row scored"],
)
def test_parquet_with_no_rows_out_is_a_valid_file_with_the_output_schema(
    data: bytes, load: Load, score: ScoreFile
) -> None:
    result = score(load("iris"), "empty.parquet", data)
    assert result.stats.scored == 0
    table = pq.read_table(io.BytesIO(result.output))
    assert table.num_rows == 0
    assert table.schema.names == RESULT_COLUMNS
    assert [str(t) for t in table.schema.types] == ["string", "int64", "float", "float", "float"]


def test_csv_and_jsonl_with_no_rows(load: Load, score: ScoreFile) -> None:
    header_only = score(load("iris"), "empty.csv", b"id,a,b,c,d\n")
    assert header_only.output == b"id,label,probabilities_0,probabilities_1,probabilities_2\n"
    assert header_only.errors == []
    nothing = score(load("iris"), "nothing.csv", b"")
    assert nothing.output == b"label,probabilities_0,probabilities_1,probabilities_2\n"
    lines = score(load("iris"), "empty.jsonl", b"\n\n")
    assert (lines.output, lines.stats.rows) == (b"", 0)


def test_results_are_complete_before_the_errors_file_appears(
    load: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load("iris")
    committed: list[str] = []
    replace = os.replace

    def spy(src: str, dest: str) -> None:
        committed.append(Path(dest).name)
        replace(src, dest)

    monkeypatch.setattr(os, "replace", spy)  # how the folder store makes an object appear
    (tmp_path / "in.csv").write_text("id,a,b,c,d\nx,1,2,3,4\ny,1,2\n")
    store = open_store(str(tmp_path))
    score_object(model, store, "in.csv", store, "out.csv")
    assert committed == ["out.csv", "out.csv.errors.jsonl"]


def test_failed_rows_are_logged_with_their_reason_bounded_per_file(
    load: Load, score: ScoreFile, caplog: pytest.LogCaptureFixture
) -> None:
    bad = LOGGED_ROWS + 50
    rows = [f"r{i},5.1,{'x' if i % 2 else '3.5'},1.4,0.2" for i in range(2 * bad)]
    with caplog.at_level("WARNING", logger="modelfn"):
        result = score(load("iris"), "many.csv", ("id,a,b,c,d\n" + "\n".join(rows) + "\n").encode(), chunk_rows=64)
    assert result.stats.errors == bad
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelfn"]
    assert len(lines) == LOGGED_ROWS + 1
    first = lines[0]
    assert first == {
        "event": "row_not_scored",
        "model": "iris",
        "version": 1,
        "input": result.stats.input,
        "row": 2,
        "reason": "column 'b': expected FP32 values, got 'x' (not a number)",
    }
    assert [line["row"] for line in lines[:LOGGED_ROWS]] == [2 * (i + 1) for i in range(LOGGED_ROWS)]
    assert lines[-1] == {
        "event": "rows_not_scored",
        "model": "iris",
        "version": 1,
        "input": result.stats.input,
        "rows": bad,
        "not_logged": bad - LOGGED_ROWS,
    }
