"""Prometheus metrics for servers (`modelfn serve`, the container), named by the catalogue (telemetry/names.py)
that Lambda's EMF metrics also use. One `PrometheusMetrics` per service: it observes every answered request
(Service.observers), counts what the server sent before the service ran (refusals, clients gone; the ASGI
adapter's observer), and reads the response cache, capture and other sources when scraped.

Labels are only what the service vouches for: a served model, the version that ran, the matched route's template,
the status class; client input never becomes a label, so the number of series stays bounded. Each instance has
its own registry; `GET /metrics` answers it after the process-wide default registry (the batcher's metrics,
process and GC), so two apps in one process never share counters. Imports prometheus_client (`server` extra)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelfn.service.request import Request, Response
from modelfn.telemetry import names
from modelfn.telemetry.names import MetricSpec
from modelfn.telemetry.observers import Attribution, ResponseObserver
from modelfn.telemetry.sources import Sample, Source, from_snapshot, shadow_samples

if TYPE_CHECKING:
    from modelfn.registry import ModelRegistry
    from modelfn.service.dispatch import Service

CACHE_KEYS = {
    "hits": names.CACHE_HITS,
    "misses": names.CACHE_MISSES,
    "evictions": names.CACHE_EVICTIONS,
    "bytes": names.CACHE_BYTES,
}
"""The response cache's snapshot() keys and the metrics they are."""


def _counter(spec: MetricSpec, registry: CollectorRegistry) -> Counter:
    return Counter(spec.name, spec.description, spec.labels, registry=registry)


def _histogram(spec: MetricSpec, registry: CollectorRegistry) -> Histogram:
    return Histogram(spec.name, spec.description, spec.labels, buckets=spec.buckets, registry=registry)


class _Sources(Collector):
    """Metrics read from their owners' statistics at each scrape."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        samples: dict[str, list[Sample]] = {}
        for source in self.sources:
            for sample in source():
                samples.setdefault(sample.spec.name, []).append(sample)
        for group in samples.values():
            yield _family(group)


def _family(group: list[Sample]) -> Metric:
    spec = group[0].spec
    labels = list(spec.labels)
    family: CounterMetricFamily | GaugeMetricFamily
    if spec.kind == "counter":
        family = CounterMetricFamily(spec.name, spec.description, labels=labels)
    else:
        family = GaugeMetricFamily(spec.name, spec.description, labels=labels)
    for sample in group:
        family.add_metric([(sample.labels or {}).get(k, "") for k in labels], sample.value)
    return family


class PrometheusMetrics(ResponseObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = _counter(names.REQUESTS, self.registry)
        self.errors = _counter(names.ERRORS, self.registry)
        self.latency = _histogram(names.REQUEST_SECONDS, self.registry)
        self.load = _histogram(names.MODEL_LOAD_SECONDS, self.registry)
        self.http = _counter(names.HTTP_RESPONSES, self.registry)
        self.sources: list[Source] = []
        """Read at each scrape: add the statistics of a part that keeps its own (e.g. shadow traffic)."""
        self.registry.register(_Sources(self.sources))
        self._loads: set[tuple[str, int, int]] = set()
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any, Any]] = {}
        """(requests, latency, errors) children by their labels: `labels()` validates and locks on every call; the
        labels are served names, versions, route templates and status classes, so this stays as small as /metrics."""
        self._model_registry: ModelRegistry | None = None
        self._attribute: Attribution | None = None

    def attach(self, service: Service) -> PrometheusMetrics:
        """Observe the service's requests, its response cache, shadow comparisons and models' load times."""
        service.observers.append(self)
        self._model_registry = service.registry
        self._attribute = Attribution(service.table, service.plane)
        cache = service.plane.cache
        if cache is not None:
            self.sources.append(from_snapshot(cache.snapshot, CACHE_KEYS))
        shadows = service.shadows
        self.sources.append(lambda: shadow_samples(shadows.snapshot()))
        return self

    def observe(self, request: Request, response: Response, seconds: float) -> None:
        """A Service observer: counts and times what the service answered; a failed inference is labelled with the
        served version it would have run when that is known without I/O."""
        model, number = self._attribute(request, response) if self._attribute else (response.model, response.version)
        model = model or ""
        version = str(number) if number is not None else ""
        key = (model, version, response.route or names.UNMATCHED, names.status_class(response.status))
        children = self._children.get(key)
        if children is None:
            errors = self.errors.labels(*key) if response.status >= 400 else None
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key[:3]), errors)
        requests, latency, errors = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def transport(self, response: Response, seconds: float) -> None:
        """The ASGI adapter's observer: every response the server sent, refusals before the service included."""
        self.http.labels(names.status_class(response.status)).inc()

    def _observe_loads(self) -> None:
        """Each loaded version's load time, once per load (a version loaded again after eviction counts again)."""
        if self._model_registry is None:
            return
        loaded = {(m.name, m.version, id(m)): m.load_seconds for m in self._model_registry.cache.loaded()}
        for key in loaded.keys() - self._loads:
            self.load.labels(key[0], str(key[1])).observe(loaded[key])
        self._loads = set(loaded)

    def exposition(self, request: Request | None = None, params: Any = None) -> Response:
        """`GET /metrics`: the process-wide registry, then this service's."""
        self._observe_loads()
        body = generate_latest(REGISTRY) + generate_latest(self.registry)
        return Response(200, body, {"content-type": CONTENT_TYPE_LATEST})

    def series(self) -> Iterable[tuple[str, tuple[tuple[str, str], ...]]]:
        """Every sample of this service's metrics by name and labels (what a test counts)."""
        return [(s.name, tuple(sorted(s.labels.items()))) for m in self.registry.collect() for s in m.samples]
