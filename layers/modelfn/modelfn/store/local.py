"""A local folder as a model store: what tests, `modelfn dev` without S3 and air-gapped users run on."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelfn.store.base import CHUNK, ObjectStore, ObjectWriter, Progress


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise self.missing(key) from e

    def _atomic_write(self, dest: Path, write: object) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)  # type: ignore[operator]
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        dest = self._path(key)
        if if_absent:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.link(tmp, dest)  # atomic create-if-absent: never a half-written (or empty) object at dest
            except FileExistsError as e:
                raise self.taken(key) from e
            finally:
                Path(tmp).unlink(missing_ok=True)
            return
        self._atomic_write(dest, lambda f: f.write(data))

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError as e:
            raise self.missing(key) from e
        with f:
            while chunk := f.read(CHUNK):
                yield chunk

    def upload_file(self, key: str, path: Path, progress: Progress | None = None) -> None:
        def copy(f: object) -> None:
            with path.open("rb") as src:
                while chunk := src.read(CHUNK):
                    f.write(chunk)  # type: ignore[attr-defined]
                    if progress:
                        progress(len(chunk))

        self._atomic_write(self._path(key), copy)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as e:
            raise self.missing(key) from e

    @contextmanager
    def open_writer(self, key: str) -> Iterator[ObjectWriter]:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def read_with_token(self, key: str) -> tuple[bytes | None, str | None]:
        """The token is the content's sha256: equal bytes are an equal state, so a write based on them is right."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, token: str | None) -> bool:
        """Compare and replace under an exclusive lock (flock on a sidecar `.<name>.lock`, which excludes other
        processes and threads alike), so no writer can slip in between the check and the atomic replace."""
        import fcntl  # POSIX only, and needed only here: the store stays importable elsewhere

        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.with_name(f".{dest.name}.lock").open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            if self.read_with_token(key)[1] != token:
                return False
            self._atomic_write(dest, lambda f: f.write(data))
            return True

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
