"""number_cwt_peaks kernel: exact counts against tsfresh for more widths and tie-heavy series."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from _feature_engine_ref import check

PARAMS = [{"n": n} for n in (1, 2, 3, 4, 5, 7, 10)]


def test_cwt_peaks_many_widths():
    rng = np.random.default_rng(2)
    series = {
        "walk": np.cumsum(rng.normal(size=3000)),
        "noise": rng.normal(size=2500),
        "ints": rng.integers(0, 4, size=2000).astype(float),
        "spikes": np.where(rng.random(1500) < 0.05, 1.0, 0.0),
        "plateaus": np.repeat(rng.normal(size=100), rng.integers(1, 6, size=100)),
        "sine": np.sin(np.arange(2000) / 3.0),
        "short": rng.normal(size=9),
    }
    bad = check("number_cwt_peaks", series, PARAMS)
    assert not bad, "\n".join(bad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-2, 2).map(float), min_size=8, max_size=300))
def test_cwt_peaks_tie_heavy_property(values):
    bad = check("number_cwt_peaks", {"x": np.asarray(values)}, PARAMS)
    assert not bad, "\n".join(bad)
