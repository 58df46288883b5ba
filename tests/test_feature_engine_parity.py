"""Parity of every fast kernel with tsfresh's own calculator, over all parameter combinations
of the comprehensive set, on fixed cases and on hypothesis-generated series."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _feature_engine_ref import COMPREHENSIVE, check, fixed_cases
from stages.feature_engine import KERNELS

QUADRATIC = {"sample_entropy", "approximate_entropy"}
KERNEL_NAMES = sorted(n for n in KERNELS if n in COMPREHENSIVE)

_CASES = fixed_cases()
_CASES_QUADRATIC = {k: v for k, v in fixed_cases(long_n=1200).items()}


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_matches_tsfresh_on_fixed_cases(name):
    cases = _CASES_QUADRATIC if name in QUADRATIC else _CASES
    bad = check(name, cases)
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_matches_tsfresh_on_a_2d_group(name):
    """Several sensors of one length in one kernel call (the 2-D path) - each row stays its own."""
    rng = np.random.default_rng(3)
    n = 300
    group = {
        "a": np.cumsum(rng.normal(size=n)),
        "b": (rng.random(n) < 0.5).astype(float),
        "c": np.full(n, -1.0),
        "d": rng.normal(size=n) * 1e3 + 1e4,
        "e": np.repeat(rng.normal(size=n // 50), 50),
    }
    bad = check(name, group)
    assert not bad, "\n".join(bad[:20])


_values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64),
    st.integers(-3, 3).map(float),
)


@pytest.mark.parametrize("name", KERNEL_NAMES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.one_of(
            st.lists(_values, min_size=0, max_size=80),
            st.lists(st.integers(0, 1).map(float), min_size=0, max_size=80),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_kernel_matches_tsfresh_property(name, data):
    series = {f"s{i}": np.asarray(x, dtype=float) for i, x in enumerate(data)}
    bad = check(name, series)
    assert not bad, "\n".join(bad[:20])


def test_benford_first_digits_at_boundaries():
    vals = np.array([0.3, 0.1 + 0.2, 1.0, 0.9999999999999999, 10.0, 9.999999999999998, 1e-300,
                     5e-324, 1e300, 0.0, -0.0, 123.456, 2.0000000000000004, 7e22, 0.07])
    rng = np.random.default_rng(9)
    series = {"edges": np.tile(vals, 10), "mixed": np.r_[vals, rng.lognormal(0, 5, size=500)]}
    bad = check("benford_correlation", series)
    assert not bad, "\n".join(bad)
