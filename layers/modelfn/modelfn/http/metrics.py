"""Prometheus request metrics for servers (`modelfn serve`, the container): what the service answered, labelled
only with names it vouches for (a served model, the version that ran, the matched route's template), so client
input never becomes a label and the number of series stays bounded. Imports prometheus_client (`server` extra)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from modelfn.service.request import Response

UNMATCHED = "<unmatched>"

REQUESTS = Counter(
    "modelfn_requests_total", "HTTP requests answered", ["model", "version", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "modelfn_request_seconds",
    "Time from the request's arrival to the end of its response",
    ["model", "version", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)


def observe(response: Response, seconds: float) -> None:
    model = response.model or ""
    version = str(response.version) if response.version is not None else ""
    route = response.route or UNMATCHED
    REQUESTS.labels(model, version, route, str(response.status)).inc()
    LATENCY.labels(model, version, route).observe(seconds)


def exposition() -> Response:
    return Response(200, generate_latest(REGISTRY), {"content-type": CONTENT_TYPE_LATEST})
