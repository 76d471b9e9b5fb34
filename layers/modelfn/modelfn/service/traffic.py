"""Traffic (contract "Traffic: split, sticky, shadow"): which version a request that names none runs, and the
shadow that scores a copy of it.

- The split is read from `<model>/traffic.json` and trusted for MODELFN_LABEL_TTL seconds, like labels: a store
  outage or a malformed file is logged and keeps the last good traffic in effect (with none known, the default
  version serves), so traffic.json can steer requests but never stop them.
- Sticky: the target is a pure function of the model name and the header's value (a SHA-256 bucket over the
  targets in sorted order), so a user stays on one version in every process, transport and Lambda environment
  while the split is unchanged. Without the header each request draws by weight.
- A routed version that fails to load or verify never takes traffic: the last version that served that target
  keeps serving it, else the default version does.
- Shadow: `percent` of split-routed requests are scored again by the shadow target, after the primary's answer is
  built and never changing it. The comparison (agreement: equal labels for integer or string outputs, equal argmax
  for class scores, close values for a single score; the largest absolute difference; each side's predict time)
  is kept per model, answered at GET /v2/models/{m}/traffic and emitted as metrics."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from modelfn.errors import ModelfnError, NotReady
from modelfn.model.loaded import LoadedModel
from modelfn.registry import ModelRegistry
from modelfn.registry.labels import Resolutions
from modelfn.registry.loader import number_or_label
from modelfn.service.request import InferenceRecord

if TYPE_CHECKING:  # store/traffic.py is imported only when a model has a traffic.json
    from modelfn.store.traffic import Traffic

log = logging.getLogger("modelfn")


class Routed(Protocol):
    """What the router needs of a request's target (service.dataplane.Target)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int | str | None: ...


@dataclass(frozen=True, slots=True)
class Choice:
    """What the split picked: a target (a label, or a version as its digits) and the shadow target, if any."""

    target: str | None
    shadow: str | None = None


def sticky_bucket(name: str, value: str, total: int) -> int:
    """0 ≤ bucket < total, a pure function of the model name and the header value (never Python's salted hash)."""
    digest = hashlib.sha256(f"{name}\0{value}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % total


def pick(split: Mapping[str, int], bucket: int) -> str:
    """The target whose weight range holds `bucket` (targets in sorted order, as traffic.json keeps them)."""
    for target, weight in split.items():
        if bucket < weight:
            return target
        bucket -= weight
    raise AssertionError("bucket outside the split")  # the caller draws below the sum of the weights


class TrafficRouter:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._traffic: Resolutions[tuple[str, str], tuple[Traffic | None]] = Resolutions()
        self._good: dict[tuple[str, int | str | None], int] = {}
        self._random = random.Random()

    # ---- reading traffic.json ----------------------------------------------------------------------------
    def fresh(self, name: str) -> tuple[Traffic | None] | None:
        """`(the model's traffic,)` if read within the TTL, else None (unknown without the store): no I/O, for
        event loops."""
        return self._traffic.fresh((self.registry.repo.uri, name), self.registry.settings.label_ttl)

    def current(self, name: str) -> Traffic | None:
        """The model's traffic, re-read after the TTL. A malformed or unreadable file keeps the last good traffic
        (Resolutions); with none known it serves the default version until the TTL passes (logged), never an
        error: traffic.json steers requests, it must not stop them."""
        key = (self.registry.repo.uri, name)
        ttl = self.registry.settings.label_ttl
        try:
            return self._traffic.get(key, ttl, lambda: (self.registry.repo.traffic(name),), "traffic")[0]
        except ModelfnError as e:
            log.warning("model %r: %s; the default version serves", name, e.message)
            self._traffic.put(key, (None,))
            return None

    def forget(self) -> None:
        """Re-read every model's traffic.json on its next use (after a SnapStart restore the snapshot's reads are
        stale), keeping what was read as the fallback for a store that does not answer."""
        self._traffic.expire()

    # ---- choosing --------------------------------------------------------------------------------------------
    def choose(self, name: str, traffic: Traffic | None, headers: Mapping[str, str]) -> Choice:
        if traffic is None:
            return Choice(None)
        target: str | None = None
        total = sum(traffic.split.values())
        if total:
            sticky = headers.get(traffic.sticky) if traffic.sticky else None
            bucket = sticky_bucket(name, sticky, total) if sticky is not None else self._random.randrange(total)
            target = pick(traffic.split, bucket)
        shadow = traffic.shadow
        if shadow is None or shadow.percent <= 0 or self._random.random() * 100 >= shadow.percent:
            return Choice(target)
        return Choice(target, shadow.target)

    # ---- loading, with the last good version as the fallback ---------------------------------------------------
    def model(self, target: Routed) -> LoadedModel:
        """The model a routed request runs: the target's version, or, when that fails to load or verify, the
        version that last served this target (else the default), so a broken new version never takes traffic."""
        name = target.name
        try:
            model = self.registry.get(name, target.version)
        except NotReady as e:
            fallback = self._good.get((name, target.version))
            if fallback is None and target.version is not None:
                fallback = self._good.get((name, None)) or self.registry.resolve(name, None)
            if fallback is None:
                raise
            log.warning(
                "model %r %s cannot serve (%s); version %d serves its requests",
                name,
                f"target {target.version!r}" if target.version is not None else "default version",
                e.message,
                fallback,
            )
            return self.registry.get(name, fallback)
        self.remember(target, model.version)
        return model

    def remember(self, target: Routed, version: int) -> None:
        """`version` served a routed request for `target` (the warm path answers from memory, skipping `model`)."""
        key = (target.name, target.version)
        if self._good.get(key) != version:
            self._good[key] = version


# ---- shadow -----------------------------------------------------------------------------------------------------
@dataclass
class ShadowStats:
    shadowed: int = 0
    errors: int = 0
    skipped: int = 0
    rows: int = 0
    agreeing_rows: int = 0
    max_abs_diff: float = 0.0
    primary_seconds: float = 0.0
    shadow_seconds: float = 0.0
    last_error: str | None = None
    shadow_version: int | None = None

    def as_json(self) -> dict[str, Any]:
        compared = self.shadowed - self.errors
        return {
            "shadowed": self.shadowed,
            "shadow_errors": self.errors,
            "skipped": self.skipped,
            "rows": self.rows,
            "agreement": round(self.agreeing_rows / self.rows, 6) if self.rows else None,
            "max_abs_diff": self.max_abs_diff,
            "primary_ms": round(self.primary_seconds / compared * 1000, 4) if compared else None,
            "shadow_ms": round(self.shadow_seconds / compared * 1000, 4) if compared else None,
            "shadow_version": self.shadow_version,
            "last_error": self.last_error,
        }


def _row_agreement(primary: np.ndarray, shadow: np.ndarray) -> tuple[np.ndarray, float]:
    """Per row, whether the two outputs agree, and their largest absolute difference (0 for labels)."""
    rows = primary.shape[0] if primary.ndim else 1
    if primary.shape != shadow.shape:
        return np.zeros(rows, dtype=bool), float("inf") if primary.dtype.kind == "f" else 0.0
    if primary.dtype.kind != "f" or shadow.dtype.kind != "f":
        equal = primary == shadow
        return (equal.reshape(rows, -1).all(axis=1) if primary.ndim else np.array([bool(equal)])), 0.0
    a = primary.astype(np.float64).reshape(rows, -1)
    b = shadow.astype(np.float64).reshape(rows, -1)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    if a.shape[1] > 1:  # class scores: the same class wins
        return a.argmax(axis=1) == b.argmax(axis=1), diff
    return np.isclose(a[:, 0], b[:, 0], rtol=1e-3, atol=1e-6), diff


def compare(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> tuple[int, int, float]:
    """(rows, rows where every common output agrees, largest absolute difference)."""
    agree: np.ndarray | None = None
    worst = 0.0
    for name, p in primary.items():
        if name not in shadow:
            continue
        rows_agree, diff = _row_agreement(np.asarray(p), np.asarray(shadow[name]))
        agree = rows_agree if agree is None or agree.shape != rows_agree.shape else agree & rows_agree
        worst = max(worst, diff)
    if agree is None:
        return 0, 0, 0.0
    return int(agree.size), int(agree.sum()), worst


@dataclass(frozen=True, slots=True)
class Comparison:
    """One shadowed request: what a Lambda invoke emits as metrics (servers export the running totals)."""

    rows: int
    agreeing_rows: int
    max_abs_diff: float
    primary_seconds: float
    shadow_seconds: float
    error: str | None = None


class Shadows:
    """Runs shadow predictions and keeps their comparison per model. Thread-safe: servers run it in worker
    threads, at most `max_in_flight` at once (beyond that a shadow is skipped and counted, so a slow shadow never
    piles up work behind the primary)."""

    def __init__(self, registry: ModelRegistry, max_in_flight: int = 4) -> None:
        self.registry = registry
        self.stats: dict[str, ShadowStats] = {}
        self.last: Comparison | None = None
        """The latest comparison (Lambda reads and clears it after each invoke)."""
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_in_flight)

    def claim(self, name: str) -> bool:
        """A slot for one shadow run; False (counted as skipped) when all are busy."""
        if self._slots.acquire(blocking=False):
            return True
        with self._lock:
            self.stats.setdefault(name, ShadowStats()).skipped += 1
        return False

    def run(self, name: str, target: str, record: InferenceRecord, claimed: bool = False) -> None:
        """Score `record.inputs` with the shadow target and record the comparison. Never raises."""
        if not claimed and not self.claim(name):
            return
        try:
            self._run(name, target, record)
        except Exception as e:  # the comparison itself must never hurt the request that carried it
            log.exception("shadow comparison for model %r failed", name)
            self._record(name, error=f"{type(e).__name__}: {e}")
        finally:
            self._slots.release()

    def _run(self, name: str, target: str, record: InferenceRecord) -> None:
        started = perf_counter()
        try:
            model = self.registry.get(name, number_or_label(target))
            results = model.predict(record.inputs, [n for n in record.outputs if n in model.output_names] or None)
        except ModelfnError as e:
            self._record(name, error=e.message)
            return
        seconds = perf_counter() - started
        rows, agreeing, diff = compare(record.outputs, results)
        self.last = Comparison(rows, agreeing, diff, record.predict_seconds, seconds)
        with self._lock:
            s = self.stats.setdefault(name, ShadowStats())
            s.shadowed += 1
            s.rows += rows
            s.agreeing_rows += agreeing
            s.max_abs_diff = max(s.max_abs_diff, diff)
            s.primary_seconds += record.predict_seconds
            s.shadow_seconds += seconds
            s.shadow_version = model.version

    def _record(self, name: str, error: str) -> None:
        self.last = Comparison(0, 0, 0.0, 0.0, 0.0, error)
        with self._lock:
            s = self.stats.setdefault(name, ShadowStats())
            s.shadowed += 1
            s.errors += 1
            s.last_error = error

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: s.as_json() for name, s in self.stats.items()}


def traffic_report(registry: ModelRegistry, router: TrafficRouter, shadows: Shadows, name: str) -> dict[str, Any]:
    """GET /v2/models/{m}/traffic: the split in effect (each target with its weight, share and the version it
    resolves to now), the sticky header, the shadow, and the shadow comparison this process has seen."""
    registry.versions(name)  # 404 for a model that is not served
    traffic = router.current(name)
    default = registry.resolve(name, None)
    split: list[dict[str, Any]] = []
    total = sum(traffic.split.values()) if traffic else 0
    for target, weight in traffic.split.items() if traffic else ():
        split.append({"target": target, "weight": weight, "share": weight / total, **_resolved(registry, name, target)})
    shadow = None
    if traffic is not None and traffic.shadow is not None:
        shadow = {
            "target": traffic.shadow.target,
            "percent": traffic.shadow.percent,
            **_resolved(registry, name, traffic.shadow.target),
        }
    return {
        "model": name,
        "default_version": default,
        "split": split,
        "sticky": traffic.sticky if traffic else None,
        "shadow": shadow,
        "comparison": shadows.snapshot().get(name),
    }


def _resolved(registry: ModelRegistry, name: str, target: str) -> dict[str, Any]:
    try:
        return {"version": registry.resolve(name, number_or_label(target))}
    except ModelfnError as e:
        return {"version": None, "error": e.message}
