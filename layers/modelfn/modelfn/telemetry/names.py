"""The metrics catalogue: every metric modelfn emits, listed once. Servers expose it in Prometheus' text format
(http/metrics.py), Lambda as CloudWatch EMF (`MetricSpec.emf_name` / `emf_unit`), so a dashboard or an alarm names
the same metric on both.

Labels hold only values modelfn vouches for, never client input, so the number of series stays bounded whatever
clients send: `model` (a served model's name), `version` (the integer version that ran), `route` (the matched
route's template, or `UNMATCHED`), `status_class` (`2xx`/`3xx`/`4xx`/`5xx`), `role` and `reason` (fixed sets
below). Empty `model`/`version` mean the request named nothing that was served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "histogram", "gauge"]
Unit = Literal["requests", "errors", "seconds", "bytes", "records", "ratio", "entries"]

UNMATCHED = "<unmatched>"
"""The `route` label of a request that matched no route (its path is client input)."""
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ROLES = ("primary", "shadow")
"""`role` of the shadow predict time: the version that answered, and the one run beside it."""
DROP_REASONS = ("overflow", "sink")
"""`reason` of dropped capture records: the buffer was full, or the sink refused a write."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_EMF_UNITS: dict[str, str] = {
    "requests": "Count",
    "errors": "Count",
    "records": "Count",
    "entries": "Count",
    "seconds": "Seconds",
    "bytes": "Bytes",
    "ratio": "None",
}


@dataclass(frozen=True)
class MetricSpec:
    """One metric. `name` is the Prometheus family name (a counter is exposed as `name_total`)."""

    name: str
    kind: Kind
    unit: Unit
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    """Histogram bucket bounds (in `unit`)."""

    @property
    def emf_name(self) -> str:
        """The CloudWatch name: `modelfn_request_seconds` -> `RequestSeconds` (the namespace already says modelfn)."""
        return "".join(part.capitalize() for part in self.name.removeprefix("modelfn_").split("_"))

    @property
    def emf_unit(self) -> str:
        """The CloudWatch unit (EMF `Unit`): Count, Seconds, Bytes or None."""
        return _EMF_UNITS[self.unit]


REQUEST_LABELS = ("model", "version", "route", "status_class")

_SPECS = (
    # requests, all transports
    MetricSpec("modelfn_requests", "counter", "requests", "Requests answered", REQUEST_LABELS),
    MetricSpec("modelfn_errors", "counter", "errors", "Requests answered with a 4xx or 5xx status", REQUEST_LABELS),
    MetricSpec(
        "modelfn_request_seconds",
        "histogram",
        "seconds",
        "Time the service spent answering a request",
        ("model", "version", "route"),
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "modelfn_http_responses",
        "counter",
        "requests",
        "Responses a server sent, those refused before the service ran included (401, 408, 413, 429, 503 busy, "
        "499 client gone); servers only",
        ("status_class",),
    ),
    MetricSpec(
        "modelfn_model_load_seconds",
        "histogram",
        "seconds",
        "Time to fetch, verify and load a model version",
        ("model", "version"),
        LOAD_BUCKETS,
    ),
    # response cache (service/cache.py, read from its snapshot() when scraped)
    MetricSpec("modelfn_cache_hits", "counter", "requests", "Inferences answered from the response cache"),
    MetricSpec("modelfn_cache_misses", "counter", "requests", "Cacheable inferences the response cache did not hold"),
    MetricSpec("modelfn_cache_evictions", "counter", "entries", "Entries evicted from the response cache"),
    MetricSpec("modelfn_cache_bytes", "gauge", "bytes", "Bytes of results held by the response cache"),
    # shadow traffic (service/traffic.py)
    MetricSpec("modelfn_shadow_requests", "counter", "requests", "Requests also run on a shadow version", ("model",)),
    MetricSpec(
        "modelfn_shadow_errors", "counter", "errors", "Shadow runs that failed (never seen by the client)", ("model",)
    ),
    MetricSpec(
        "modelfn_shadow_agreement",
        "gauge",
        "ratio",
        "Share of shadow runs whose outputs agreed with the primary",
        ("model",),
    ),
    MetricSpec(
        "modelfn_shadow_max_abs_diff",
        "gauge",
        "ratio",
        "Largest absolute difference seen between primary and shadow outputs",
        ("model",),
    ),
    MetricSpec(
        "modelfn_shadow_predict_seconds",
        "counter",
        "seconds",
        "Predict time summed over compared shadow runs, of the primary and of the shadow version (divide by "
        "modelfn_shadow_requests minus errors for the mean)",
        ("model", "role"),
    ),
    MetricSpec(
        "modelfn_shadow_skipped",
        "counter",
        "requests",
        "Shadow runs skipped because every shadow slot was busy",
        ("model",),
    ),
    # payload capture (capture/)
    MetricSpec("modelfn_capture_written", "counter", "records", "Captured records written to the sink", ("model",)),
    MetricSpec(
        "modelfn_capture_dropped",
        "counter",
        "records",
        "Captured records dropped: buffer full (overflow) or write failed (sink)",
        ("reason",),
    ),
    MetricSpec("modelfn_capture_buffered_bytes", "gauge", "bytes", "Captured bytes waiting in memory for a write"),
)

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
"""Every metric by its name; the constants below name them in code."""

REQUESTS = METRICS["modelfn_requests"]
ERRORS = METRICS["modelfn_errors"]
REQUEST_SECONDS = METRICS["modelfn_request_seconds"]
HTTP_RESPONSES = METRICS["modelfn_http_responses"]
MODEL_LOAD_SECONDS = METRICS["modelfn_model_load_seconds"]
CACHE_HITS = METRICS["modelfn_cache_hits"]
CACHE_MISSES = METRICS["modelfn_cache_misses"]
CACHE_EVICTIONS = METRICS["modelfn_cache_evictions"]
CACHE_BYTES = METRICS["modelfn_cache_bytes"]
SHADOW_REQUESTS = METRICS["modelfn_shadow_requests"]
SHADOW_ERRORS = METRICS["modelfn_shadow_errors"]
SHADOW_AGREEMENT = METRICS["modelfn_shadow_agreement"]
SHADOW_MAX_ABS_DIFF = METRICS["modelfn_shadow_max_abs_diff"]
SHADOW_PREDICT_SECONDS = METRICS["modelfn_shadow_predict_seconds"]
SHADOW_SKIPPED = METRICS["modelfn_shadow_skipped"]
CAPTURE_WRITTEN = METRICS["modelfn_capture_written"]
CAPTURE_DROPPED = METRICS["modelfn_capture_dropped"]
CAPTURE_BUFFERED_BYTES = METRICS["modelfn_capture_buffered_bytes"]


def status_class(status: int) -> str:
    """`2xx` for 200..299; a status outside 100..599 (never sent) counts as `5xx`."""
    return f"{status // 100}xx" if 100 <= status < 600 else "5xx"
