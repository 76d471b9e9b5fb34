"""Columns are matched to inputs by name where names are known: a reordered file, or one with extra columns, scores
exactly as the canonical one; pandas' default files (an index column; JSON records) score; a file missing a
needed column fails as a whole."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelfn.adapters.s3 import score_items
from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel

from .conftest import IRIS_FEATURES, Published, ScoreFile

Load = Callable[[str], LoadedModel]


def iris_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
    rows: np.ndarray = np.round(lo + rng.random((n, 4)) * (hi - lo), 2)
    return rows


def to_csv(frame: pd.DataFrame) -> bytes:
    return str(frame.to_csv(index=False)).encode()


def iris_frame(n: int, seed: int = 0) -> pd.DataFrame:
    x = iris_rows(n, seed)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], **{c: x[:, j] for j, c in enumerate(IRIS_FEATURES)}})


def test_iris_published_with_features_takes_its_columns_by_name(
    load: Load, score: ScoreFile, published: Published
) -> None:
    model = load("iris-named")
    assert model.features == IRIS_FEATURES
    frame = iris_frame(3000, seed=1)
    canonical = score(model, "canonical.csv", to_csv(frame))
    # shuffled columns, id in the middle, a text column and a numeric one the model does not take
    shuffled = frame[["petal_width", "sepal_width", "id", "sepal_length", "petal_length"]].assign(
        note="hello, world", extra=7.5
    )
    moved = score(model, "shuffled.csv", to_csv(shuffled), chunk_rows=700)

    assert (canonical.stats.scored, canonical.stats.errors) == (3000, 0)
    assert (moved.stats.scored, moved.stats.errors) == (3000, 0)
    assert moved.output == canonical.output
    header, rows = canonical.csv()
    assert header == ["id", "label", "probabilities_0", "probabilities_1", "probabilities_2"]
    x = frame[IRIS_FEATURES].to_numpy(dtype=np.float32)
    expected = published.reference("iris-named", float_input=x)
    np.testing.assert_array_equal(np.array([r[1] for r in rows], dtype=np.int64), expected["label"])


def test_the_same_file_reordered_scores_wrong_without_names(load: Load, score: ScoreFile) -> None:
    """Why names matter: without them the columns are taken by position, as the contract says."""
    frame = iris_frame(200, seed=2)
    shuffled = frame[["id", "petal_width", "sepal_width", "sepal_length", "petal_length"]]
    named = score(load("iris-named"), "a.csv", to_csv(shuffled))
    positional = score(load("iris"), "b.csv", to_csv(shuffled))
    assert named.stats.scored == positional.stats.scored == 200
    assert named.output != positional.output


def test_inputs_of_one_column_each_take_the_column_of_their_name(
    load: Load, score: ScoreFile, published: Published
) -> None:
    model = load("multi")
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame(
        {
            "id": range(n),
            "x": np.round(rng.random(n) * 10, 3),
            "w": np.round(rng.random(n) * 10, 3),
            "k": rng.integers(-100, 100, n),
        }
    )
    canonical = score(model, "canonical.csv", to_csv(frame))
    reordered = score(model, "reordered.csv", to_csv(frame.assign(extra="x")[["k", "extra", "w", "id", "x"]]))
    assert (canonical.stats.scored, reordered.stats.scored) == (n, n)
    assert reordered.output == canonical.output
    header, rows = canonical.csv()
    assert header == ["id", "y", "z_0", "kk"]
    expected = published.reference(
        "multi",
        x=frame["x"].to_numpy(np.float32),
        w=frame["w"].to_numpy(np.float32)[:, None],
        k=frame["k"].to_numpy(np.int64),
    )
    np.testing.assert_array_equal(np.array([r[1] for r in rows], dtype=np.float32), expected["y"])
    np.testing.assert_array_equal(np.array([r[2] for r in rows], dtype=np.float32), expected["z"][:, 0])

    # JSON Lines objects are matched by key, whatever their order
    lines = frame[["w", "k", "x", "id"]].to_json(orient="records", lines=True)
    by_key = score(model, "rows.jsonl", lines.encode())
    assert (by_key.stats.scored, by_key.stats.errors) == (n, 0)
    out = by_key.jsonl()
    np.testing.assert_array_equal(np.array([o["y"] for o in out], dtype=np.float32), expected["y"])
    assert [o["id"] for o in out] == list(range(n))


def test_integers_come_through_exactly(load: Load, score: ScoreFile) -> None:
    big = 2**53 + 1  # a double cannot hold it
    result = score(load("multi"), "big.csv", f"x,w,k\n1,1,{big}\n1,1,-{big}\n".encode())
    _, rows = result.csv()
    assert [int(r[2]) for r in rows] == [big, -big]


@pytest.mark.parametrize("name", ["iris", "iris-named"])
def test_pandas_default_files_score(name: str, load: Load, score: ScoreFile, published: Published) -> None:
    """`df.to_csv(path)` writes the index as an unnamed first column; `to_json(orient="records", lines=True)`
    writes one object per row, its keys the column names."""
    model = load(name)
    x = iris_rows(300, seed=4)
    frame = pd.DataFrame(x, columns=IRIS_FEATURES)
    buf = io.StringIO()
    frame.to_csv(buf)
    assert buf.getvalue().startswith(",sepal_length")
    with_index = score(model, "pandas.csv", buf.getvalue().encode())
    records = score(model, "pandas.jsonl", frame.to_json(orient="records", lines=True).encode())

    expected = published.reference(name, float_input=x.astype(np.float32))
    assert (with_index.stats.scored, with_index.stats.errors) == (300, 0)
    header, rows = with_index.csv()
    assert header == ["label", "probabilities_0", "probabilities_1", "probabilities_2"]
    np.testing.assert_array_equal(np.array([r[0] for r in rows], dtype=np.int64), expected["label"])
    assert (records.stats.scored, records.stats.errors) == (300, 0)
    np.testing.assert_array_equal(np.array([o["label"] for o in records.jsonl()]), expected["label"])


def test_pandas_default_column_names_are_a_header(load: Load, score: ScoreFile) -> None:
    """pd.DataFrame(array).to_csv(index=False) names the columns 0..K-1: a header, not a row of data."""
    x = iris_rows(5)
    result = score(load("iris"), "numbered.csv", pd.DataFrame(x).to_csv(index=False).encode())
    assert (result.stats.rows, result.stats.scored) == (5, 5)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "iris-named",
            b"id,sepal_length,sepal_width,petal_length\nr1,5.1,3.5,1.4\n",
            "missing column(s) ['petal_width']",
        ),
        ("multi", b"x,w\n1,2\n", "missing column(s) ['k']"),
        ("iris-named", b"sepal_length,sepal_width,petal_length,petal_width,sepal_width\n1,2,3,4,5\n", "more than once"),
        ("iris", b"id,a,b,c\nr1,1,2,3\n", "has 3 feature column(s) ['a', 'b', 'c']"),
    ],
)
def test_a_file_without_the_columns_it_needs_fails_as_a_whole(
    name: str, data: bytes, message: str, load: Load, score: ScoreFile
) -> None:
    with pytest.raises(InvalidInput) as e:
        score(load(name), "missing.csv", data)
    assert message in e.value.message
    assert e.value.status == 400


def test_parquet_columns_by_name_and_pandas_index(load: Load, score: ScoreFile, published: Published) -> None:
    x = iris_rows(50, seed=5)
    frame = pd.DataFrame(x, columns=IRIS_FEATURES, index=[f"i{i}" for i in range(50)])  # stored as __index_level_0__
    shuffled = frame[["petal_length", "sepal_length", "petal_width", "sepal_width"]]
    buf = io.BytesIO()
    shuffled.to_parquet(buf)
    expected = published.reference("iris", float_input=x.astype(np.float32))
    named = score(load("iris-named"), "rows.parquet", buf.getvalue())
    assert (named.stats.scored, named.stats.errors) == (50, 0)
    out = pd.read_parquet(io.BytesIO(named.output))
    np.testing.assert_array_equal(out["label"].to_numpy(), expected["label"])
    # by position, pandas' index column is not a feature
    buf = io.BytesIO()
    frame.to_parquet(buf)
    positional = score(load("iris"), "rows2.parquet", buf.getvalue())
    np.testing.assert_array_equal(pd.read_parquet(io.BytesIO(positional.output))["label"].to_numpy(), expected["label"])


def test_a_model_whose_inputs_are_not_columns_is_refused(load: Load, score: ScoreFile) -> None:
    with pytest.raises(InvalidInput) as e:
        score(load("ranker"), "rows.csv", b"id,a\n1,2\n")
    assert "batch scoring feeds one [N, K] input, or [N] and [N, 1] inputs" in e.value.message
    assert "dense FP32[-1, 4]" in e.value.message


def test_step_functions_items_follow_the_same_rules(load: Load, published: Published) -> None:
    items: list[Any] = [
        {"k": "3", "note": "ignored", "w": "1.5", "x": "2", "id": "a"},
        {"x": "2", "w": "1.5", "id": "b"},  # no k
        {"x": "2", "w": "n/a", "k": "3", "id": "c"},
        {"x": "1e39", "w": "1", "k": "1", "id": "d"},
    ]
    answer = score_items(load("multi"), {"Items": items, "BatchInput": {"bucket": "in", "key": "big.csv"}})
    expected = published.reference(
        "multi", x=np.array([2], np.float32), w=np.array([[1.5]], np.float32), k=np.array([3], np.int64)
    )
    assert answer["scored"] == [{"id": "a", "y": float(expected["y"][0]), "z_0": float(expected["z"][0, 0]), "kk": 3}]
    assert [(e["item"], e["id"]) for e in answer["errors"]] == [(2, "b"), (3, "c"), (4, "d")]
    assert answer["errors"][0]["error"] == "missing column(s) ['k']"
    assert answer["errors"][1]["error"] == "column 'w': expected FP32 values, got 'n/a' (not a number)"
    assert "column 'x'" in answer["errors"][2]["error"] and "overflows FP32" in answer["errors"][2]["error"]
