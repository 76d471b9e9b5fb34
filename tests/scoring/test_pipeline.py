"""The scoring pipeline: reading, running and writing overlap in threads, yet the rows keep their order, every row
lands in exactly one of the outputs, no more than a fixed number of chunks is ever read ahead, and a failure in
any stage, mid-file, leaves no output object and no multipart upload behind (S3 on moto's server)."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import numpy as np
import pytest

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel
from modelfn.scoring import score_object
from modelfn.scoring.pipeline import Drain, Prefetch
from modelfn.store import open_store
from modelfn.store.s3 import MultipartWriter

from .conftest import Published

Load = Callable[[str], LoadedModel]
HEADER = "id,sepal_length,sepal_width,petal_length,petal_width\n"


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("modelfn-prefetch", "modelfn-drain")]


# ---- the stages ------------------------------------------------------------------------------------------------


def test_prefetch_keeps_order_and_reads_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    got: list[int] = []
    with Prefetch(source(), depth=3) as items:
        for i in items:
            time.sleep(0.002)  # a slow consumer: the reader would run far ahead if nothing bounded it
            # 3 queued, and one more produced and waiting for room
            assert len(produced) <= len(got) + 1 + 3 + 1
            got.append(i)
    assert got == list(range(50))


def test_prefetch_raises_the_sources_error_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise InvalidInput("row 3: broken")

    got: list[int] = []
    with pytest.raises(InvalidInput, match="row 3: broken"), Prefetch(source(), depth=1) as items:
        got.extend(items)
    assert got == [1, 2]
    assert _stage_threads() == []


def test_prefetch_closed_early_stops_its_thread_and_cleans_up_the_source() -> None:
    cleaned = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            cleaned.set()

    with Prefetch(source(), depth=2) as items:
        assert next(items) == 0
    assert cleaned.is_set()
    assert _stage_threads() == []


def test_drain_handles_in_order_and_raises_its_error_in_the_caller() -> None:
    handled: list[int] = []

    def handle(i: int) -> None:
        if i == 5:
            raise InvalidInput("cannot write 5")
        handled.append(i)

    with pytest.raises(InvalidInput, match="cannot write 5"), Drain(handle, depth=2) as drain:
        for i in range(100):
            drain.put(i)
        drain.finish()
    assert handled == [0, 1, 2, 3, 4]
    assert _stage_threads() == []

    done: list[int] = []
    with Drain(done.append, depth=1) as drain:
        for i in range(20):
            drain.put(i)
        drain.finish()
    assert done == list(range(20))


def test_drain_left_by_an_exception_does_not_wait_for_queued_items() -> None:
    started = threading.Event()
    handled: list[int] = []

    def handle(i: int) -> None:
        started.set()
        time.sleep(0.2)
        handled.append(i)

    with pytest.raises(RuntimeError, match="caller failed"), Drain(handle, depth=2) as drain:
        drain.put(1)
        assert started.wait(5)
        drain.put(2)
        drain.put(3)
        raise RuntimeError("caller failed")
    assert handled == [1]  # the item in hand is finished, the queued ones are dropped
    assert _stage_threads() == []


# ---- score_object through the pipeline ---------------------------------------------------------------------


def _iris_rows(n: int, bad_every: int) -> tuple[str, set[int]]:
    """n rows (ids r1..rn), every `bad_every`-th with a value that is not a number; the 1-based bad rows."""
    rng = np.random.default_rng(3)
    lines, bad = [HEADER], set()
    for i in range(1, n + 1):
        x = rng.uniform(0.1, 7.9, 4).round(3)
        if i % bad_every == 0:
            lines.append(f"r{i},{x[0]},oops,{x[2]},{x[3]}\n")
            bad.add(i)
        else:
            lines.append(f"r{i},{x[0]},{x[1]},{x[2]},{x[3]}\n")
    return "".join(lines), bad


def _s3_objects(bucket: str) -> list[str]:
    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


def _uploads(bucket: str) -> list[str]:
    return [u["Key"] for u in boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_many_chunks_in_flight_keep_order_and_every_row_lands_once(
    depth: int, load: Load, published: Published, fresh_bucket: str
) -> None:
    text, bad = _iris_rows(600, bad_every=7)
    bucket = fresh_bucket.removeprefix("s3://").split("/")[0]
    store = open_store(f"s3://{bucket}")
    store.write_bytes("in.csv", text.encode())
    model = load("iris")
    stats = score_object(model, store, "in.csv", store, "out.csv", chunk_rows=5, depth=depth)
    assert (stats.rows, stats.scored, stats.errors) == (600, 600 - len(bad), len(bad))

    out = list(csv.reader(io.StringIO(store.read_bytes("out.csv").decode())))
    errors = [json.loads(line) for line in store.read_bytes("out.csv.errors.jsonl").decode().splitlines()]
    assert [r[0] for r in out[1:]] == [f"r{i}" for i in range(1, 601) if i not in bad]  # input order
    assert [e["row"] for e in errors] == sorted(bad)
    assert [e["id"] for e in errors] == [f"r{i}" for i in sorted(bad)]
    assert all("column 'sepal_width'" in e["error"] for e in errors)

    features = np.array(
        [[float(v) for v in line.split(",")[1:]] for line in text.splitlines()[1:] if "oops" not in line],
        dtype=np.float32,
    )
    expected = published.reference("iris", float_input=features)
    assert [int(r[1]) for r in out[1:]] == expected["label"].tolist()
    np.testing.assert_array_equal(np.array([r[2:] for r in out[1:]], dtype=np.float32), expected["probabilities"])


def test_a_reader_failure_mid_file_leaves_no_output_and_no_upload(
    load: Load, fresh_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many chunks were scored and uploaded as parts before row 400's quote that never closes: both multipart
    uploads are aborted, nothing appears."""
    monkeypatch.setattr(MultipartWriter, "PART_SIZE", 256)  # every chunk's results go out as a part at once
    text, _ = _iris_rows(500, bad_every=10**9)
    lines = text.splitlines(keepends=True)
    lines[400] = 'r400,"5.1,3.5,1.4,0.2\n'
    bucket = fresh_bucket.removeprefix("s3://").split("/")[0]
    store = open_store(f"s3://{bucket}")
    store.write_bytes("in.csv", "".join(lines).encode())
    parts: list[int] = []
    flush = MultipartWriter._flush

    def counting_flush(self: MultipartWriter) -> None:
        flush(self)
        parts.append(1)

    monkeypatch.setattr(MultipartWriter, "_flush", counting_flush)
    with pytest.raises(InvalidInput, match="row 400: a quoted field is not closed"):
        score_object(load("iris"), store, "in.csv", store, "out/in.csv", chunk_rows=8)
    assert len(parts) > 10  # the failure came mid-file, after results were uploaded
    assert _s3_objects(bucket) == ["in.csv"]
    assert _uploads(bucket) == []
    assert _stage_threads() == []


def test_a_writer_failure_mid_file_stops_the_reader_and_leaves_no_output(
    load: Load, fresh_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload of a part fails in the writing thread: the error reaches the caller, the reading thread stops,
    the uploads are aborted."""
    monkeypatch.setattr(MultipartWriter, "PART_SIZE", 256)
    text, _ = _iris_rows(500, bad_every=10**9)
    bucket = fresh_bucket.removeprefix("s3://").split("/")[0]
    store = open_store(f"s3://{bucket}")
    store.write_bytes("in.csv", text.encode())
    flush = MultipartWriter._flush
    calls: list[str] = []

    def failing_flush(self: MultipartWriter) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 5:
            raise OSError("connection reset by peer")
        flush(self)

    monkeypatch.setattr(MultipartWriter, "_flush", failing_flush)
    with pytest.raises(OSError, match="connection reset"):
        score_object(load("iris"), store, "in.csv", store, "out/in.csv", chunk_rows=8)
    assert calls[-1] == "modelfn-drain"
    assert _s3_objects(bucket) == ["in.csv"]
    assert _uploads(bucket) == []
    assert _stage_threads() == []


def test_results_equal_whatever_the_depth(load: Load, score: Any) -> None:
    text, _ = _iris_rows(300, bad_every=11)
    model = load("iris")
    one = score(model, "a.csv", text.encode(), chunk_rows=4, depth=1)
    many = score(model, "b.csv", text.encode(), chunk_rows=4, depth=8)
    assert one.output == many.output
    assert one.errors == many.errors
