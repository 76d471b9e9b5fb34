"""CSV reading and writing: the numpy fast path and the csv-module path agree, records (not lines) are rows also
across chunks, and what real files bring (a byte-order mark, quoted line breaks, bytes that are not UTF-8, no
header at all) is either scored or refused clearly, never misread."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np
import pytest

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.scoring.csvfile import read_csv
from modelfn.scoring.layout import Layout
from modelfn.scoring.table import Chunk
from modelfn.scoring.values import Parsed, Rows
from modelfn.scoring.writers import CsvWriter

from .conftest import ScoreFile

Load = Callable[[str], LoadedModel]
HEADER = "id,sepal_length,sepal_width,petal_length,petal_width\n"


def chunks(model: LoadedModel, text: str | bytes, rows: int = 1000) -> list[Chunk]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_csv(io.BytesIO(data), Layout.of(model), rows).chunks)


def test_clean_chunk_is_parsed_in_one_numpy_call(load: Load) -> None:
    (chunk,) = chunks(load("iris"), "id,a,b,c,d\nx,1.5,2,3,4\ny,3,4e-1,5,6\n")
    values = chunk.inputs["float_input"]
    assert isinstance(values, Parsed) and values.data.dtype == np.float64
    np.testing.assert_array_equal(values.data, [[1.5, 2, 3, 4], [3, 0.4, 5, 6]])
    assert chunk.ids == ["x", "y"] and chunk.rows == [1, 2] and not chunk.failed


def test_a_bad_row_sends_its_chunk_through_the_csv_module(load: Load) -> None:
    text = "a,id,b,c,d\n1,x,2,3,4\n1,y,2,3,4,9\n1,z\n5,w,6,7,8\n"
    (chunk,) = chunks(load("iris"), text)
    values = chunk.inputs["float_input"]
    assert isinstance(values, Rows) and values.text
    assert chunk.ids == ["x", "y", "z", "w"]
    assert values.rows[0] == ("1", "2", "3", "4") and values.rows[3] == ("5", "6", "7", "8")
    assert chunk.failed == {
        1: "expected 5 fields as in the header, got 6",
        2: "expected 5 fields as in the header, got 2",
    }


def test_both_paths_read_the_same_numbers(load: Load, score: ScoreFile) -> None:
    """The same rows score identically whether their chunk is clean (numpy's reader) or has a bad row (the csv
    module, then numpy's reader on the good rows, then value by value)."""
    model = load("iris")
    rows = [f"r{i},{5 + i / 7:.6f},{3 - i / 11:.7g},{1e-3 * i:.3e}, {0.25 * i} " for i in range(40)]
    clean = score(model, "clean.csv", (HEADER + "\n".join(rows) + "\n").encode())
    dirty = score(model, "dirty.csv", (HEADER + "\n".join(rows) + "\nbad,1,2,x,4\n").encode())
    assert clean.stats.scored == dirty.stats.scored == 40
    assert dirty.output == clean.output
    (error,) = dirty.errors
    assert error == {
        "row": 41,
        "id": "bad",
        "error": "column 'petal_length': expected FP32 values, got 'x' (not a number)",
    }


def test_a_byte_order_mark_does_not_hide_the_id_column(load: Load, score: ScoreFile) -> None:
    result = score(
        load("iris"), "bom.csv", b"\xef\xbb\xbf" + (HEADER + "a,5.1,3.5,1.4,0.2\nb,6.7,3,5.2,2.3\n").encode()
    )
    assert (result.stats.scored, result.stats.errors) == (2, 0)
    header, rows = result.csv()
    assert header[0] == "id" and [r[0] for r in rows] == ["a", "b"]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_quoted_line_breaks_are_one_row_also_across_chunks(chunk_rows: int, load: Load, score: ScoreFile) -> None:
    ids = ["one\nline break", 'two\r\nbreaks\n"quoted"', "plain", "x,y", "last\n"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER.strip().split(","))
    for i, rid in enumerate(ids):
        writer.writerow([rid, 5 + i / 10, "3.5", "1.4", "0.2" if i != 2 else "oops"])
    result = score(load("iris"), "quoted.csv", buf.getvalue().encode(), chunk_rows=chunk_rows)
    assert (result.stats.rows, result.stats.scored, result.stats.errors) == (5, 4, 1)
    _, rows = result.csv()
    assert [r[0] for r in rows] == [ids[0], ids[1], ids[3], ids[4]]
    assert result.errors == [
        {"row": 3, "id": "plain", "error": "column 'petal_width': expected FP32 values, got 'oops' (not a number)"}
    ]


def test_a_quote_never_closed_fails_the_file(load: Load, score: ScoreFile) -> None:
    data = HEADER + 'a,5.1,3.5,1.4,0.2\n"b,5.1,3.5,1.4,0.2\nc,5.1,3.5,1.4,0.2\n'
    with pytest.raises(InvalidInput) as e:
        score(load("iris"), "open.csv", data.encode(), chunk_rows=2)
    assert "row 2: a quoted field is not closed before the end of the file" in e.value.message


def test_a_runaway_quote_stops_at_the_field_size_limit(load: Load) -> None:
    """Memory stays bounded: the csv module gives up past its field size limit, and the file with it."""
    limit = csv.field_size_limit()
    row = "a,5.1,3.5,1.4,0.2\n"
    data = HEADER + '"b' + row * (2 * limit // len(row))
    with pytest.raises(InvalidInput) as e:
        chunks(load("iris"), data, rows=100)
    assert "row 1: a quoted field is not closed before line" in e.value.message
    assert "field larger than field limit" in e.value.message


def test_a_malformed_quote_is_that_rows_error(load: Load, score: ScoreFile) -> None:
    result = score(load("iris"), "q.csv", (HEADER + 'a,"5.1"x,3.5,1.4,0.2\nb,5.1,3.5,1.4,0.2\n').encode())
    assert (result.stats.scored, result.stats.errors) == (1, 1)
    assert result.errors[0]["row"] == 1 and "not valid CSV" in result.errors[0]["error"]


def test_bytes_that_are_not_utf8_are_that_rows_error(load: Load, score: ScoreFile) -> None:
    data = HEADER.encode() + b"a,5.1,3.5,1.4,0.2\nb\xff,5.1,3.5,1.4,0.2\nc,5.1,3.5\xe9,1.4,0.2\nd,5.1,3.5,1.4,0.2\n"
    result = score(load("iris"), "latin1.csv", data)
    assert (result.stats.rows, result.stats.scored, result.stats.errors) == (4, 2, 2)
    assert result.errors == [
        {"row": 2, "id": "b\ufffd", "error": "not UTF-8 text: byte 0xff in field 1"},
        {"row": 3, "id": "c", "error": "not UTF-8 text: byte 0xe9 in field 3"},
    ]
    _, rows = result.csv()
    assert [r[0] for r in rows] == ["a", "d"]


def test_a_header_that_is_not_utf8_fails_the_file(load: Load, score: ScoreFile) -> None:
    with pytest.raises(InvalidInput, match="header line is not UTF-8"):
        score(load("iris"), "h.csv", b"id,s\xe9pal,b,c,d\na,1,2,3,4\n")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("iris-named", "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"),  # names known: they are not in the first line
        ("iris", "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"),  # by position: as many columns as the model takes
        ("multi", "1,2,3\n4,5,6\n"),
    ],
)
def test_a_file_without_header_is_refused(name: str, data: str, load: Load, score: ScoreFile) -> None:
    with pytest.raises(InvalidInput) as e:
        score(load(name), "headerless.csv", data.encode())
    assert "is all numbers: it looks like data, but a CSV file needs a header line" in e.value.message


def test_blank_lines_and_crlf(load: Load, score: ScoreFile) -> None:
    data = ("\r\n" + HEADER.replace("\n", "\r\n") + "a,5.1,3.5,1.4,0.2\r\n\r\n   \r\nb,6.7,3,5.2,2.3\r\n").encode()
    result = score(load("iris"), "crlf.csv", data)
    assert (result.stats.rows, result.stats.scored) == (2, 2)
    _, rows = result.csv()
    assert [r[0] for r in rows] == ["a", "b"]


def test_writer_round_trips_float32_and_quotes_ids_that_need_it() -> None:
    sink = io.BytesIO()
    values = np.array([0.1, 1 / 3, 1e-8], dtype=np.float32)
    labels = np.array([1, 2, 3], dtype=np.int64)
    writer = CsvWriter(sink, True, {"label": labels.dtype, "p": values.dtype})
    writer.write(["plain", "with,comma", 'q"uote'], {"label": labels, "p": values})
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode())))
    assert rows[0] == ["id", "label", "p"]
    assert [r[0] for r in rows[1:]] == ["plain", "with,comma", 'q"uote']
    assert [int(r[1]) for r in rows[1:]] == [1, 2, 3]
    np.testing.assert_array_equal(np.array([r[2] for r in rows[1:]], dtype=np.float32), values)
    fast = io.BytesIO()
    CsvWriter(fast, False, {"p": values.dtype}).write([None] * 3, {"p": values})
    text = fast.getvalue().decode().splitlines()
    np.testing.assert_array_equal(np.array(text[1:], dtype=np.float32), values)
