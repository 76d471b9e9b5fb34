"""Powertools Logger (JSON, request id, cold start), Metrics (EMF) and Tracer (X-Ray) for one model function.

Quiet in tests and local runs through Powertools' own variables: POWERTOOLS_LOG_LEVEL, POWERTOOLS_METRICS_DISABLED,
POWERTOOLS_TRACE_DISABLED (tracing is off anyway outside Lambda, where the Tracer is not built at all)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

NAMESPACE = "modelfn"
Handler = Callable[[dict[str, Any], Any], Any]


def tracing_enabled() -> bool:
    """X-Ray can only record inside Lambda (not under `sam local`), and not when POWERTOOLS_TRACE_DISABLED is set.
    Elsewhere the Tracer is not even built: it imports the X-Ray SDK (about 145 ms of a cold start) and opens a
    dummy segment per invoke for nothing."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true", "yes", "on")
    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not os.environ.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


@dataclass
class Observability:
    logger: Logger
    metrics: Metrics
    tracer: Any | None  # aws_lambda_powertools.Tracer where tracing can record
    metrics_on: bool = True

    @classmethod
    def for_model(cls, model: str) -> Observability:
        tracer = None
        if tracing_enabled():
            from aws_lambda_powertools import Tracer

            tracer = Tracer(service=model)
        return cls(
            logger=Logger(service=model),
            metrics=Metrics(namespace=NAMESPACE, service=model),
            tracer=tracer,
            metrics_on=not is_metrics_disabled(),  # read once: the environment of a function does not change
        )

    def wrap(self, handler: Handler, kind: str) -> Handler:
        """Logger context (request id, cold start), EMF metrics flushed per invocation with a ColdStart metric,
        and an X-Ray subsegment for the handler."""
        traced = self.tracer.capture_lambda_handler(handler, capture_response=False) if self.tracer else handler
        logged = self.logger.inject_lambda_context(traced, log_event=False, clear_state=True)
        if not self.metrics_on:  # Powertools would still emit ColdStart and warn about empty metrics
            wrapped = logged
        else:
            wrapped = self.metrics.log_metrics(logged, capture_cold_start_metric=True, raise_on_empty_metrics=False)
        wrapped.__name__ = f"{kind}_handler"
        return wrapped

    def _add(self, name: str, unit: MetricUnit, value: float) -> None:
        # Disabled metrics would still pile up in Powertools' buffer (and flush every 100 values): skip them.
        if self.metrics_on:
            self.metrics.add_metric(name=name, unit=unit, value=value)

    def latency(self, kind: str, ms: float) -> None:
        self._add(f"{kind}Latency", MetricUnit.Milliseconds, ms)

    def count(self, name: str, value: float = 1) -> None:
        self._add(name, MetricUnit.Count, value)

    def ratio(self, name: str, value: float) -> None:
        self._add(name, MetricUnit.NoUnit, value)

    def load_time(self, ms: float) -> None:
        self._add("ModelLoadTime", MetricUnit.Milliseconds, ms)
