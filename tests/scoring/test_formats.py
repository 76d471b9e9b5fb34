"""CSV reading and writing: the numpy fast path and the csv-module path agree, and bad rows are isolated."""

from __future__ import annotations

import csv
import io

import numpy as np

from modelfn.scoring.formats import Chunk, CsvWriter, read_csv


def chunks(text: str, rows: int = 1000) -> list[Chunk]:
    return list(read_csv(io.BytesIO(text.encode()), rows))


def test_clean_chunk_is_parsed_in_one_numpy_call() -> None:
    (chunk,) = chunks("id,a,b\nx,1.5,2\ny,3,4e-1\n")
    assert chunk.matrix is not None and chunk.matrix.dtype == np.float32
    np.testing.assert_array_equal(chunk.matrix, np.array([[1.5, 2], [3, 0.4]], dtype=np.float32))
    assert chunk.ids == ["x", "y"] and chunk.rows == [1, 2]


def test_a_bad_row_sends_its_chunk_through_the_csv_module() -> None:
    text = "a,id,b\n1,x,2\n1,y,2,9\n1,z\n5,w,6\n"
    (chunk,) = chunks(text)
    assert chunk.matrix is None
    assert chunk.ids == ["x", "y", "z", "w"]
    assert chunk.features[0] == ["1", "2"] and chunk.features[3] == ["5", "6"]
    assert "expected 3 fields" in str(chunk.features[1]) and "expected 3 fields" in str(chunk.features[2])


def test_quoted_ids_and_chunk_boundaries() -> None:
    text = 'id,a\n"a,1",1\n"b""2",2\nc,3\n\nd,4\n'
    parsed = chunks(text, rows=2)
    assert [c.ids for c in parsed] == [["a,1", 'b"2'], ["c"], ["d"]]
    assert [c.rows for c in parsed] == [[1, 2], [3], [4]]  # the blank line is not a row
    assert parsed[1].matrix is not None


def test_writer_round_trips_float32_and_quotes_ids_that_need_it() -> None:
    sink = io.BytesIO()
    values = np.array([0.1, 1 / 3, 1e-8], dtype=np.float32)
    labels = np.array([1, 2, 3], dtype=np.int64)
    writer = CsvWriter(sink, True, ["label", "p"])
    writer.write(["plain", "with,comma", 'q"uote'], {"label": labels, "p": values})
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode())))
    assert rows[0] == ["id", "label", "p"]
    assert [r[0] for r in rows[1:]] == ["plain", "with,comma", 'q"uote']
    assert [int(r[1]) for r in rows[1:]] == [1, 2, 3]
    np.testing.assert_array_equal(np.array([r[2] for r in rows[1:]], dtype=np.float32), values)
    fast = io.BytesIO()
    CsvWriter(fast, False, ["p"]).write([None] * 3, {"p": values})
    text = fast.getvalue().decode().splitlines()
    np.testing.assert_array_equal(np.array(text[1:], dtype=np.float32), values)
