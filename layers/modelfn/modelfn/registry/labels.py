"""Resolutions read from the store and trusted for MODELFN_LABEL_TTL seconds: labels, default versions, the served
model list. A store outage keeps the last good answer (so a label read never takes serving down with the store),
a missing label or model (404) is an answer of its own, and nothing is kept for a failed first read, so lookups
of names that do not exist leave nothing behind."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from modelfn.errors import ModelNotFound, StoreError

log = logging.getLogger("modelfn")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

OUTAGES: tuple[type[Exception], ...] = (StoreError, OSError)
"""What a store raises when it is down, slow or unreadable (S3Store turns botocore's connection and timeout errors
into StoreError; a local folder raises OSError), as opposed to ModelNotFound: the thing asked for does not exist."""

NEVER = float("-inf")


class Resolutions(Generic[K, V]):
    """Keyed values, each re-read after `ttl` seconds. Readers never take a lock (dict reads are atomic); writers
    share one. At most `limit` keys are kept, the least recently read from the store going first."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._entries: dict[K, tuple[V, float]] = {}
        self._refreshing: set[K] = set()
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: K, ttl: float) -> V | None:
        """The value if it was read within `ttl` seconds, else None: no I/O and no lock, for event loops."""
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[1] < ttl:
            return hit[0]
        return None

    def get(self, key: K, ttl: float, read: Callable[[], V], what: str) -> V:
        """The value, re-read with `read` once `ttl` has passed. While one thread re-reads a key, the others keep
        answering with the previous value instead of queueing behind a slow store. `what` names the value in the
        warning an outage logs."""
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[1] < ttl:
            return hit[0]
        if hit is not None and not self._claim(key):
            return hit[0]
        try:
            value = read()
        except ModelNotFound:
            self.discard(key)
            raise
        except OUTAGES as e:
            if hit is None:
                raise
            log.warning(
                "%s could not be re-read, keeping %s until the store answers (retry in %g s): %s", what, hit[0], ttl, e
            )
            self.put(key, hit[0])
            return hit[0]
        else:
            self.put(key, value)
            return value
        finally:
            if hit is not None:
                self._release(key)

    def _claim(self, key: K) -> bool:
        with self._guard:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def _release(self, key: K) -> None:
        with self._guard:
            self._refreshing.discard(key)

    def put(self, key: K, value: V) -> None:
        """Keep `value` for `key` as if just read from the store."""
        with self._guard:
            self._entries.pop(key, None)
            self._entries[key] = (value, time.monotonic())
            while len(self._entries) > self.limit:
                del self._entries[next(iter(self._entries))]

    def discard(self, key: K) -> None:
        with self._guard:
            self._entries.pop(key, None)

    def expire(self) -> None:
        """Re-read every value on its next use, still keeping it as the fallback should the store be down."""
        with self._guard:
            for key, (value, _) in list(self._entries.items()):
                self._entries[key] = (value, NEVER)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
