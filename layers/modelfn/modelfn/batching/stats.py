"""What the dynamic batcher did, for `/health` and `/metrics`: batch sizes are recorded in `batch_stats` (always)
and, when prometheus_client is importable (the `server` extra), in the `modelfn_batch_size` histogram and
`modelfn_batches_total` counter (labels model, version)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class BatchStats:
    """Process-wide record of the runs a batcher made: how many, how many rows, how many joined requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.runs = 0  # every session.run the batcher made
            self.batched_runs = 0  # runs that joined more than one request
            self.requests = 0
            self.rows = 0
            self.fallbacks = 0  # joined runs that raised and were retried request by request
            self.max_rows = 0
            self.max_requests = 0
            self.sizes: Counter[int] = Counter()  # rows per run -> count

    def record(self, rows: int, requests: int) -> None:
        with self._lock:
            self.runs += 1
            self.batched_runs += requests > 1
            self.requests += requests
            self.rows += rows
            self.max_rows = max(self.max_rows, rows)
            self.max_requests = max(self.max_requests, requests)
            self.sizes[rows] += 1

    def fallback(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": self.runs,
                "batched_runs": self.batched_runs,
                "requests": self.requests,
                "rows": self.rows,
                "fallbacks": self.fallbacks,
                "max_batch_rows": self.max_rows,
                "max_batch_requests": self.max_requests,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            }


batch_stats = BatchStats()

_metrics: dict[str, tuple[Any, Any]] = {}
_metrics_lock = threading.Lock()


def prometheus_metrics() -> tuple[Any, Any] | None:
    """(modelfn_batch_size histogram, modelfn_batches_total counter) in the default registry, or None when
    prometheus_client is not installed (it is never imported on the Lambda path)."""
    if "default" in _metrics:
        return _metrics["default"]
    try:
        import prometheus_client as prom
    except ImportError:
        return None
    with _metrics_lock:
        if "default" not in _metrics:
            _metrics["default"] = (
                _collector(
                    prom,
                    "modelfn_batch_size",
                    lambda: prom.Histogram(
                        "modelfn_batch_size",
                        "Rows per session.run made by the dynamic batcher",
                        ["model", "version"],
                        buckets=SIZE_BUCKETS,
                    ),
                ),
                _collector(
                    prom,
                    "modelfn_batches_total",
                    lambda: prom.Counter(
                        "modelfn_batches", "session.run calls made by the dynamic batcher", ["model", "version"]
                    ),
                ),
            )
    return _metrics["default"]


def _collector(prom: Any, name: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ValueError:  # already registered (by this module under another import, or by the container app)
        return prom.REGISTRY._names_to_collectors[name]
