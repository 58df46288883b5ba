"""augmented_dickey_fuller kernel against statsmodels/tsfresh for every autolag rule."""
from __future__ import annotations

import numpy as np
import pytest

from _feature_engine_ref import check

PARAMS = {
    a: [{"attr": "teststat", "autolag": a}, {"attr": "pvalue", "autolag": a}, {"attr": "usedlag", "autolag": a}]
    for a in ("AIC", "BIC", "t-stat")
}


@pytest.mark.parametrize("autolag", sorted(PARAMS))
def test_adf_all_autolag_rules(autolag):
    rng = np.random.default_rng(11)
    series = {}
    for n in (20, 21, 30, 57, 100, 333, 2000):
        series[f"walk{n}"] = np.cumsum(rng.normal(size=n))
        series[f"ar{n}"] = np.convolve(rng.normal(size=n + 5), [1, 0.6, -0.3, 0.2], "valid")[:n]
        series[f"binary{n}"] = (rng.random(n) < 0.3).astype(float)
        series[f"runs{n}"] = np.repeat(rng.integers(0, 3, size=n // 5 + 1), 5)[:n].astype(float)
    series["const_then_jump"] = np.r_[np.zeros(60), 1.0]
    bad = check("augmented_dickey_fuller", series, PARAMS[autolag])
    assert not bad, "\n".join(bad[:20])


def test_adf_without_autolag_and_unknown_attr():
    rng = np.random.default_rng(5)
    params = [{"attr": "teststat", "autolag": None}, {"attr": "usedlag", "autolag": None},
              {"attr": "nonsense", "autolag": "AIC"}, {"attr": "pvalue"}]
    series = {f"s{n}": np.cumsum(rng.normal(size=n)) for n in (25, 80, 500)}
    bad = check("augmented_dickey_fuller", series, params)
    assert not bad, "\n".join(bad[:20])
