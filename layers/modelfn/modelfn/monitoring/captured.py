"""Captured requests read back for drift: the gzip JSON Lines objects that capture writes under
`<capture>/<model>/dt=YYYY-MM-DD/hour=HH/` (UTC), those of one model version within a time window, turned into
each feature's values. Partitions outside the window are never listed or read; records are filtered by their own
`time` too, since an hour's object may hold a few records of the hour before (buffering). Every object in a
partition is read, gzip or not (by its first bytes), whatever its name: a Firehose stream partitioned the same way
names its objects itself."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from modelfn.errors import InvalidInput, StoreError
from modelfn.monitoring.features import Feature, split
from modelfn.store.base import ObjectStore, open_store

_DT = re.compile(r"dt=(\d{4}-\d{2}-\d{2})\Z")
_HOUR = re.compile(r"hour=(\d{2})\Z")


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time (a date alone is its midnight; no zone means UTC)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise InvalidInput(f"{what} {text!r} is not an ISO 8601 time such as 2026-12-01T13:00Z") from e
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """[since, until): either end open (None)."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(
        cls, since: str | None = None, until: str | None = None, hours: float | None = None, now: datetime | None = None
    ) -> Window:
        """From `--since`/`--until` (ISO times), or the last `hours` before `until` (default: now)."""
        end = parse_time(until, "--until") if until else None
        if hours is not None:
            if since:
                raise InvalidInput("give either --since or --hours, not both")
            if not hours > 0:
                raise InvalidInput(f"--hours must be positive, got {hours}")
            end = end or now or datetime.now(UTC)
            return cls(end - timedelta(hours=hours), end)
        start = parse_time(since, "--since") if since else None
        if start and end and start >= end:
            raise InvalidInput(f"--since {since} is not before --until {until}")
        return cls(start, end)

    def overlaps_hour(self, start: datetime) -> bool:
        return (self.since is None or start + timedelta(hours=1) > self.since) and (
            self.until is None or start < self.until
        )

    def __contains__(self, t: datetime) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None


@dataclass
class Captured:
    """What a window held for one model version: each feature's values, and what was read or passed over."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    records: int = 0
    rows: int = 0
    objects: int = 0
    other_versions: int = 0
    outside: int = 0
    malformed: int = 0


def _files(store: ObjectStore, folder: str) -> list[str]:
    """Keys of the objects directly in `folder` (the store interface lists folders only)."""
    from modelfn.store.local import LocalStore
    from modelfn.store.s3 import S3Store

    if isinstance(store, LocalStore):
        base = store.root / folder
        return sorted(f"{folder}/{p.name}" for p in base.iterdir() if p.is_file()) if base.is_dir() else []
    if isinstance(store, S3Store):
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{store.prefix}/{folder}/" if store.prefix else f"{folder}/"
        try:
            pages = store.client.get_paginator("list_objects_v2").paginate(
                Bucket=store.bucket, Prefix=full, Delimiter="/"
            )
            return sorted(f"{folder}/{o['Key'][len(full) :]}" for page in pages for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"could not list captured objects under {folder!r}: {type(e).__name__}") from e
    raise InvalidInput(f"cannot list captured objects in {store.uri}")


def partitions(store: ObjectStore, model: str, window: Window) -> Iterator[str]:
    """The model's dt=/hour= folders that overlap the window, oldest first."""
    for day in store.list_dirs(model):
        m = _DT.match(day)
        if not m:
            continue
        for hour in store.list_dirs(f"{model}/{day}"):
            h = _HOUR.match(hour)
            if h and window.overlaps_hour(datetime.fromisoformat(f"{m.group(1)}T{h.group(1)}:00+00:00")):
                yield f"{model}/{day}/{hour}"


def _lines(store: ObjectStore, key: str) -> list[bytes]:
    data = store.read_bytes(key)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise StoreError(f"captured object {key!r} is not valid gzip: {e}") from e
    return [line for line in data.splitlines() if line.strip()]


def _time(record: dict[str, Any]) -> datetime | None:
    value = record.get("time")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        return parse_time(value, "time") if isinstance(value, str) else None
    except InvalidInput:
        return None


def _take(out: Captured, record: Any, version: int, features: Sequence[Feature], window: Window) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
        out.malformed += 1
        return
    if str(record.get("version")) != str(version):
        out.other_versions += 1
        return
    if window.bounded:
        t = _time(record)
        if t is None or t not in window:
            out.outside += 1
            return
    try:
        values = split(features, record["inputs"])
        rows = {len(v) for v in values.values()}
    except (TypeError, IndexError, KeyError):
        out.malformed += 1
        return
    if len(values) != len(features) or len(rows) != 1:
        out.malformed += 1
        return
    for name, v in values.items():
        out.columns[name].extend(v)
    out.records += 1
    out.rows += rows.pop()


def read(capture: str, model: str, version: int, features: Sequence[Feature], window: Window) -> Captured:
    """Every captured record of `model` version `version` in the window, as feature columns. A line that is not
    a record with inputs for every feature is counted as malformed and passed over (a request the model refused is
    never captured, so there should be none)."""
    if capture.startswith("firehose://"):
        raise InvalidInput(
            "drift reads captured objects from S3 or a folder: pass the S3 destination of the Firehose stream, "
            "s3://bucket/prefix, as --capture"
        )
    store = open_store(capture)
    out = Captured(columns={f.name: [] for f in features})
    for folder in partitions(store, model, window):
        for key in _files(store, folder):
            if key.rpartition("/")[2].startswith((".", "_")):  # hidden: a writer's temporary or marker file
                continue
            out.objects += 1
            for line in _lines(store, key):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    out.malformed += 1
                    continue
                _take(out, record, version, features, window)
    return out
