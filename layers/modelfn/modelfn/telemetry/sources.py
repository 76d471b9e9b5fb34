"""Metrics read when they are exported rather than counted per request: the response cache's and the shadow
traffic's own statistics. A part that keeps such statistics registers a `Source` on the service; the Prometheus
collector (servers) reads every source at each scrape, so nothing is counted twice and the hot path adds nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelfn.telemetry import names
from modelfn.telemetry.names import MetricSpec


@dataclass(frozen=True, slots=True)
class Sample:
    """A metric's current value for one label set: a counter's running total, or a gauge's value."""

    spec: MetricSpec
    value: float
    labels: Mapping[str, str] | None = None


Source = Callable[[], Iterable[Sample]]
"""Called at export time (a scrape, the end of a Lambda invoke); must be quick and must not raise."""


def from_snapshot(snapshot: Callable[[], Mapping[str, float]], specs: Mapping[str, MetricSpec]) -> Source:
    """A source over a `snapshot()` dict (e.g. the response cache's `{"hits": 3, "misses": 1, ...}`): each key of
    `specs` present in the snapshot becomes that metric's sample; other keys are ignored."""

    def read() -> list[Sample]:
        values = snapshot()
        return [Sample(spec, float(values[key])) for key, spec in specs.items() if key in values]

    return read


def shadow_samples(snapshot: Mapping[str, Mapping[str, Any]]) -> list[Sample]:
    """The shadow comparison's metrics from `Shadows.snapshot()` (service/traffic.py): per model, runs, errors,
    skips, the agreement share and largest difference so far, and the predict seconds of both sides."""
    out: list[Sample] = []
    for model, s in snapshot.items():
        labels = {"model": model}
        out += [
            Sample(names.SHADOW_REQUESTS, s["shadowed"], labels),
            Sample(names.SHADOW_ERRORS, s["shadow_errors"], labels),
            Sample(names.SHADOW_SKIPPED, s["skipped"], labels),
            Sample(names.SHADOW_MAX_ABS_DIFF, s["max_abs_diff"], labels),
        ]
        if s.get("agreement") is not None:
            out.append(Sample(names.SHADOW_AGREEMENT, s["agreement"], labels))
        compared = s["shadowed"] - s["shadow_errors"]
        for role in names.ROLES:
            ms = s.get(f"{role}_ms")
            if ms is not None:
                out.append(Sample(names.SHADOW_PREDICT_SECONDS, ms * compared / 1000, {**labels, "role": role}))
    return out
