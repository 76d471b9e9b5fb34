"""Logs, metrics and traces of one model function: JSON log lines with the invoke's context (telemetry/logs.py),
one EMF document per invoke holding all its metrics (telemetry/emf.py), and Powertools' Tracer (X-Ray) only where
X-Ray can record. Neither logs nor metrics import Powertools: that was about 40 ms of every cold start.

Powertools' own variables keep their meaning: POWERTOOLS_SERVICE_NAME (the `service` dimension and log field,
default the model's name), POWERTOOLS_METRICS_NAMESPACE (default `modelfn`), POWERTOOLS_METRICS_DISABLED,
POWERTOOLS_LOG_LEVEL, POWERTOOLS_TRACE_DISABLED."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelfn.telemetry.emf import MetricSet
from modelfn.telemetry.logs import LambdaContextFields

NAMESPACE = "modelfn"
Handler = Callable[[dict[str, Any], Any], Any]
TRUE = ("1", "true", "yes", "on")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def tracing_enabled() -> bool:
    """X-Ray can only record inside Lambda (not under `sam local`), and not when POWERTOOLS_TRACE_DISABLED is set.
    Elsewhere the Tracer is not even built: it imports the X-Ray SDK (about 145 ms of a cold start) and opens a
    dummy segment per invoke for nothing."""
    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not os.environ.get("AWS_SAM_LOCAL")
    return in_lambda and not _flag("POWERTOOLS_TRACE_DISABLED")


@dataclass
class Observability:
    service: str
    metrics: MetricSet
    tracer: Any | None  # aws_lambda_powertools.Tracer where tracing can record
    metrics_on: bool = True
    log_context: LambdaContextFields | None = None
    _cold: bool = field(default=True, repr=False)

    @classmethod
    def for_model(cls, model: str) -> Observability:
        tracer = None
        service = os.environ.get("POWERTOOLS_SERVICE_NAME") or model
        if tracing_enabled():
            from aws_lambda_powertools import Tracer

            tracer = Tracer(service=service)
        log_context = None
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            from modelfn.telemetry.logs import install

            log_context = install(service)
        namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
        return cls(
            service=service,
            metrics=MetricSet(namespace, {"service": service}),
            tracer=tracer,
            metrics_on=not _flag("POWERTOOLS_METRICS_DISABLED"),  # read once: a function's environment is fixed
            log_context=log_context,
        )

    def wrap(self, handler: Handler, kind: str) -> Handler:
        """The invoke's log context (request id, cold start), its metrics flushed as one EMF document at its end
        with a ColdStart count on the first, and an X-Ray subsegment for the handler."""
        traced = self.tracer.capture_lambda_handler(handler, capture_response=False) if self.tracer else handler
        log_context = self.log_context
        metrics = self.metrics

        def wrapped(event: dict[str, Any], context: Any) -> Any:
            if log_context is not None:
                log_context.begin(context)
            cold, self._cold = self._cold, False
            try:
                return traced(event, context)
            finally:
                if self.metrics_on:
                    metrics.flush()
                    if cold:
                        self._cold_start(context)

        wrapped.__name__ = f"{kind}_handler"
        wrapped.__doc__ = handler.__doc__
        return wrapped

    def _cold_start(self, context: Any) -> None:
        """ColdStart in a document of its own, dimensioned by function_name and service as Powertools emits it, so
        dashboards and alarms built on Powertools' metric keep working."""
        dimensions = {"function_name": str(getattr(context, "function_name", "") or self.service)}
        cold = MetricSet(self.metrics.namespace, {**dimensions, "service": self.service})
        cold.add("ColdStart", "Count", 1)
        cold.flush()

    def _add(self, name: str, unit: str, value: float) -> None:
        if self.metrics_on:
            self.metrics.add(name, unit, value)

    def latency(self, kind: str, ms: float) -> None:
        if self.metrics_on:  # not through _add: one call less on every invoke
            self.metrics.add(f"{kind}Latency", "Milliseconds", ms)

    def count(self, name: str, value: float = 1) -> None:
        if self.metrics_on:
            self.metrics.add(name, "Count", value)

    def ratio(self, name: str, value: float) -> None:
        self._add(name, "None", value)

    def load_time(self, ms: float) -> None:
        self._add("ModelLoadTime", "Milliseconds", ms)
