"""CloudWatch Embedded Metric Format, written by hand: one JSON document per invoke holding every metric the invoke
recorded (each metric's values as a list, as EMF allows and Powertools writes them), printed to stdout where the
Lambda runtime ships it to CloudWatch Logs. Powertools' Metrics does the same at the cost of about 40 ms of
imports on the cold path and a serialization pass per metric; this is a list append per value and one dumps."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from modelfn import jsonio

MAX_METRICS = 100
"""CloudWatch's bound on metrics in one EMF directive; a document with more is split."""


def document(
    namespace: str, dimensions: Mapping[str, str], values: Mapping[str, tuple[str, list[float]]], timestamp_ms: int
) -> dict[str, Any]:
    """An EMF document: `values` maps a metric name to (its CloudWatch unit, the values recorded)."""
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()],
                }
            ],
        },
        **dimensions,
    }
    for name, (_, recorded) in values.items():
        doc[name] = recorded  # a list always, as Powertools writes it
    return doc


class MetricSet:
    """The metrics of one invoke, flushed as EMF documents at its end."""

    __slots__ = ("_values", "dimensions", "namespace")

    def __init__(self, namespace: str, dimensions: Mapping[str, str]) -> None:
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self._values: dict[str, tuple[str, list[float]]] = {}

    def add(self, name: str, unit: str, value: float) -> None:
        found = self._values.get(name)
        if found is None:
            self._values[name] = (unit, [float(value)])
        else:
            found[1].append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def flush(self, stream: TextIO | None = None) -> None:
        """Write what was recorded (nothing when nothing was) and start empty."""
        if not self._values:
            return
        out = stream or sys.stdout
        now = int(time.time() * 1000)
        items = list(self._values.items())
        self._values = {}
        for start in range(0, len(items), MAX_METRICS):
            chunk = dict(items[start : start + MAX_METRICS])
            out.write(jsonio.dumps(document(self.namespace, self.dimensions, chunk, now)).decode() + "\n")
        out.flush()
