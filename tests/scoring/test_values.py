"""Values the HTTP API refuses are row errors in batch too (null, true, "5.1", a fraction for an integer, a number
that overflows its type, nan and inf), each naming its column; the other rows of the chunk are scored."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelfn.model.loaded import LoadedModel

from .conftest import IRIS_FEATURES, Published, ScoreFile

Load = Callable[[str], LoadedModel]
GOOD = [5.1, 3.5, 1.4, 0.2]


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "got None"),
        (True, "got true"),
        ("3.5", "got strings"),
        (1e39, "overflows FP32"),
        ([3.5], "features: data is not a rectangular array"),
        ({"v": 1}, "got {'v': 1} (a dict)"),
    ],
)
@pytest.mark.parametrize("form", ["list", "features", "by key"])
def test_json_values_the_api_refuses_are_row_errors(
    form: str, value: Any, reason: str, load: Load, score: ScoreFile, published: Published
) -> None:
    def row(rid: str, values: list[Any]) -> Any:
        if form == "list":
            return values
        if form == "features":
            return {"id": rid, "features": values}
        return {"id": rid, **dict(zip(IRIS_FEATURES, values, strict=True))}

    model = load("iris-named" if form == "by key" else "iris")
    rows = [row("a", GOOD), row("bad", [5.1, value, 1.4, 0.2]), row("c", [6.7, 3, 5.2, 2.3])]
    result = score(model, "rows.jsonl", jsonl(rows))
    assert (result.stats.rows, result.stats.scored, result.stats.errors) == (3, 2, 1)
    (error,) = result.errors
    assert error["row"] == 2 and reason in error["error"], error
    if form != "list":
        assert error["id"] == "bad"
    if not isinstance(value, list | dict):
        label = "column 'sepal_width'" if form == "by key" else "feature 2"
        assert error["error"].startswith(f"{label}: expected FP32 values"), error
    expected = published.reference("iris", float_input=np.array([GOOD, [6.7, 3, 5.2, 2.3]], dtype=np.float32))
    assert [o["label"] for o in result.jsonl()] == expected["label"].tolist()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "got an empty field"),
        ("nan", "got 'nan' (not a number)"),
        ("-inf", "got '-inf' (not a number)"),
        ("1e999", "got '1e999' (overflows a double)"),
        ("1e39", "overflows FP32"),
        ("0x10", "(not a number)"),
        ("1_000", "(not a number)"),
        ("true", "(not a number)"),
    ],
)
def test_csv_text_that_is_not_a_finite_number_is_a_row_error(
    text: str, reason: str, load: Load, score: ScoreFile
) -> None:
    data = f"id,sepal_length,sepal_width,petal_length,petal_width\na,5.1,3.5,1.4,0.2\nbad,5.1,{text},1.4,0.2\n"
    result = score(load("iris"), "values.csv", data.encode())
    assert (result.stats.scored, result.stats.errors) == (1, 1)
    (error,) = result.errors
    assert error["id"] == "bad" and error["error"].startswith("column 'sepal_width': expected FP32 values")
    assert reason in error["error"], error


def test_integers_by_the_integer_rules(load: Load, score: ScoreFile) -> None:
    data = "id,x,w,k\na,1,1,3\nb,1,1,3.0\nc,1,1,2.5\nd,1,1,9223372036854775808\ne,1,1, -4 \n"
    result = score(load("multi"), "ints.csv", data.encode())
    assert [e["id"] for e in result.errors] == ["c", "d"]
    assert "not a whole number" in result.errors[0]["error"] and "column 'k'" in result.errors[0]["error"]
    assert "out of range" in result.errors[1]["error"]
    _, rows = result.csv()
    assert [(r[0], r[3]) for r in rows] == [("a", "3"), ("b", "3"), ("e", "-4")]


def test_parquet_nulls_and_wrong_types_are_row_errors(load: Load, score: ScoreFile) -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "x": pa.array([1.0, None, 3.0, 4.0], pa.float64()),
            "w": pa.array([1.0, 2.0, 3.0, None], pa.float32()),
            "k": pa.array([1, 2, None, 4], pa.int64()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result = score(load("multi"), "nulls.parquet", buf.getvalue())
    assert (result.stats.scored, result.stats.errors) == (1, 3)
    assert result.errors == [
        {"row": 2, "id": "b", "error": "column 'x' is null"},
        {"row": 3, "id": "c", "error": "column 'k' is null"},
        {"row": 4, "id": "d", "error": "column 'w' is null"},
    ]
    # a boolean column is not a number, for Parquet as for JSON
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0], "w": [True, False], "k": [1, 2]}), buf)
    flags = score(load("multi"), "bools.parquet", buf.getvalue())
    assert flags.stats.errors == 2 and "column 'w': expected FP32 values, got true" in flags.errors[0]["error"]


def test_jsonl_objects_by_position_keep_the_first_rows_columns(load: Load, score: ScoreFile) -> None:
    rows = [
        {"id": 1, "a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2},
        {"d": 0.2, "c": 1.4, "b": 3.5, "a": 5.1, "id": 2},  # the same row, keys in another order
        {"id": 3, "a": 5.1, "b": 3.5, "c": 1.4},
        {"id": 4, "a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2, "e": 1},
        "a string",
    ]
    result = score(load("iris"), "keys.jsonl", jsonl(rows))
    out = result.jsonl()
    assert [o["id"] for o in out] == [1, 2] and out[0] == out[1] | {"id": 1}
    assert [(e["row"], e.get("id")) for e in result.errors] == [(3, 3), (4, 4), (5, None)]
    assert "missing column(s) ['d']" in result.errors[0]["error"]
    assert "unexpected column(s) ['e']" in result.errors[1]["error"]
    assert "expected a JSON object or list, got str" in result.errors[2]["error"]


def test_jsonl_that_is_not_json_or_not_utf8(load: Load, score: ScoreFile) -> None:
    data = jsonl([GOOD]) + b"{not json\n" + b'{"id": "caf\xe9", "features": [5.1, 3.5, 1.4, 0.2]}\n' + jsonl([GOOD])
    result = score(load("iris"), "broken.jsonl", data)
    assert (result.stats.rows, result.stats.scored) == (4, 2)
    assert [e["row"] for e in result.errors] == [2, 3]
    assert all("not valid JSON" in e["error"] for e in result.errors)


def test_parquet_nan_and_infinity_are_row_errors(load: Load, score: ScoreFile) -> None:
    """A double can hold what CSV text and JSON cannot: nan and infinity are refused the same way."""
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "x": pa.array([1.0, float("nan"), 3.0, 4.0], pa.float64()),
            "w": pa.array([1.0, 2.0, float("-inf"), 4.0], pa.float32()),
            "k": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result = score(load("multi"), "nonfinite.parquet", buf.getvalue())
    assert (result.stats.scored, result.stats.errors) == (2, 2)
    assert result.errors == [
        {"row": 2, "id": "b", "error": "column 'x': expected FP32 values, got nan (not a finite number)"},
        {"row": 3, "id": "c", "error": "column 'w': expected FP32 values, got -inf (not a finite number)"},
    ]
