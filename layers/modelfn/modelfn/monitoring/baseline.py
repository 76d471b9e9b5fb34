"""A version's reference statistics (`baseline.json`, written by `modelfn publish --baseline`): per feature, its
count, nulls and bins. Numbers get fixed bin edges from the baseline's own deciles (open at both ends, so every
later value has a bin), min/max/mean/std and a sorted quantile sketch for the KS test; categories (strings,
booleans) get their most frequent values' counts and one "other" count. Drift is measured on exactly these bins,
so the baseline is computed once and never recomputed from the data."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from modelfn.errors import InvalidInput, ModelNotFound, StoreError
from modelfn.monitoring.features import Feature, categories, numbers
from modelfn.store.layout import BASELINE, ArtifactFile, Manifest, ModelRepository, baseline_key

BINS = 10
"""Decile bins: 9 inner edges from the baseline, -inf and +inf at the ends (fewer where values repeat)."""
SKETCH = 1000
"""Values kept per numeric feature for the KS test: all of them up to this many, else evenly spaced quantiles."""
TOP = 20
"""Categories counted by name; the rest share one "other" count."""
OTHER = "(other)"
NULL = "(null)"


class NumericStats(BaseModel):
    edges: list[float] = Field(description="Inner bin edges, ascending: bins (-inf, e0), [e0, e1), ..., [e_last, inf)")
    counts: list[int] = Field(description="Non-null values per bin, len(edges) + 1")
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    sample: list[float] = Field(description="Sorted: every value up to SKETCH of them, else SKETCH quantiles")


class CategoryStats(BaseModel):
    counts: dict[str, int] = Field(description="The TOP most frequent values and their counts")
    other: int = Field(description="Non-null values outside `counts`")


class FeatureBaseline(Feature):
    count: int = Field(description="Non-null values")
    nulls: int
    numeric: NumericStats | None = None
    categories: CategoryStats | None = None

    def labels(self) -> list[str]:
        """A name for each bin of `histogram`, the null bin last."""
        if self.numeric is not None:
            e = [short(x) for x in self.numeric.edges]
            inner = [f"[{a}, {b})" for a, b in itertools.pairwise(e)]
            return [f"< {e[0]}", *inner, f"≥ {e[-1]}", NULL] if e else ["all", NULL]
        assert self.categories is not None
        return [*self.categories.counts, OTHER, NULL]

    def reference(self) -> list[int]:
        """The baseline's own counts per bin of `histogram`, the null bin last."""
        if self.numeric is not None:
            return [*self.numeric.counts, self.nulls]
        assert self.categories is not None
        return [*self.categories.counts.values(), self.categories.other, self.nulls]

    def histogram(self, values: Sequence[Any]) -> list[int]:
        """Counts of `values` in this baseline's bins, the null bin last."""
        if self.numeric is not None:
            x = numbers(values)
            present = x[~np.isnan(x)]
            binned = np.bincount(_bin(self.numeric.edges, present), minlength=len(self.numeric.edges) + 1)
            return [*(int(c) for c in binned), len(x) - len(present)]
        assert self.categories is not None
        seen = Counter(categories(values))
        known = [seen.get(c, 0) for c in self.categories.counts]
        nulls = seen.get(None, 0)
        return [*known, sum(seen.values()) - sum(known) - nulls, nulls]


class Baseline(BaseModel):
    model: str
    version: int
    rows: int
    source: str = Field(description="The file it was computed from, as given to publish")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    features: list[FeatureBaseline]

    def feature(self, name: str) -> FeatureBaseline:
        """The statistics of the feature of this name (KeyError if it has none)."""
        return {f.name: f for f in self.features}[name]


def short(x: float) -> str:
    """A number for a bin's or a chart's label: three significant digits, k/M/G past ten thousand."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(x) >= scale:
            return f"{x / (scale if suffix != 'k' else 1e3):.3g}{suffix}"
    return f"{x:.3g}"


def _bin(edges: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Bin index of each value: i where edges[i-1] <= x < edges[i]."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")


def numeric_stats(x: np.ndarray) -> NumericStats:
    """Statistics of the non-null values `x` (finite float64)."""
    if not len(x):
        return NumericStats(edges=[], counts=[0], min=None, max=None, mean=None, std=None, sample=[])
    inner = np.quantile(x, np.linspace(0, 1, BINS + 1)[1:-1], method="inverted_cdf")
    edges = [float(e) for e in np.unique(inner)]
    counts = np.bincount(_bin(edges, x), minlength=len(edges) + 1)
    n = min(len(x), SKETCH)
    sample = np.sort(x) if n == len(x) else np.quantile(x, (np.arange(n) + 0.5) / n, method="inverted_cdf")
    return NumericStats(
        edges=edges,
        counts=[int(c) for c in counts],
        min=float(x.min()),
        max=float(x.max()),
        mean=float(x.mean()),
        std=float(x.std()),
        sample=[float(v) for v in sample],
    )


def category_stats(values: Sequence[str]) -> CategoryStats:
    counted = sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(counted[:TOP])
    return CategoryStats(counts=top, other=len(values) - sum(top.values()))


def feature_baseline(feature: Feature, values: Sequence[Any]) -> FeatureBaseline:
    """One feature's statistics from all its baseline values (nulls as None or NaN)."""
    if feature.kind == "numeric":
        x = numbers(values)
        present = x[~np.isnan(x)]
        if not np.isfinite(present).all():
            raise InvalidInput(f"feature {feature.name!r} has an infinite value")
        stats = numeric_stats(present)
        return FeatureBaseline(**feature.model_dump(), count=len(present), nulls=len(x) - len(present), numeric=stats)
    texts = categories(values)
    present_texts = [t for t in texts if t is not None]
    return FeatureBaseline(
        **feature.model_dump(),
        count=len(present_texts),
        nulls=len(texts) - len(present_texts),
        categories=category_stats(present_texts),
    )


def compute(
    model: str, version: int, features: Sequence[Feature], columns: Mapping[str, Sequence[Any]], source: str
) -> Baseline:
    """The baseline of these features from their columns of values (every column of one length)."""
    rows = {len(columns[f.name]) for f in features}
    if len(rows) > 1:
        raise InvalidInput(f"feature columns of different lengths: {sorted(rows)}")
    return Baseline(
        model=model,
        version=version,
        rows=rows.pop() if rows else 0,
        source=source,
        features=[feature_baseline(f, columns[f.name]) for f in features],
    )


def encode(baseline: Baseline) -> tuple[bytes, ArtifactFile]:
    """baseline.json's bytes and the manifest's record of them."""
    data = baseline.model_dump_json().encode()
    return data, ArtifactFile(path=BASELINE, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def load(repo: ModelRepository, manifest: Manifest) -> Baseline:
    """The version's baseline, checked against the sha256 its manifest records."""
    name, version = manifest.name, manifest.version
    if manifest.baseline is None:
        raise ModelNotFound(
            f"model {name!r} version {version} has no baseline: publish it with --baseline DATA to measure drift"
        )
    data = repo.store.read_bytes(baseline_key(name, version))
    if hashlib.sha256(data).hexdigest() != manifest.baseline.sha256:
        raise StoreError(f"model {name!r} version {version}: {BASELINE} does not match its manifest's sha256")
    try:
        return Baseline.model_validate_json(data)
    except ValidationError as e:
        raise StoreError(f"model {name!r} version {version}: {BASELINE} is not a valid baseline: {e}") from e
