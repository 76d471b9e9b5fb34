"""Where captured lines go. A folder or S3 (through the store code, `open_store`): one gzip JSON Lines object per
model and hour per flush, under `<model>/dt=YYYY-MM-DD/hour=HH/<unique>.jsonl.gz`. Kinesis Data Firehose
(`firehose://STREAM`): the lines as records (PutRecordBatch), which the stream buffers, compresses and writes to
its own destination (partitioning there is the stream's configuration: see the README)."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

from modelfn.errors import StoreError
from modelfn.store import ObjectStore, open_store

FIREHOSE = "firehose://"
BATCH_RECORDS = 500
BATCH_BYTES = 4 * 1024 * 1024
RECORD_BYTES = 1000 * 1024
"""PutRecordBatch's limits: 500 records and 4 MiB a call, 1,000 KiB a record."""
GZIP_LEVEL = 1
"""The fastest level: on captured float tensors (random, 256 a row) about 4 times less CPU than level 5 for 9 %
more bytes, measured side by side; it runs beside the requests being served."""


class SinkError(StoreError):
    """A write the sink could not make; `failed` lines were not written."""

    def __init__(self, message: str, failed: int) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True, slots=True)
class Batch:
    """The lines of one model and one UTC hour."""

    model: str
    hour: datetime
    lines: Sequence[bytes]


class Sink(Protocol):
    uri: str

    def write(self, batch: Batch) -> None:
        """Write every line of the batch, or raise SinkError saying how many were not written."""


def object_key(model: str, hour: datetime) -> str:
    """`<model>/dt=YYYY-MM-DD/hour=HH/<time>-<unique>.jsonl.gz`: unique per flush and process, sortable by time."""
    unique = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return f"{model}/dt={hour:%Y-%m-%d}/hour={hour:%H}/{unique}.jsonl.gz"


class StoreSink:
    """A folder or s3://bucket/prefix."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.store: ObjectStore = open_store(uri)

    def write(self, batch: Batch) -> None:
        data = gzip.compress(b"".join(batch.lines), compresslevel=GZIP_LEVEL)
        try:
            self.store.write_bytes(object_key(batch.model, batch.hour), data)
        except Exception as e:
            raise SinkError(f"capture write to {self.uri} failed: {e}", len(batch.lines)) from e


class FirehoseSink:
    """`firehose://STREAM` through boto3 (AWS_ENDPOINT_URL honoured, as for S3). Records a stream refuses
    (FailedPutCount) are sent once more, then counted as failed."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.stream = uri.removeprefix(FIREHOSE).strip("/")
        if not self.stream:
            raise ValueError(f"{uri!r}: name the delivery stream, firehose://STREAM")

    @cached_property
    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client("firehose")

    def write(self, batch: Batch) -> None:
        failed = sum(1 for line in batch.lines if len(line) > RECORD_BYTES)
        for chunk in _chunks([line for line in batch.lines if len(line) <= RECORD_BYTES]):
            failed += self._put(chunk)
        if failed:
            raise SinkError(f"capture to {self.uri}: {failed} record(s) not delivered", failed)

    def _put(self, lines: list[bytes]) -> int:
        """Lines the stream did not take, after one retry of those it refused."""
        for attempt in range(2):
            try:
                answer = self.client.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": line} for line in lines]
                )
            except Exception as e:
                raise SinkError(f"capture to {self.uri} failed: {e}", len(lines)) from e
            if not answer.get("FailedPutCount"):
                return 0
            lines = [line for line, r in zip(lines, answer["RequestResponses"], strict=True) if r.get("ErrorCode")]
            if attempt == 1:
                break
        return len(lines)


def _chunks(lines: list[bytes]) -> list[list[bytes]]:
    """The lines in PutRecordBatch-sized groups."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) == BATCH_RECORDS or size + len(line) > BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


def open_sink(uri: str) -> Sink:
    """The sink of MODELFN_CAPTURE: firehose://STREAM, s3://bucket/prefix or a folder."""
    if uri.startswith(FIREHOSE):
        return FirehoseSink(uri)
    return StoreSink(uri)
