"""The capture buffer: a bounded, lock-protected list that the response path appends to and a flusher drains.
An append is O(1) and never waits on I/O; past the hard limit the entry is dropped and counted instead."""

from __future__ import annotations

import threading
import time

from modelfn.capture.record import Entry


class CaptureBuffer:
    def __init__(self, flush_bytes: int, max_bytes: int) -> None:
        """`flush_bytes`: a flush is due at this size; `max_bytes`: entries beyond it are dropped."""
        self.flush_bytes = flush_bytes
        self.max_bytes = max_bytes
        self.full = threading.Event()
        """Set when a flush is due by size, so a waiting flusher wakes at once."""
        self.dropped = 0
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._bytes = 0
        self._since: float | None = None

    def append(self, entry: Entry) -> bool:
        """Keep the entry; False (and counted) when the buffer is at its hard limit."""
        with self._lock:
            if self._bytes + entry.size > self.max_bytes and self._entries:
                self.dropped += 1
                return False
            self._entries.append(entry)
            self._bytes += entry.size
            if self._since is None:
                self._since = time.monotonic()
            if self._bytes >= self.flush_bytes:
                self.full.set()
        return True

    def take(self) -> list[Entry]:
        """Everything buffered, leaving the buffer empty."""
        with self._lock:
            entries, self._entries = self._entries, []
            self._bytes = 0
            self._since = None
            self.full.clear()
        return entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def due(self, seconds: float) -> bool:
        """A flush is due: the buffer reached its flush size, or holds an entry older than `seconds`."""
        since = self._since
        return self._bytes >= self.flush_bytes or (since is not None and time.monotonic() - since >= seconds)
