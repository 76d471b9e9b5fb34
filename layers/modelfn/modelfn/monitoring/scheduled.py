"""The scheduled drift function (`modelfn.monitoring.scheduled.handler`, run by an EventBridge schedule): for each
model of MODELFN_DRIFT_MODELS, the same check as `modelfn drift` over the last MODELFN_DRIFT_HOURS hours (default
24) before the event's time, reported as CloudWatch metrics in the Embedded Metric Format, one JSON line each on
stdout (which Lambda sends to CloudWatch Logs, where the metrics are extracted; no API call, no Powertools buffer):

- `DriftPSI` (dimensions model, feature): each feature's PSI;
- `DriftMaxPSI` and `DriftRecords` (dimension model): the largest PSI (what the alarm watches) and the number of
  captured requests the check read (0 when none: an alarm on it catches capture that stopped).

Environment: MODELFN_STORE, MODELFN_CAPTURE, MODELFN_DRIFT_MODELS (comma-separated names, each optionally
`name:version` with a version or label), MODELFN_DRIFT_THRESHOLD (PSI, default 0.2), MODELFN_DRIFT_HOURS.
A model that cannot be checked (no baseline, a store error) is logged and reported in the summary; the others are
still checked."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from modelfn.errors import InvalidInput, ModelfnError
from modelfn.monitoring.captured import Window, parse_time
from modelfn.monitoring.check import NoCapturedRequests, check
from modelfn.monitoring.drift import DEFAULT_THRESHOLD

log = logging.getLogger("modelfn")
NAMESPACE = "modelfn"


def emf(dimensions: dict[str, str], metrics: dict[str, tuple[float, str]]) -> str:
    """One EMF document: `metrics` {name: (value, unit)} under one dimension set."""
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                    }
                ],
            },
            **dimensions,
            **{name: value for name, (value, _) in metrics.items()},
        }
    )


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise InvalidInput(f"the drift function needs {name}")
    return value


def _number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError as e:
        raise InvalidInput(f"{name} must be a number, got {text!r}") from e
    if not value > 0:
        raise InvalidInput(f"{name} must be positive, got {text!r}")
    return value


def _models(text: str) -> list[tuple[str, str | None]]:
    out = []
    for item in (m.strip() for m in text.split(",")):
        if item:
            name, _, version = item.partition(":")
            out.append((name, version or None))
    return out


def _end(event: Any) -> datetime:
    """The window ends at the scheduled event's time (so a retried invocation checks the same hours), else now."""
    when = event.get("time") if isinstance(event, dict) else None
    return parse_time(when, "the event's time") if isinstance(when, str) else datetime.now(UTC)


def _one(store: str, capture: str, name: str, version: str | None, window: Window, threshold: float) -> dict[str, Any]:
    try:
        run = check(store, name, version, capture, window, threshold)
    except NoCapturedRequests as e:
        print(emf({"model": name}, {"DriftRecords": (0, "Count")}))
        return {"model": name, "records": 0, "drifted": [], "status": "no data", "reason": e.message}
    except ModelfnError as e:
        log.error(json.dumps({"message": "drift check failed", "model": name, "version": version, "reason": e.message}))
        return {"model": name, "status": "error", "reason": e.message}
    report = run.report
    for f in report.features:
        if f.psi is not None:
            print(emf({"model": name, "feature": f.name}, {"DriftPSI": (f.psi, "None")}))
    max_psi = report.max_psi
    per_model = {"DriftRecords": (float(report.records), "Count")}
    if max_psi is not None:
        per_model["DriftMaxPSI"] = (max_psi, "None")
    print(emf({"model": name}, per_model))
    return {
        "model": name,
        "version": report.version,
        "records": report.records,
        "max_psi": max_psi,
        "drifted": report.drifted,
        "psi": {f.name: f.psi for f in report.features},
        "status": "drift" if report.drifted else "ok",
    }


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Check every configured model; returns a summary (also what `modelfn invoke` prints)."""
    store, capture = _env("MODELFN_STORE"), _env("MODELFN_CAPTURE")
    models = _models(_env("MODELFN_DRIFT_MODELS"))
    threshold = _number("MODELFN_DRIFT_THRESHOLD", DEFAULT_THRESHOLD)
    window = Window.of(hours=_number("MODELFN_DRIFT_HOURS", 24), now=_end(event))
    results = [_one(store, capture, name, version, window, threshold) for name, version in models]
    return {
        "since": window.since.isoformat() if window.since else None,
        "until": window.until.isoformat() if window.until else None,
        "threshold": threshold,
        "drifted": [r["model"] for r in results if r.get("drifted")],
        "models": results,
    }
