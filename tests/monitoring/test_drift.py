"""PSI and KS against their definitions and scipy, and the per-feature verdict on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelfn.monitoring.baseline import Baseline, compute, short
from modelfn.monitoring.drift import EPSILON, kolmogorov_sf, ks_2samp, measure, psi
from modelfn.monitoring.features import Feature
from tests.monitoring.synthetic import CITIES, FEATURES, mixed_data, tabular_data

TABULAR = [Feature(name=n, input="x", column=j, kind="numeric") for j, n in enumerate(FEATURES)]


def _baseline(data: np.ndarray) -> Baseline:
    return compute("tab", 1, TABULAR, {n: data[:, j].tolist() for j, n in enumerate(FEATURES)}, "test")


def test_psi_is_zero_for_the_same_shares_and_follows_its_formula() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == 0.0
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert psi([50, 50], [90, 10]) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


def test_psi_of_an_empty_bin_is_finite_through_epsilon() -> None:
    value = psi([100, 0], [50, 50])
    p, q = np.array([1.0, EPSILON]), np.array([0.5, 0.5])
    assert math.isfinite(value)
    assert value == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


@pytest.mark.parametrize("x", [0.05, 0.3, 0.7, 0.99, 1.0, 1.2, 1.8, 2.5, 4.0])
def test_kolmogorov_sf_is_scipys_kstwobign(x: float) -> None:
    assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)


def test_ks_statistic_is_scipys_and_the_p_value_its_asymptotic_one() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=1000), rng.normal(0.1, 1, size=700)
    d, p = ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(stats.kstwobign.sf(d * math.sqrt(1000 * 700 / 1700)), rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=0.15)  # scipy's finite-n correction


def test_same_distribution_flags_nothing() -> None:
    report = measure(_baseline(tabular_data(5000, 1)), _columns(tabular_data(2000, 2)), records=400)
    assert report.drifted == []
    assert all(f.psi is not None and f.psi < 0.05 for f in report.features)
    assert all(f.ks_pvalue is not None and f.ks_pvalue > 0.001 for f in report.features)


def test_one_shifted_feature_is_the_one_flagged() -> None:
    report = measure(_baseline(tabular_data(5000, 1)), _columns(tabular_data(2000, 2, {"c": 1.0})), records=400)
    assert report.drifted == ["c"]
    c = next(f for f in report.features if f.name == "c")
    assert c.psi is not None and c.psi > 0.2 and c.ks_pvalue is not None and c.ks_pvalue < 1e-6
    assert sum(c.current) == 2000 and sum(c.baseline) == 5000 and len(c.bins) == len(c.current)


def test_category_drift_counts_unseen_values_as_other() -> None:
    features = [Feature(name="city", input="city", column=None, kind="category")]
    base = compute("m", 1, features, {"city": mixed_data(4000, 1)["city"].tolist()}, "test")
    same = measure(base, {"city": mixed_data(2000, 2)["city"].tolist()}, records=10)
    assert same.drifted == []
    moved = mixed_data(2000, 3, [0.1, 0.2, 0.3, 0.4])["city"].tolist()
    shifted = measure(base, {"city": moved + ["berlin"] * 100 + [None] * 10}, records=10)
    f = shifted.features[0]
    assert shifted.drifted == ["city"] and f.ks_pvalue is None
    assert f.bins == [*sorted(CITIES, key=lambda c: -[0.4, 0.3, 0.2, 0.1][CITIES.index(c)]), "(other)", "(null)"]
    assert f.current[-2:] == [100, 10] and f.nulls == 10 and f.count == 2100


def _columns(data: np.ndarray) -> dict[str, list[float]]:
    return {n: data[:, j].tolist() for j, n in enumerate(FEATURES)}


def test_bin_labels_are_short() -> None:
    assert [short(x) for x in (0.012345, -3.14159, 24812.3, 3.2e6, 7e9)] == ["0.0123", "-3.14", "24.8k", "3.2M", "7G"]
    features = [Feature(name="n", input="n", column=None, kind="numeric")]
    labels = compute("m", 1, features, {"n": [1.0, 2.0, 3.0] * 10}, "test").features[0].labels()
    assert labels == ["< 1", "[1, 2)", "[2, 3)", "≥ 3", "(null)"]
