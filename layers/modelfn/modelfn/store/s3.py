"""S3 as a model store, through boto3 with botocore's own retries; AWS_ENDPOINT_URL (moto, MinIO) is honoured."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelfn.errors import StoreError
from modelfn.store.base import CHUNK, ObjectStore, ObjectWriter, Progress, located

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
"""A conditional write lost: the object changed (412), or a concurrent conditional write was in flight (409)."""


class _Client:
    """One client per process (clients are thread-safe and costly to build), built once even when two threads ask
    for it first at the same moment (a function's init reads traffic.json beside the model). Retries use botocore's
    standard mode; the endpoint, region and credentials come from the usual environment, AWS_ENDPOINT_URL included."""

    def __init__(self) -> None:
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    def __call__(self) -> S3Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = _build_client()
                client = self._client
        return client

    def cache_clear(self) -> None:
        """Forget the client (its connections): after a SnapStart restore, and between tests."""
        self._client = None


def _build_client() -> S3Client:
    config = Config(
        retries={"mode": "standard", "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


s3_client = _Client()


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self) -> S3Client:
        return self._client or s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, key: str, action: str, e: Exception) -> Exception:
        """The error for a failed call, naming the key within the store and botocore's error code; the bucket,
        the prefix and botocore's own message (which quotes the endpoint URL, bucket and key) go to the log."""
        if isinstance(e, ClientError) and _code(e) in _NOT_FOUND:
            return self.missing(key)
        what = repr(key) if key else "its root"
        code = _code(e) if isinstance(e, ClientError) else ""
        failed = StoreError(f"the store could not {action} {what} ({code or type(e).__name__})")
        return located(failed, f"{self.join(key)}: {e}")

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise self._fail(key, "read", e) from e

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as e:
            if _code(e) in _CONFLICT:
                raise self.taken(key) from e
            raise self._fail(key, "write", e) from e
        except BotoCoreError as e:
            raise self._fail(key, "write", e) from e

    def read_with_token(self, key: str) -> tuple[bytes | None, str | None]:
        """The token is the object's ETag, which `write_if` hands back to S3 as If-Match."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404", "NotFound"):
                return None, None
            raise self._fail(key, "read", e) from e
        except BotoCoreError as e:
            raise self._fail(key, "read", e) from e

    def write_if(self, key: str, data: bytes, token: str | None) -> bool:
        """S3's conditional PUT (If-Match the ETag read, or If-None-Match * for a new object): S3 itself refuses a
        write based on a stale read, so two writers never both succeed from one state."""
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as e:
            if _code(e) in _CONFLICT or (token is not None and _code(e) in ("NoSuchKey", "404")):  # deleted since
                return False
            raise self._fail(key, "write", e) from e
        except BotoCoreError as e:
            raise self._fail(key, "write", e) from e
        return True

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            yield from body.iter_chunks(CHUNK)
        except (ClientError, BotoCoreError) as e:
            raise self._fail(key, "read", e) from e

    def upload_file(self, key: str, path: Path, progress: Progress | None = None) -> None:
        """boto3's managed transfer: multipart and parallel parts above its threshold, single PUT below."""
        from boto3.s3.transfer import TransferConfig

        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                Callback=progress,
                Config=TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024),
            )
        except (ClientError, BotoCoreError) as e:
            raise self._fail(key, "upload", e) from e
        except S3UploadFailedError as e:
            failed = StoreError(f"the store could not upload {key!r} ({type(e).__name__})")
            raise located(failed, f"{self.join(key)}: {e}") from e

    def open_reader(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except (ClientError, BotoCoreError) as e:
            raise self._fail(key, "read", e) from e
        return cast(BinaryIO, io.BufferedReader(cast(io.RawIOBase, body), buffer_size=CHUNK))

    @contextmanager
    def open_writer(self, key: str) -> Iterator[ObjectWriter]:
        writer = MultipartWriter(self.client, self.bucket, self._key(key), key)
        try:
            yield writer
            writer.complete()
        except BaseException:
            writer.abort()
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if _code(e) in _NOT_FOUND:
                return False
            raise self._fail(key, "check", e) from e
        except BotoCoreError as e:
            raise self._fail(key, "check", e) from e

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._key(prefix.strip("/") + "/") if prefix else (f"{self.prefix}/" if self.prefix else "")
        names: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(full) :].rstrip("/"))
        except (ClientError, BotoCoreError) as e:
            raise self._fail(prefix, "list", e) from e
        return sorted(names)


class MultipartWriter:
    """Buffers writes into parts of PART_SIZE and uploads each as it fills, so memory stays bounded whatever the
    object's size. An object smaller than one part is sent with a single PUT."""

    PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last

    def __init__(self, client: S3Client, bucket: str, key: str, name: str | None = None) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.name = key if name is None else name  # the key without the store's prefix: what error messages name
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[CompletedPartTypeDef] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.size += len(data)
        if len(self.buffer) >= self.PART_SIZE:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        etag = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})
        self.buffer.clear()

    def complete(self) -> None:
        try:
            if self.upload_id is None:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
                return
            if self.buffer:
                self._flush()
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )
        except (ClientError, BotoCoreError) as e:
            failed = StoreError(f"the store could not write {self.name!r} ({type(e).__name__})")
            raise located(failed, f"s3://{self.bucket}/{self.key}: {e}") from e

    def abort(self) -> None:
        if self.upload_id is not None:
            # best effort: the bucket's lifecycle rule for incomplete uploads is the backstop
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
