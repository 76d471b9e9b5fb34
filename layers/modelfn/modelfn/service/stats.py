"""Inference statistics per model and version, counted by a service observer and answered in the shape of Triton's
statistics extension (`GET /v2/models/{m}/stats`), which `tritonclient`'s `get_inference_statistics` reads.

Counts are per process (one Lambda environment, one `modelfn serve`), as Triton's are per server. What is timed:
- success / fail: the service's whole time on the request (routing, decode, predict, encode);
- compute_infer: the model run (`InferenceRecord.predict_seconds`; with dynamic batching, the wait for the batch
  and its run);
- compute_input: the rest of a successful request's time (routing, body, decode, validation, encode): modelfn
  decodes and encodes in one pass with the request, so compute_output is counted but holds no time of its own;
- queue: zero (a request is never queued before its decode);
- cache_hit / cache_miss: answers from the response cache (a hit runs no model: no execution, no compute).
A failure is counted on the model and version it would have run when that version is loaded in this process
(a request that names no version, under a traffic split, on the split's pick for it); requests refused before
they ran (401, 403, 408, 429) and requests for unknown models are not counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelfn.errors import ModelfnError
from modelfn.service.request import CACHE_HEADER, Request, Response
from modelfn.service.routes import Route, RouteTable

if TYPE_CHECKING:
    from modelfn.service.dataplane import DataPlane

REFUSED = frozenset({401, 403, 408, 429})
"""Statuses of requests turned away before they reached a model: not an inference failure."""
MAX_BATCH_SIZES = 256
"""Distinct batch sizes broken out in `batch_stats` per version (a client sending every size cannot grow it)."""
NS = 1_000_000_000


def _duration(count: int, ns: int) -> dict[str, int]:
    """Triton's StatisticDuration: how many, and their cumulative nanoseconds."""
    return {"count": count, "ns": ns}


@dataclass(slots=True)
class Compute:
    """Model runs (Triton's InferBatchStatistics for one batch size): how many, the nanoseconds around the model
    (compute_input) and in it (compute_infer); compute_output holds no time of its own. Plain integers: the
    observer runs on every request."""

    count: int = 0
    input_ns: int = 0
    infer_ns: int = 0

    def add(self, input_ns: int, infer_ns: int) -> None:
        self.count += 1
        self.input_ns += input_ns
        self.infer_ns += infer_ns

    def as_json(self) -> dict[str, dict[str, int]]:
        return {
            "compute_input": _duration(self.count, self.input_ns),
            "compute_infer": _duration(self.count, self.infer_ns),
            "compute_output": _duration(self.count, 0),
        }


@dataclass(slots=True)
class VersionStats:
    last_inference: int = 0
    """Milliseconds since the epoch of the last successful inference (0: none yet), as Triton reports it."""
    inference_count: int = 0
    """Rows inferred (a request of N rows counts N, as Triton counts a batch's size)."""
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    cache_hit_count: int = 0
    cache_hit_ns: int = 0
    cache_miss_count: int = 0
    compute: Compute = field(default_factory=Compute)
    """Every model run (execution_count is its count: a response-cache hit runs none)."""
    batches: dict[int, Compute] = field(default_factory=dict)

    def succeeded(self, rows: int, ns: int, infer_ns: int, cache: str | None) -> None:
        self.last_inference = time.time_ns() // 1_000_000
        self.inference_count += rows
        self.success_count += 1
        self.success_ns += ns
        if cache == "hit":
            self.cache_hit_count += 1
            self.cache_hit_ns += ns
            return
        if cache == "miss":
            self.cache_miss_count += 1
        rest = ns - infer_ns if ns > infer_ns else 0
        self.compute.add(rest, infer_ns)
        batch = self.batches.get(rows)
        if batch is None:
            if len(self.batches) >= MAX_BATCH_SIZES:
                return
            batch = self.batches[rows] = Compute()
        batch.add(rest, infer_ns)

    def failed(self, ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += ns

    def as_json(self, name: str, version: int) -> dict[str, Any]:
        runs = self.compute.count
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": runs,
            "inference_stats": {
                "success": _duration(self.success_count, self.success_ns),
                "fail": _duration(self.fail_count, self.fail_ns),
                "queue": _duration(runs, 0),
                **self.compute.as_json(),
                "cache_hit": _duration(self.cache_hit_count, self.cache_hit_ns),
                "cache_miss": _duration(self.cache_miss_count, 0),
            },
            "batch_stats": [{"batch_size": size, **b.as_json()} for size, b in sorted(self.batches.items())],
            "memory_usage": [],
        }


def rows_of(inputs: Mapping[str, Any]) -> int:
    """A request's batch size: the first input's leading dimension (1 for a scalar input)."""
    for value in inputs.values():
        shape = getattr(value, "shape", ())
        return int(shape[0]) if shape else 1
    return 1


class InferenceStatistics:
    """The observer (see `Service.observers`): an inference's 200 is counted from its record, a failure of an
    inference route on the version it would have run. Quick: a few additions under a lock."""

    def __init__(self, table: RouteTable, plane: DataPlane) -> None:
        self.plane = plane
        self._inference: dict[str, Route] = {r.template: r for r in table.routes if r.codec is not None}
        self._stats: dict[tuple[str, int], VersionStats] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Request, response: Response, seconds: float) -> None:
        record = response.record
        name, version = response.model, response.version
        if record is not None and name is not None and version is not None:  # a success, counted here (per request)
            rows = rows_of(record.inputs)
            cache = response.headers.get(CACHE_HEADER)
            with self._lock:
                stats = self._stats.get((name, version)) or self._version(name, version)
                stats.succeeded(rows, int(seconds * NS), int(record.predict_seconds * NS), cache)
        elif response.status >= 400 and response.status not in REFUSED and response.route in self._inference:
            self._failure(request, self._inference[response.route], seconds)

    def _failure(self, request: Request, route: Route, seconds: float) -> None:
        """On the version the request would have run, found without I/O (a failure never waits on the store)."""
        found = route.pattern.match(request.path)
        if found is None or route.codec is None:  # an inner route of SageMaker /invocations: its path is not ours
            return
        try:
            target = self.plane.target(route.codec, found.groupdict(), request, cached_only=True)
        except ModelfnError:
            return
        model = None if target is None else self.plane.registry.lookup(target.name, target.version)
        if model is None:
            return
        with self._lock:
            self._version(model.name, model.version).failed(int(seconds * NS))

    def _version(self, name: str, version: int) -> VersionStats:
        """The version's counters, made on its first request (under the lock)."""
        stats = self._stats.get((name, version))
        if stats is None:
            stats = self._stats[(name, version)] = VersionStats()
        return stats

    def model_stats(self, name: str, version: int) -> dict[str, Any]:
        """Triton's model_stats entry of one version (zeros when it has not been asked anything yet)."""
        with self._lock:
            stats = self._stats.get((name, version)) or VersionStats()
            return stats.as_json(name, version)

    @classmethod
    def of(cls, observers: list[Any]) -> InferenceStatistics:
        """The statistics observer among a service's observers."""
        for observer in observers:
            if isinstance(observer, cls):
                return observer
        raise LookupError("this service counts no inference statistics")
