"""Captured requests read back for a window: partitions outside it are not read, records are filtered by version
and time, lines that are not records are counted and passed over; S3 (moto) and folders alike."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from modelfn.errors import InvalidInput
from modelfn.monitoring.captured import Window, read
from modelfn.monitoring.features import Feature
from modelfn.store import open_store
from tests.monitoring.synthetic import FEATURES, START, records, tabular_data, write_capture

TABULAR = [Feature(name=n, input="x", column=j, kind="numeric") for j, n in enumerate(FEATURES)]


@pytest.fixture(params=["folder", "s3"])
def capture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "capture")
    bucket: str = request.getfixturevalue("fresh_bucket")
    return bucket.replace("/models", "/capture")


def test_reads_every_record_of_the_version_once(capture: str) -> None:
    data = tabular_data(600, 1)
    write_capture(capture, records("tab", 1, {"x": data}) + records("tab", 2, {"x": data[:100]}), per_object=7)
    got = read(capture, "tab", 1, TABULAR, Window())
    assert (got.records, got.rows, got.other_versions) == (120, 600, 100 // 5)
    assert np.allclose(np.array([got.columns[n] for n in FEATURES]).T, data)


def test_a_window_reads_only_its_hours_and_records(capture: str) -> None:
    data = tabular_data(1000, 2)  # 200 requests, one a minute from 10:00: 10:00 .. 13:19
    keys = write_capture(capture, records("tab", 1, {"x": data}))
    assert {k.split("/")[2] for k in keys} == {"hour=10", "hour=11", "hour=12", "hour=13"}
    window = Window(START + timedelta(minutes=90), START + timedelta(minutes=150))
    got = read(capture, "tab", 1, TABULAR, window)
    assert got.records == 60 and got.rows == 300
    assert np.allclose(got.columns["a"], data[450:750, 0])
    assert got.objects == len([k for k in keys if "hour=11" in k or "hour=12" in k])  # hours 10 and 13 unread


def test_lines_that_are_not_records_are_counted_and_passed_over(tmp_path: Path) -> None:
    capture = str(tmp_path / "capture")
    write_capture(capture, records("tab", 1, {"x": tabular_data(50, 3)}))
    bad = b'not json\n{"version": 1}\n{"version": 1, "inputs": {"x": [[1, 2]]}}\n{"version": 1, "inputs": {}}\n'
    open_store(capture).write_bytes("tab/dt=2026-12-01/hour=10/zz.jsonl.gz", gzip.compress(bad))
    got = read(capture, "tab", 1, TABULAR, Window())
    assert (got.records, got.malformed) == (10, 4)


def test_window_options() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert Window.of(hours=24, now=now) == Window(now - timedelta(hours=24), now)
    expected = Window(START, START + timedelta(minutes=30))
    assert Window.of(since="2026-12-01T10:00", until="2026-12-01T11:30+01:00") == expected  # no zone: UTC
    for kwargs, message in [
        ({"since": "yesterday"}, "not an ISO 8601 time"),
        ({"since": "2026-12-01", "hours": 1}, "either --since or --hours"),
        ({"since": "2026-12-01T10:00", "until": "2026-12-01T11:00+01:00"}, "is not before"),
        ({"hours": 0}, "must be positive"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            Window.of(**kwargs)  # type: ignore[arg-type]


def test_firehose_capture_is_refused_with_what_to_pass() -> None:
    with pytest.raises(InvalidInput, match="S3 destination"):
        read("firehose://stream", "tab", 1, TABULAR, Window())


def test_objects_are_read_whatever_their_name_and_compression(tmp_path: Path) -> None:
    """As a Firehose stream writes them (its own names, gzip or plain); hidden files are a writer's, not data."""
    store = open_store(str(tmp_path / "capture"))
    lines = [json.dumps(r) + "\n" for r in records("tab", 1, {"x": tabular_data(20, 4)})]
    store.write_bytes("tab/dt=2026-12-01/hour=10/stream-1-2026-12-01-10-00-00-abc", "".join(lines[:2]).encode())
    store.write_bytes("tab/dt=2026-12-01/hour=10/stream-1-2026-12-01-10-05-00-def.gz", gzip.compress(lines[2].encode()))
    store.write_bytes("tab/dt=2026-12-01/hour=10/.part-in-progress", lines[3].encode())
    got = read(str(tmp_path / "capture"), "tab", 1, TABULAR, Window())
    assert (got.objects, got.records, got.rows) == (2, 3, 15)
