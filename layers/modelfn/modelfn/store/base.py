"""The object-store interface that the S3 and local backends implement."""

from __future__ import annotations

import abc
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

Progress = Callable[[int], None]
"""Called with the number of bytes moved since the last call."""

CHUNK = 1024 * 1024


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> int: ...


class ObjectStore(abc.ABC):
    """Keys are '/'-separated and relative to the store's root URI."""

    uri: str

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises ModelNotFound if it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write atomically (readers see the old object or the new one, never half); with if_absent, refuse to
        overwrite (PublishError) so that two publishers cannot both claim one version."""

    @abc.abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """Stream an object in chunks, so large artifacts are hashed while they download."""

    @abc.abstractmethod
    def upload_file(self, key: str, path: Path, progress: Progress | None = None) -> None:
        """Upload a local file (multipart where the backend has it)."""

    @abc.abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """A readable binary stream over the object, read as it is consumed (bounded memory for large files)."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> AbstractContextManager[ObjectWriter]:
        """A writer whose object appears only when the `with` block exits cleanly: on an exception nothing is
        left behind (S3: the multipart upload is aborted; local: the temporary file is removed)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate 'folders' under prefix ('' for the root)."""

    def download_verified(
        self, key: str, dest: Path, expected_sha256: str | None = None, progress: Progress | None = None
    ) -> str:
        """Stream key into a temporary file while hashing it, and return the sha256 hex digest. The file is renamed
        to dest only if it matches expected_sha256 (when given), so dest never holds unverified bytes."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as f:
                for chunk in self.iter_chunks(key):
                    digest.update(chunk)
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
            if expected_sha256 is None or digest.hexdigest() == expected_sha256:
                tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest.hexdigest()

    def join(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_store(uri: str) -> ObjectStore:
    """`s3://bucket/prefix`, `file:///abs/path` or a plain path. Backends are imported only when used."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from modelfn.store.s3 import S3Store

        if not parsed.netloc:
            raise ValueError(f"store URI {uri!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        from modelfn.store.local import LocalStore

        if parsed.netloc not in ("", "localhost"):  # file://models/x would silently mean /x
            raise ValueError(f"store URI {uri!r} names a host {parsed.netloc!r}: use file:///abs/path")
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        from modelfn.store.local import LocalStore

        return LocalStore(Path(uri))
    raise ValueError(f"unsupported store URI {uri!r}: use s3://bucket/prefix, file:///path or a path")


def split_uri(uri: str) -> tuple[ObjectStore, str]:
    """An object URI as (store holding it, key): s3://bucket/a/b.csv -> (s3://bucket, 'a/b.csv'),
    file:///x/y.csv or /x/y.csv -> (file:///x, 'y.csv')."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise ValueError(f"{uri!r} does not name an object: use s3://bucket/key")
        return open_store(f"s3://{parsed.netloc}"), key
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser().resolve()
    return open_store(str(path.parent)), path.name
