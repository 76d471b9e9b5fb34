"""S3 as a model store, through boto3 with botocore's own retries; AWS_ENDPOINT_URL (moto, MinIO) is honoured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelfn.errors import ModelNotFound, PublishError, StoreError
from modelfn.store.base import CHUNK, ObjectStore, Progress

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


@cache
def s3_client() -> S3Client:
    """One client per process (clients are thread-safe and costly to build). Retries use botocore's standard
    mode; the endpoint, region and credentials come from the usual environment, AWS_ENDPOINT_URL included."""
    config = Config(
        retries={"mode": "standard", "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


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
        if isinstance(e, ClientError) and _code(e) in _NOT_FOUND:
            return ModelNotFound(f"{self.join(key)} does not exist")
        return StoreError(f"could not {action} {self.join(key)}: {e}")

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
            if _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise PublishError(f"{self.join(key)} already exists") from e
            raise self._fail(key, "write", e) from e
        except BotoCoreError as e:
            raise self._fail(key, "write", e) from e

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
            raise StoreError(f"could not upload {self.join(key)}: {e}") from e

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
