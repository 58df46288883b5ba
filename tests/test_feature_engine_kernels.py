"""Kernels added for the calculators that used to fall back, and the tie-heavy paths: extra
parameters beyond the comprehensive set, edge cases, and exactness of the shortcuts."""
from __future__ import annotations

import time

import numpy as np
import pytest

from _feature_engine_ref import check


def _ties(rng, n=600):
    return {
        "pow2": np.tile(2.0 ** np.arange(-40, 40), n // 80 + 1)[:n],
        "ints": rng.integers(0, 1000, size=n).astype(float),
        "signed_zeros": np.where(rng.random(n) < 0.5, -0.0, 0.0) + np.repeat([0.0, 1.5], n // 2),
        "tiny": rng.integers(0, 3, size=n) * 5e-324,
        "binary": (rng.random(n) < 0.3).astype(float),
        "rounded": np.round(np.cumsum(rng.normal(size=n)), 1),
        "no_ties": rng.normal(size=n),
    }


@pytest.mark.parametrize("name", [
    "has_duplicate", "ratio_value_number_to_time_series_length",
    "percentage_of_reoccurring_values_to_all_values",
    "percentage_of_reoccurring_datapoints_to_all_datapoints",
    "sum_of_reoccurring_values", "sum_of_reoccurring_data_points", "value_count",
    "binned_entropy", "mean_n_absolute_max",
])
def test_hashed_and_counted_kernels_on_tie_patterns(name):
    bad = check(name, _ties(np.random.default_rng(21)))
    assert not bad, "\n".join(bad[:20])


def test_binned_entropy_and_fourier_entropy_other_bins():
    rng = np.random.default_rng(8)
    series = {"walk": np.cumsum(rng.normal(size=700)), "ints": rng.integers(0, 5, 300).astype(float),
              "edges": np.linspace(0, 1, 101), "const": np.full(50, 2.0)}
    params = [{"max_bins": b} for b in (1, 2, 3, 7, 100)]
    assert not check("binned_entropy", series, params)
    assert not check("fourier_entropy", series, [{"bins": b} for b in (1, 4, 7, 33)])


def test_sample_entropy_long_tie_heavy_series_exact_and_fast():
    rng = np.random.default_rng(13)
    n = 2500
    series = {
        "binary": (rng.random(n) < 0.4).astype(float),
        "binary_runs": np.repeat(rng.integers(0, 2, n // 25), 25).astype(float),
        "levels": np.repeat(np.round(rng.uniform(0, 100, n // 10)), 10),
        "small_ints": rng.integers(-2, 3, n).astype(float),
    }
    bad = check("sample_entropy", series)
    assert not bad, "\n".join(bad)
    from stages.feature_engine.entropy import sample_entropy

    x = np.repeat(rng.integers(0, 2, 100_000 // 30 + 1), 30)[:100_000].astype(float)[None, :]
    sample_entropy(x[:, :100], None)
    t0 = time.perf_counter()
    sample_entropy(x, None)
    assert time.perf_counter() - t0 < 2.0  # tsfresh's pair counting: quadratic (minutes)


def test_ar_coefficient_other_orders():
    rng = np.random.default_rng(17)
    params = [{"coeff": c, "k": k} for k in (1, 2, 5, 10) for c in range(0, k + 2)]
    series = {
        "ar2": np.convolve(rng.normal(size=520), [1, 0.5, -0.3], "valid")[:500],
        "walk": np.cumsum(rng.normal(size=800)),
        "runs": np.repeat(rng.normal(size=40), 20),
        "binary": (rng.random(300) < 0.5).astype(float),
        "const": np.full(200, 4.0),
        "one_jump": np.r_[np.zeros(100), np.ones(100)],
        "short": rng.normal(size=25),
    }
    bad = check("ar_coefficient", series, params)
    assert not bad, "\n".join(bad[:20])


def test_friedrich_and_langevin_other_parameters():
    rng = np.random.default_rng(19)
    series = {
        "walk": np.cumsum(rng.normal(size=900)),
        "noise": rng.normal(size=400),
        "ints": rng.integers(0, 50, 500).astype(float),
        "binary": (rng.random(300) < 0.5).astype(float),
        "few": rng.normal(size=12),
        "huge": rng.normal(size=200) * 1e250,
    }
    params = [{"coeff": c, "m": m, "r": r} for m in (1, 2, 5) for r in (2, 5, 50) for c in range(m + 2)]
    assert not check("friedrich_coefficients", series, params)
    lp = [{"m": m, "r": r} for m in (1, 2, 5) for r in (2, 5, 50)]
    assert not check("max_langevin_fixed_point", series, lp)


def test_cwt_prefix_convolution_is_pywts_numbers():
    import pywt

    from stages.feature_engine.spectral import _cwt_head

    rng = np.random.default_rng(23)
    for n in (1, 7, 33, 160, 321, 336, 338, 340, 1000, 4000):
        X = np.cumsum(rng.normal(size=(2, n)), axis=1) * 3.7 + 100
        for w in (1, 2, 5, 10, 20, 37):
            k = min(n, 15)
            ref = np.stack([pywt.cwt(x, scales=(w,), wavelet="mexh")[0][0, :k] for x in X])
            assert np.array_equal(_cwt_head(X, w, k), ref), (n, w)
    params = [{"widths": (3, 7), "coeff": c, "w": w} for c in (0, 4, 40) for w in (3, 7)]
    params.append({"widths": (3, 7), "coeff": 0, "w": 5})  # not in widths: tsfresh raises
    series = {"walk": np.cumsum(rng.normal(size=300)), "short": rng.normal(size=10)}
    assert not check("cwt_coefficients", series, params)


def test_linear_trend_and_agg_autocorrelation_edges():
    rng = np.random.default_rng(29)
    t = np.arange(2000.0)
    series = {
        "exact_line": 3.0 + 0.5 * t,
        "near_line": 3.0 + 0.5 * t + rng.normal(scale=1e-6, size=t.size),
        "const": np.full(2000, 1.1),
        "fft_path": np.cumsum(rng.normal(size=1500)),
        "short": rng.normal(size=9),
    }
    assert not check("linear_trend", series)
    params = [{"f_agg": f, "maxlag": L} for f in ("mean", "median", "var") for L in (1, 5, 40, 100)]
    assert not check("agg_autocorrelation", series, params)


def test_query_similarity_count_with_a_query_goes_to_tsfresh():
    rng = np.random.default_rng(31)
    x = np.sin(np.arange(300) / 5.0) + rng.normal(scale=0.1, size=300)
    params = [{"query": None, "threshold": 0.0}, {"query": x[10:20], "threshold": 2.0, "normalize": True}]
    assert not check("query_similarity_count", {"x": x}, params)


def test_fused_pairwise_sums_are_numpys_bit_for_bit():
    from stages.feature_engine import fused

    rng = np.random.default_rng(37)
    for n in (2, 8, 9, 127, 128, 129, 130, 1000, 8192, 8193, 20001):
        X = rng.normal(size=(2, n)) * rng.lognormal(0, 4, size=(2, n))
        assert np.array_equal(fused.abs_diff_sums(X), np.sum(np.abs(np.diff(X, axis=1)), axis=1)), n
    x = np.abs(rng.normal(size=(1, 5000)))
    x[0, :10] = 0.0
    qs = np.array([0.0, 1e-300, 0.1, 0.5, 0.99, 1.0, 1.5])
    ref = (np.array([np.argmax(np.cumsum(x[0]) / np.sum(x[0]) >= q) for q in qs]) + 1) / 5000
    assert np.array_equal(fused.index_mass(x, qs)[0], ref)


def _long_rows(n, seed=11):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return {
        "walk": 140.0 + np.cumsum(rng.normal(scale=0.05, size=n)) + rng.normal(scale=0.2, size=n),
        "noise": rng.normal(size=n),
        "sine": 5 * np.sin(2 * np.pi * t / 1440.0) + 0.01 * rng.normal(size=n),
        "fine_trend": np.linspace(0.0, 1.0, n),
        "const": np.full(n, 3.25),
        "zeros": np.zeros(n),
        "binary_runs": np.repeat(rng.random(n // 30 + 1) < 0.3, 30)[:n].astype(float),
        "hourly_price": np.repeat(np.round(rng.uniform(200, 900, n // 60 + 1), 2), 60)[:n],
        "skewed": rng.lognormal(0, 2, size=n) - 3.0,
        "neg_large": -1e6 + rng.normal(size=n),
        "signed_zeros": np.where(rng.random(n) < 0.5, -0.0, 0.0),
        "aliased_period": np.tile(np.arange(48.0), n // 48 + 1)[:n],  # the median's stride
    }


@pytest.mark.parametrize("n", [4097, 5000, 100_000])
@pytest.mark.parametrize("name", [
    "variance", "standard_deviation", "variance_larger_than_standard_deviation",
    "variation_coefficient", "root_mean_square", "absolute_maximum", "median",
    "symmetry_looking", "skewness", "kurtosis", "cid_ce", "large_standard_deviation",
    "ratio_beyond_r_sigma", "abs_energy",
])
def test_long_row_one_pass_kernels(name, n):
    """Above 4,096 points the moments take reassociated one-pass sums (and the median one
    partition): within tolerance of tsfresh on long rows of every shape."""
    bad = check(name, _long_rows(n))
    assert not bad, "\n".join(bad[:20])


def test_long_row_median_is_numpys_bit_for_bit():
    from stages.feature_engine import simple

    rng = np.random.default_rng(5)
    for n in (16_384, 16_385, 100_000, 100_001):
        rows = np.stack([r for r in _long_rows(n).values()] + [
            rng.normal(size=n), np.sort(rng.normal(size=n)), rng.integers(-3, 4, size=n) * 1.0,
            (rng.random(n) < 0.5) * 1.0,
        ])
        assert np.array_equal(simple._median(rows), np.median(rows, axis=1))
