"""Limits that keep one client, or many slow ones, from taking the server: a rate per API key (MODELFN_RATE_LIMIT,
a token bucket), a bound on requests in flight (MODELFN_MAX_CONCURRENCY) and a deadline for a request's body
(MODELFN_BODY_TIMEOUT). Each refusal is answered at once, with Retry-After where retrying helps; servers close the
connection of a request answered before its body was read (adapters/asgi.py)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from modelfn.service.request import Refused

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
MAX_BUCKETS = 10_000
"""Clients (keys or addresses) whose buckets are remembered; the least recently seen is forgotten first, so
memory stays bounded however many addresses a client cycles through (a forgotten one starts with a full burst)."""


class TooManyRequests(Refused):
    status = 429

    def __init__(self, wait: float) -> None:
        seconds = max(1, math.ceil(wait))
        super().__init__(
            f"rate limit exceeded (MODELFN_RATE_LIMIT): retry in {seconds} s", {"retry-after": str(seconds)}
        )


class Busy(Refused):
    status = 503

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"server busy: {limit} requests in flight (MODELFN_MAX_CONCURRENCY); retry shortly", {"retry-after": "1"}
        )


class BodyTimeout(Refused):
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request body not received within {seconds:g} s (MODELFN_BODY_TIMEOUT)", {})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per client: `rate` tokens a second, up to a burst of twice that (at least one request)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, capacity: int = MAX_BUCKETS) -> None:
        if rate <= 0:
            raise ValueError("MODELFN_RATE_LIMIT must be positive")
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self.clock = clock
        self.capacity = capacity
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()  # Service.handle may be called from several threads

    def take(self, who: str) -> None:
        """One request of `who`, or 429 with the seconds until its next token."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None:
                bucket = self._buckets[who] = _Bucket(self.burst, now)
                if len(self._buckets) > self.capacity:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(who)
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
                bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / self.rate
        raise TooManyRequests(wait)

    def __len__(self) -> int:
        return len(self._buckets)


class Gate:
    """At most `limit` requests in flight on one event loop, counted from their headers (a body still arriving
    counts); the next one is refused at once with 503 rather than queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise Busy(self.limit)
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class BodyDeadline:
    """MODELFN_BODY_TIMEOUT for the body reads of one event loop: each read is registered with its deadline and one
    periodic check (every `tick`, only while reads are pending) cancels the late ones, which then raise 408. A timer
    per request (asyncio.timeout) would cost 5-10 µs, a fifth of a small warm request; this costs a dict entry. A
    late read ends at most `tick` after its deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def within(self, read: Awaitable[T]) -> T:
        """`read`'s result, or BodyTimeout once the deadline has passed."""
        import asyncio  # servers only: the Lambda path imports this module for RateLimiter, never asyncio

        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        if self._loop is not loop:  # a new loop (a test client's): reads of another one are not ours to end
            self._loop, self._timer = loop, None
            self._reads = {t: d for t, d in self._reads.items() if t.get_loop() is loop}
        self._reads[task] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep)
        try:
            return await read
        except asyncio.CancelledError:
            if task not in self._expired or task.uncancel() > 0:
                raise  # cancelled by someone else (shutdown): not a timeout
            raise BodyTimeout(self.seconds) from None
        finally:
            del self._reads[task]
            self._expired.discard(task)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for task, deadline in self._reads.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()  # the task waits inside `within`: the CancelledError arrives there
        self._timer = loop.call_later(self.tick, self._sweep) if self._reads else None
