"""Capture as a service observer (Service.observers): every transport's inferences pass through it once.

On the response path it only decides whether to sample and appends references to a bounded buffer. Sampling is
deterministic by the sticky key when the request carries one (the same client is always in or always out, as
traffic splitting routes it), random otherwise. Records are encoded and written by `flush`: on servers by a
background thread every MODELFN_CAPTURE_FLUSH_SECONDS or as soon as MODELFN_CAPTURE_BUFFER_MB are buffered, and
by `close` on a graceful stop; on Lambda by `flush_if_due` at the end of an invoke (no thread runs in a frozen
environment). A buffer at twice the flush size drops new records, a sink that fails drops its batch; both are
counted and the failure logged once per interval, and neither ever changes a response."""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from modelfn.capture.buffer import CaptureBuffer
from modelfn.capture.record import Entry, size_of
from modelfn.capture.sinks import Batch, Sink, SinkError, open_sink
from modelfn.service.request import Request, Response
from modelfn.service.traffic import TrafficRouter
from modelfn.settings import Settings
from modelfn.telemetry import names
from modelfn.telemetry.observers import ResponseObserver
from modelfn.telemetry.sources import Sample

if TYPE_CHECKING:
    from modelfn.service.dispatch import Service

log = logging.getLogger("modelfn")
MB = 1024 * 1024
ID_HEADER = "x-request-id"
MAX_ID = 128
"""A client's request id is kept up to this many characters; without one the record gets a uuid."""


Sticky = Callable[[str], str | None]
"""The sticky header of a model (lower case), if its traffic has one."""


def sticky_header(router: TrafficRouter) -> Sticky:
    """A model's sticky header from the traffic.json its router last read (memory only, never the store)."""

    def header(model: str) -> str | None:
        known = router.fresh(model)
        traffic = known[0] if known is not None else None
        return traffic.sticky.lower() if traffic is not None and traffic.sticky else None

    return header


def sampled(percent: float, key: str | None) -> bool:
    """Whether a request is captured: all at 100, none at 0; by the sticky key's hash when there is one (CRC-32,
    not the split's SHA-256 bucket, so the captured share does not line up with one side of a split)."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    if key:
        return zlib.crc32(key.encode("utf-8", errors="replace")) % 10_000 < percent * 100
    return random.random() * 100 < percent


class Capture(ResponseObserver):
    def __init__(
        self,
        sink: Sink,
        percent: float = 100.0,
        flush_seconds: float = 60.0,
        buffer_mb: float = 4.0,
        sticky: Sticky | None = None,
    ) -> None:
        self.sink = sink
        self.percent = percent
        self.flush_seconds = flush_seconds
        self.sticky = sticky
        flush_bytes = max(1, int(buffer_mb * MB))
        self.buffer = CaptureBuffer(flush_bytes, 2 * flush_bytes)
        self.written: Counter[str] = Counter()
        """Records written, by model."""
        self.failed = 0
        """Records a sink did not write."""
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, sticky: Sticky | None = None) -> Capture | None:
        """The capture MODELFN_CAPTURE asks for, or None when it is unset."""
        if not settings.capture:
            return None
        return cls(
            open_sink(settings.capture),
            settings.capture_percent,
            settings.capture_flush_seconds,
            settings.capture_buffer_mb,
            sticky,
        )

    @classmethod
    def install(cls, service: Service) -> Capture | None:
        """The capture the service's settings ask for, observing it (sampled by each model's sticky header)."""
        capture = cls.from_settings(service.registry.settings, sticky_header(service.plane.traffic))
        if capture is not None:
            service.observers.append(capture)
        return capture

    # ---- the response path -------------------------------------------------------------------------------
    def observe(self, request: Request, response: Response, seconds: float) -> None:
        record = response.record
        if record is None or response.model is None or response.version is None:
            return
        if self.percent < 100:  # the sticky header is looked up only when sampling needs it
            header = self.sticky(response.model) if self.sticky is not None else None
            if not sampled(self.percent, request.headers.get(header) if header else None):
                return
        given = request.headers.get(ID_HEADER)
        inputs, outputs = record.inputs, record.outputs
        entry = Entry(
            given[:MAX_ID] if given else None,  # a uuid is drawn when the line is written, off the response path
            time.time(),
            response.model,
            response.version,
            response.route or "",
            seconds * 1000,
            inputs,
            outputs,
            size_of(inputs) + size_of(outputs),
        )
        self.buffer.append(entry)

    # ---- writing -----------------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered now; the number of records written. One flush at a time."""
        with self._flushing:
            entries = self.buffer.take()
            if not entries:
                return 0
            written = 0
            for batch in self._batches(entries):
                done = len(batch.lines) - self._write(batch)
                self.written[batch.model] += done
                written += done
            return written

    def _write(self, batch: Batch) -> int:
        """The batch written; how many of its lines were not (counted and logged, never raised)."""
        try:
            self.sink.write(batch)
        except SinkError as e:
            failure = e
        except Exception as e:  # a sink's own bug must not lose records uncounted
            failure = SinkError(f"capture write to {self.sink.uri} failed: {type(e).__name__}: {e}", len(batch.lines))
        else:
            return 0
        self.failed += failure.failed
        self._log_failure(failure)
        return failure.failed

    def _batches(self, entries: list[Entry]) -> list[Batch]:
        """Entries grouped by model and UTC hour (their partition), each line encoded here, off the response path.
        An entry that cannot be encoded is counted as failed, not allowed to stop the others."""
        groups: dict[tuple[str, str], list[bytes]] = {}
        hours: dict[tuple[str, str], datetime] = {}
        for entry in entries:
            when = entry.when
            key = (entry.model, when.strftime("%Y%m%d%H"))
            try:
                line = entry.line()
            except Exception as e:
                self.failed += 1
                self._log_failure(SinkError(f"capture: a record of {entry.model} could not be encoded: {e}", 1))
                continue
            groups.setdefault(key, []).append(line)
            hours.setdefault(key, when.replace(minute=0, second=0, microsecond=0))
        return [Batch(model, hours[(model, h)], lines) for (model, h), lines in groups.items()]

    def flush_if_due(self) -> int:
        """Lambda, at the end of an invoke: flush when the buffer is old or full."""
        return self.flush() if self.buffer.due(self.flush_seconds) else 0

    def _log_failure(self, e: SinkError) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self.flush_seconds:
            self._logged_at = now
            log.error(
                "capture: %s (%d record(s) dropped so far)", e.message, self.failed, extra={"sink": self.sink.uri}
            )

    @property
    def dropped(self) -> Mapping[str, int]:
        """Records lost, by reason: `overflow` (the buffer was full) and `sink` (the write failed)."""
        return {"overflow": self.buffer.dropped, "sink": self.failed}

    def samples(self) -> list[Sample]:
        """Its metrics (a telemetry Source): records written by model, dropped by reason, bytes waiting."""
        out = [Sample(names.CAPTURE_WRITTEN, n, {"model": m}) for m, n in self.written.items()]
        out += [Sample(names.CAPTURE_DROPPED, n, {"reason": r}) for r, n in self.dropped.items()]
        out.append(Sample(names.CAPTURE_BUFFERED_BYTES, self.buffer.bytes))
        return out

    # ---- servers: the background flusher -----------------------------------------------------------------
    def start(self) -> Capture:
        """Flush from a daemon thread every flush_seconds, or at once when the buffer reaches its flush size."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="modelfn-capture", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.buffer.full.wait(self._wait())
            if self._stop.is_set():
                return
            if self.buffer.due(self.flush_seconds):
                try:
                    self.flush()
                except Exception:  # never let the flusher die: later records would pile up unwritten
                    log.exception("capture: flush failed")

    def _wait(self) -> float:
        return min(self.flush_seconds, 1.0) if len(self.buffer) else self.flush_seconds

    def close(self) -> int:
        """A graceful stop: the thread ends and everything still buffered is written."""
        self._stop.set()
        self.buffer.full.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_seconds + 30)
            self._thread = None
        return self.flush()
