"""The object-store interface that the S3 and local backends implement."""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar
from urllib.parse import ParseResult, unquote, urlparse

from modelfn.errors import InvalidInput, ModelfnError, ModelNotFound, PublishError, StoreError

log = logging.getLogger("modelfn")
Progress = Callable[[int], None]
"""Called with the number of bytes moved since the last call."""

CHUNK = 1024 * 1024
URI_FORMS = "s3://bucket/prefix, file:///abs/path, or a plain path such as ./models"
E = TypeVar("E", bound=ModelfnError)
_SCHEME_WITHOUT_COLON = re.compile(r"^(s3[an]?|file|gs|gcs|https?|ftp|az|abfss?|hdfs)//", re.IGNORECASE)


def located(error: E, location: str, level: int = logging.WARNING) -> E:
    """`error`, once logged with where it happened. Error messages reach clients (an error body names the model,
    version and reason), so they never name a bucket, a prefix or a local path: those go to this log line, for
    the operator."""
    log.log(level, "%s (at %s)", error.message, location)
    return error


class StoreURIError(InvalidInput, ValueError):
    """A malformed store URI: a 400 for the edges and the CLI, and still a ValueError for callers that catch one."""


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
    def read_with_token(self, key: str) -> tuple[bytes | None, str | None]:
        """The object (None if absent) and a token naming that exact state, for `write_if`."""

    @abc.abstractmethod
    def write_if(self, key: str, data: bytes, token: str | None) -> bool:
        """Write atomically only if the object is still in the state `token` names (token None: still absent);
        False, writing nothing, if another writer got there first."""

    def update(self, key: str, change: Callable[[bytes | None], bytes], attempts: int = 30) -> bytes:
        """Read-modify-write that never loses a concurrent writer's change: `change` gets the current bytes
        (None if absent) and returns the new ones, which are written only if nobody wrote in between; otherwise
        it runs again on a fresh read. Returns what was written."""
        for attempt in range(attempts):
            current, token = self.read_with_token(key)
            new = change(current)
            if self.write_if(key, new, token):
                return new
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))  # jitter, so racing writers spread out
        changing = StoreError(f"could not update {key!r}: other writers kept changing it ({attempts} attempts)")
        raise located(changing, self.join(key))

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

    def missing(self, key: str) -> ModelNotFound:
        """The error for an absent key: it names the key within the store; the store's own location goes to the
        log (a 404 is often a client's typo, so only at debug level)."""
        return located(ModelNotFound(f"{key!r} does not exist in the store"), self.join(key), logging.DEBUG)

    def taken(self, key: str) -> PublishError:
        """The error for an if-absent write that found the key already there."""
        return located(PublishError(f"{key!r} already exists in the store"), self.join(key), logging.DEBUG)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _malformed(uri: str, why: str) -> StoreURIError:
    return StoreURIError(f"store URI {uri!r} is malformed ({why}); expected {URI_FORMS}")


def _check_plain_path(uri: str) -> None:
    """A plain path is a local folder, unless it is a URI with a typo: `s3//bucket` would otherwise silently
    become the folder ./s3/bucket."""
    if not uri or uri != uri.strip():
        raise _malformed(uri, "empty, or surrounded by whitespace")
    if _SCHEME_WITHOUT_COLON.match(uri):
        raise _malformed(uri, f"a scheme without its ':', did you mean {uri.replace('//', '://', 1)!r}?")


def _s3_location(uri: str, parsed: ParseResult) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URI, refusing forms S3 would read differently than the user meant."""
    if not uri[len(parsed.scheme) :].startswith("://") or not parsed.netloc:
        raise _malformed(uri, "s3 URIs are s3://bucket/prefix")
    if "@" in parsed.netloc or ":" in parsed.netloc:
        raise _malformed(uri, f"{parsed.netloc!r} is not a bucket name")
    if parsed.query or parsed.fragment or parsed.params:
        raise _malformed(uri, "'?', '#' and ';' are not part of an S3 key here")
    return parsed.netloc, parsed.path.lstrip("/")


def _file_path(uri: str, parsed: ParseResult) -> Path:
    """The absolute path of a file: URI (file:///abs/path, file://localhost/abs/path, file:/abs/path)."""
    if parsed.netloc not in ("", "localhost"):  # file://models/x would silently mean /x
        raise _malformed(uri, f"{parsed.netloc!r} is a host, not part of the path: use file:///abs/path")
    if parsed.query or parsed.fragment or parsed.params:
        raise _malformed(uri, "'?', '#' and ';' are not part of a path here")
    path = unquote(parsed.path)
    if not path.startswith("/"):
        raise _malformed(uri, "file URIs take an absolute path")
    return Path(path)


def _parse(uri: str) -> ParseResult:
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "file"):
        return parsed
    if len(parsed.scheme) > 1:  # one letter is a Windows drive: a plain path
        raise StoreURIError(f"unsupported store URI {uri!r}: expected {URI_FORMS}")
    _check_plain_path(uri)
    return parsed


def open_store(uri: str) -> ObjectStore:
    """`s3://bucket/prefix`, `file:///abs/path` or a plain path; anything else is a StoreURIError (400) naming
    the expected forms. Backends are imported only when used."""
    parsed = _parse(uri)
    if parsed.scheme == "s3":
        from modelfn.store.s3 import S3Store

        return S3Store(*_s3_location(uri, parsed))
    from modelfn.store.local import LocalStore

    return LocalStore(_file_path(uri, parsed) if parsed.scheme == "file" else Path(uri))


def split_uri(uri: str) -> tuple[ObjectStore, str]:
    """An object URI as (store holding it, key): s3://bucket/a/b.csv -> (s3://bucket, 'a/b.csv'),
    file:///x/y.csv or /x/y.csv -> (file:///x, 'y.csv')."""
    parsed = _parse(uri)
    if parsed.scheme == "s3":
        bucket, key = _s3_location(uri, parsed)
        if not key:
            raise StoreURIError(f"{uri!r} does not name an object: use s3://bucket/key")
        return open_store(f"s3://{bucket}"), key
    path = (_file_path(uri, parsed) if parsed.scheme == "file" else Path(uri)).expanduser().resolve()
    return open_store(str(path.parent)), path.name
