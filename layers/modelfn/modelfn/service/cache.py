"""The response cache: a model's results for a request's tensors, kept in a bounded in-process LRU (bytes) with a
TTL, and optionally in a shared Redis tier that every process reads.

What is cached is the model's *results*, not the encoded body: a hit is encoded for the request at hand, so it
echoes the caller's own `id` and binary/JSON choices and is otherwise exactly what a miss gives. The key covers
the model name, the served version's content digest (graph and external data: a label move can never answer from
another version), the route's protocol, the outputs asked for and every input tensor's name, datatype, shape and
bytes; never the request `id`. Unlike Triton's and MLServer's caches, two requests that differ only in shape or
model can never share an entry.

A shared tier that is down or slow makes a miss, never an error: each call has a short timeout, and after a
failure the tier is skipped for a few seconds (so an outage costs one timeout per interval, not one per request),
with one warning per interval."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("modelfn")

Results = dict[str, np.ndarray]
KEY_VERSION = b"modelfn-response-cache-1"
SHARED_PREFIX = "modelfn:rc:"
SHARED_TIMEOUT = 0.05
"""Seconds a shared-tier call may take before it counts as a miss."""
SHARED_BACKOFF = 5.0
"""Seconds the shared tier is skipped after a failure."""


def cache_key(
    name: str, content_id: str, route: str, outputs: Sequence[str] | None, inputs: Mapping[str, np.ndarray]
) -> bytes:
    """A 32-byte digest of everything that decides the results (see the module docstring). Every free-form part
    is length-prefixed or `repr`-quoted, so no two different requests can concatenate to the same stream; tensor
    bytes are hashed in place (no copy of a contiguous array)."""
    h = hashlib.blake2b(KEY_VERSION, digest_size=32)
    h.update(f"{len(name)}:{name}|{content_id}|{route}|{list(outputs) if outputs else None!r}".encode())
    for tensor_name in sorted(inputs):
        array = inputs[tensor_name]
        if array.dtype == object:
            items = [x if isinstance(x, bytes) else str(x).encode("utf-8", "surrogatepass") for x in array.reshape(-1)]
            h.update(f"|{len(tensor_name)}:{tensor_name}|O|{array.shape}|".encode())
            for item in items:
                h.update(b"%d:" % len(item))
                h.update(item)
        else:
            h.update(f"|{len(tensor_name)}:{tensor_name}|{array.dtype.str}|{array.shape}|{array.nbytes}|".encode())
            h.update(array.data if array.flags.c_contiguous else np.ascontiguousarray(array).data)
    return h.digest()


def results_size(results: Mapping[str, np.ndarray]) -> int:
    """Bytes an entry holds (strings by their UTF-8 length)."""
    total = 0
    for array in results.values():
        if array.dtype == object:
            total += sum(len(x) if isinstance(x, bytes) else len(str(x).encode()) for x in array.reshape(-1))
        else:
            total += array.nbytes
    return total + 64 * len(results)


def pack(results: Mapping[str, np.ndarray]) -> bytes:
    """Results as bytes for the shared tier: a JSON header (name, dtype, shape, length per tensor) and the raw
    buffers; string tensors as a JSON list. No pickle: what comes back from Redis is only ever parsed as data."""
    header: list[list[Any]] = []
    chunks: list[bytes] = []
    for name, array in results.items():
        if array.dtype == object:
            data = json.dumps(
                [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
            ).encode()
            header.append([name, "str", list(array.shape), len(data)])
        else:
            data = np.ascontiguousarray(array).tobytes()
            header.append([name, array.dtype.str, list(array.shape), len(data)])
        chunks.append(data)
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def unpack(blob: bytes) -> Results:
    (size,) = struct.unpack_from("<I", blob)
    header = json.loads(blob[4 : 4 + size])
    offset = 4 + size
    results: Results = {}
    for name, dtype, shape, length in header:
        data = blob[offset : offset + length]
        offset += length
        if dtype == "str":
            values = json.loads(data)
            array = np.empty(len(values), dtype=object)
            array[:] = [v.encode("utf-8", "surrogateescape") for v in values]
            results[name] = array.reshape(shape)
        else:
            results[name] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
    if offset != len(blob):
        raise ValueError("trailing bytes in a cached entry")
    return results


class SharedTier(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes, ttl: float) -> None: ...


class RedisTier:
    """redis-py with short timeouts; a client per process, its connection pool shared by threads."""

    def __init__(self, url: str, timeout: float = SHARED_TIMEOUT) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def get(self, key: bytes) -> bytes | None:
        value = self.client.get(SHARED_PREFIX.encode() + key)
        return value if isinstance(value, bytes) else None

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        self.client.set(SHARED_PREFIX.encode() + key, value, px=max(1, int(ttl * 1000)))


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared_hits: int = 0
    shared_errors: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0
    per_model: dict[str, list[int]] = field(default_factory=dict)
    """model → [hits, misses]"""


class ResponseCache:
    def __init__(self, max_bytes: int, ttl: float, shared: SharedTier | None = None) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.shared = shared
        self.stats = CacheStats()
        self._entries: OrderedDict[bytes, tuple[float, Results, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._shared_off_until = 0.0
        self._warned_at = float("-inf")

    @classmethod
    def from_settings(cls, settings: Any) -> ResponseCache:
        """MODELFN_RESPONSE_CACHE_MB of results in process (0: none), and the shared tier when a URL is set. The
        caller builds one only when either is on (DataPlane: off, this module is not even imported)."""
        url = settings.response_cache_url
        return cls(
            int(settings.response_cache_mb * 1024 * 1024), settings.response_cache_ttl, RedisTier(url) if url else None
        )

    @property
    def blocking(self) -> bool:
        """Whether a lookup may wait on the network (servers then run cached routes off the event loop)."""
        return self.shared is not None

    # ---- lookups -----------------------------------------------------------------------------------------
    def get(self, model: str, key: bytes) -> Results | None:
        """A copy of the cached results (hooks may change what they are given), or None. Counted per model."""
        found = self._local(key)
        if found is None and self.shared is not None:
            found = self._from_shared(key)
            if found is not None:
                self._remember(key, found)
        counts = self.stats.per_model.setdefault(model, [0, 0])
        if found is None:
            self.stats.misses += 1
            counts[1] += 1
            return None
        self.stats.hits += 1
        counts[0] += 1
        return {k: v.copy() for k, v in found.items()}

    def put(self, key: bytes, results: Mapping[str, np.ndarray]) -> None:
        kept = {k: np.array(v, copy=True) for k, v in results.items()}
        self._remember(key, kept)
        if self.shared is not None and self._shared_on():
            try:
                self.shared.set(key, pack(kept), self.ttl)
            except Exception as e:
                self._shared_failed(e)

    # ---- the in-process tier -----------------------------------------------------------------------------
    def _local(self, key: bytes) -> Results | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] <= time.monotonic():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def _remember(self, key: bytes, results: Results) -> None:
        size = results_size(results)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (time.monotonic() + self.ttl, results, size)
            self.stats.bytes += size
            self.stats.entries += 1
            while self.stats.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1

    def _drop(self, key: bytes) -> None:
        _, _, size = self._entries.pop(key)
        self.stats.bytes -= size
        self.stats.entries -= 1

    # ---- the shared tier ---------------------------------------------------------------------------------
    def _shared_on(self) -> bool:
        return time.monotonic() >= self._shared_off_until

    def _from_shared(self, key: bytes) -> Results | None:
        assert self.shared is not None
        if not self._shared_on():
            return None
        try:
            blob = self.shared.get(key)
            if blob is None:
                return None
            found = unpack(blob)
        except Exception as e:
            self._shared_failed(e)
            return None
        self.stats.shared_hits += 1
        return found

    def _shared_failed(self, e: Exception) -> None:
        self.stats.shared_errors += 1
        now = time.monotonic()
        self._shared_off_until = now + SHARED_BACKOFF
        if now - self._warned_at >= SHARED_BACKOFF:
            self._warned_at = now
            log.warning(
                "response cache: the shared tier failed (%s: %s); answering from this process for %g s",
                type(e).__name__,
                e,
                SHARED_BACKOFF,
            )

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {
            "hits": s.hits,
            "misses": s.misses,
            "shared_hits": s.shared_hits,
            "shared_errors": s.shared_errors,
            "evictions": s.evictions,
            "bytes": s.bytes,
            "entries": s.entries,
            "max_bytes": self.max_bytes,
            "models": {m: {"hits": c[0], "misses": c[1]} for m, c in s.per_model.items()},
        }
