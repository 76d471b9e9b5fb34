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


Values = dict[str, tuple[str, list[float]]]
"""metric name -> (its CloudWatch unit, the values recorded)"""


def document(groups: list[tuple[Mapping[str, str], Values]], namespace: str, timestamp_ms: int) -> dict[str, Any]:
    """One EMF document: one directive per (dimensions, metrics) group, every dimension's value at the top level
    (the caller keeps the groups' dimension values from clashing)."""
    doc: dict[str, Any] = {"_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": []}}
    for dimensions, values in groups:
        doc["_aws"]["CloudWatchMetrics"].append(
            {
                "Namespace": namespace,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()],
            }
        )
        doc.update(dimensions)
        for name, (_, recorded) in values.items():
            doc[name] = recorded  # a list always, as Powertools writes it
    return doc


class MetricSet:
    """The metrics of one invoke, flushed as EMF documents at its end: those of the function (dimension
    `service`) and, optionally, one request's own (`keyed`: model, version, route, status class), as a second
    directive of the same document."""

    __slots__ = ("_keyed", "_values", "dimensions", "namespace")

    def __init__(self, namespace: str, dimensions: Mapping[str, str]) -> None:
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self._values: Values = {}
        self._keyed: list[tuple[Mapping[str, str], Values]] = []

    def add(self, name: str, unit: str, value: float) -> None:
        found = self._values.get(name)
        if found is None:
            self._values[name] = (unit, [float(value)])
        else:
            found[1].append(float(value))

    def add_keyed(self, dimensions: Mapping[str, str], name: str, unit: str, value: float) -> None:
        """A metric under dimensions of its own (they must not share a name with the function's)."""
        self._keyed.append((dimensions, {name: (unit, [float(value)])}))

    def __len__(self) -> int:
        return len(self._values) + len(self._keyed)

    def flush(self, stream: TextIO | None = None) -> None:
        """Write what was recorded (nothing when nothing was) and start empty. The first keyed group shares the
        function's document; further ones (a batch's several requests) get documents of their own, so no two
        groups' dimension values clash in one document."""
        if not self._values and not self._keyed:
            return
        out = stream or sys.stdout
        now = int(time.time() * 1000)
        items = list(self._values.items())
        keyed = self._keyed
        self._values, self._keyed = {}, []
        documents: list[list[tuple[Mapping[str, str], Values]]] = []
        for start in range(0, len(items), MAX_METRICS):
            documents.append([(self.dimensions, dict(items[start : start + MAX_METRICS]))])
        for i, group in enumerate(keyed):
            if i == 0 and documents and len(documents[0][0][1]) < MAX_METRICS:
                documents[0].append(group)
            else:
                documents.append([group])
        for groups in documents:
            out.write(jsonio.dumps(document(groups, self.namespace, now)).decode() + "\n")
        out.flush()
