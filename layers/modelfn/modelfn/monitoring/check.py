"""One drift check: a model version's baseline, its captured requests in a window, the verdict. What `modelfn
drift` and the scheduled function both run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelfn.errors import InvalidInput, ModelNotFound
from modelfn.monitoring import baseline as baselines
from modelfn.monitoring.captured import Captured, Window, read
from modelfn.monitoring.drift import DEFAULT_THRESHOLD, DriftReport, measure
from modelfn.store import ModelRepository, open_store


@dataclass
class DriftRun:
    report: DriftReport
    captured: Captured
    capture: str

    def summary(self) -> dict[str, Any]:
        """The report as JSON, with what was read and passed over."""
        c = self.captured
        return {
            **self.report.to_json(),
            "rows": c.rows,
            "objects": c.objects,
            "other_versions": c.other_versions,
            "outside": c.outside,
            "malformed": c.malformed,
        }


class NoCapturedRequests(ModelNotFound):
    """Nothing captured for the version in the window: a verdict over nothing would read as "no drift"."""


def check_threshold(threshold: float) -> float:
    if not threshold > 0:
        raise InvalidInput(f"the drift threshold must be a positive PSI, got {threshold}")
    return threshold


def check(
    store: str,
    name: str,
    version: str | int | None,
    capture: str,
    window: Window,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftRun:
    """The drift of `name` (its default version, or `version`: an integer or a label) over the window."""
    check_threshold(threshold)
    repo = ModelRepository(open_store(store))
    resolved = repo.resolve(name, version)
    reference = baselines.load(repo, repo.manifest(name, resolved))
    captured = read(capture, name, resolved, reference.features, window)
    if not captured.records:
        passed = captured.other_versions + captured.outside + captured.malformed
        raise NoCapturedRequests(
            f"no captured requests of model {name!r} version {resolved} in the window ({captured.objects} "
            f"object(s) read; {passed} record(s) of other versions, outside the window or malformed)"
        )
    report = measure(reference, captured.columns, captured.records, threshold)
    report.since = window.since.isoformat() if window.since else None
    report.until = window.until.isoformat() if window.until else None
    return DriftRun(report, captured, capture)
