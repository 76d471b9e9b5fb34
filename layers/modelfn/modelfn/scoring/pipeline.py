"""A bounded pipeline of threads: batch scoring reads and parses chunk k+1 while chunk k runs in onnxruntime (which
releases the GIL) and chunk k-1 is formatted and uploaded (socket I/O releases it too). Each stage hands the next
a bounded queue, so at most a fixed number of chunks is in memory whatever the file's size, and the stages keep
the chunks' order. An error in any stage reaches the caller's thread, at the chunk where it happened, and stops the
other stages, so the caller's multipart uploads are aborted and no half-written output appears.

- `Prefetch(items, depth)`: an iterator run `depth` items ahead in a thread of its own.
- `Drain(handle, depth)`: items handed to a thread that applies `handle` to each, in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL = 0.05
"""How often a stage blocked on a full or empty queue looks whether the pipeline was stopped (seconds)."""


class _End:
    """Marks the end of a stage's items: normal (error None) or the exception that stopped it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Stage:
    """A thread and the event that stops it; `_put` never blocks past a stop."""

    def __init__(self, depth: int, name: str) -> None:
        if depth < 1:
            raise ValueError("a pipeline stage holds at least one item")
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _put(self, item: object) -> bool:
        """Queue an item, waiting for room; False once the pipeline is stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False


class Prefetch(_Stage, Generic[T]):
    """Iterates `items` in a thread, at most `depth` items ahead of the consumer. The iterator's exception is
    raised by `__next__` after the items before it; `close` (also on leaving `with`) stops the thread early."""

    def __init__(self, items: Iterator[T], depth: int) -> None:
        super().__init__(depth, "modelfn-prefetch")
        self.items = items
        self.done = False
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    break
            else:
                self._put(_End())
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_End(e))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (a spooled file, ...) runs in the thread that ran it

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self.done:
            raise StopIteration
        item = self.queue.get()
        if isinstance(item, _End):
            self.done = True
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item  # type: ignore[return-value]  # everything else in the queue came from `items`

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Drain(_Stage, Generic[T]):
    """Applies `handle` to each item `put`, in order, in a thread, with at most `depth` items waiting. Its first
    exception is raised by the next `put` or by `finish`; items after it are not handled. Leaving `with` by an
    exception stops the thread without waiting for the items still queued."""

    def __init__(self, handle: Callable[[T], None], depth: int) -> None:
        super().__init__(depth, "modelfn-drain")
        self.handle = handle
        self.error: BaseException | None = None
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            try:
                self.handle(item)  # type: ignore[arg-type]  # everything else in the queue came from `put`
            except BaseException as e:  # raised in the producer's thread by put/finish
                self.error = e
                self.stop.set()
                return

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: T) -> None:
        if not self._put(item):
            self.thread.join()
            self._raise()
            raise RuntimeError("the drain was stopped")

    def finish(self) -> None:
        """Wait until every item is handled; raise the first error."""
        self._put(_End())
        self.thread.join()
        self._raise()

    def __enter__(self) -> Drain[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join()
