"""stages.selection: variance and greedy correlation filtering, blocked = dense, PCA."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.selection import select_features


def reference(matrix: pd.DataFrame, variance_threshold: float, threshold: float) -> tuple[list[str], dict[str, str]]:
    """Dense, obvious version: pandas' pairwise-complete corr, then the greedy loop."""
    m = matrix.replace([np.inf, -np.inf], np.nan)
    var = m.var(ddof=0)
    candidates = [c for c in m.columns if m[c].notna().any() and var[c] > variance_threshold]
    corr = m[candidates].corr(min_periods=2)
    kept: list[str] = []
    partner: dict[str, str] = {}
    for c in candidates:
        hits = [k for k in kept if abs(corr.loc[k, c]) > threshold]
        if hits:
            partner[c] = hits[0]
        else:
            kept.append(c)
    return kept, partner


def by_feature(result) -> pd.DataFrame:
    return result.table.set_index("feature")


def test_constructed_cases():
    rng = np.random.default_rng(0)
    n = 40
    a = rng.normal(size=n)
    b = rng.normal(size=n)
    noise = rng.normal(size=n)
    neg = -a + 0.14 * np.std(a) * (noise - noise.mean()) / np.std(noise)
    matrix = pd.DataFrame(
        {
            "air_temp_c__mean": a,
            "air_temp_c__constant": np.full(n, 3.25),
            "air_temp_c__copy": 2.5 * a - 7.0,  # exact linear copy
            "vpd_hpa__anti": neg,
            "co2_measured_ppm__mean": b,
            "dead__mean": np.nan,
        }
    )
    r_neg = np.corrcoef(a, neg)[0, 1]
    assert -0.995 < r_neg < -0.98  # the construction is what the test says

    result = select_features(matrix)
    t = by_feature(result)
    assert t.loc["air_temp_c__constant", "reason"] == "low_variance"
    assert t.loc["air_temp_c__constant", "variance"] == 0.0
    assert (t.loc["air_temp_c__copy", "reason"], t.loc["air_temp_c__copy", "partner"]) == ("correlated", "air_temp_c__mean")
    assert (t.loc["vpd_hpa__anti", "reason"], t.loc["vpd_hpa__anti", "partner"]) == ("correlated", "air_temp_c__mean")
    assert t.loc["dead__mean", "reason"] == "all_nan" and np.isnan(t.loc["dead__mean", "variance"])
    assert result.selected == ["air_temp_c__mean", "co2_measured_ppm__mean"]
    assert t.loc[result.selected, "partner"].tolist() == ["", ""]
    assert t["kept"].tolist() == [f in result.selected for f in t.index]
    assert t.loc["air_temp_c__copy", "variance"] == pytest.approx(np.var(2.5 * a), rel=1e-12)

    # a looser threshold no longer drops the -0.99 one; a stricter variance threshold drops more
    t2 = by_feature(select_features(matrix, correlation_threshold=0.995))
    assert t2.loc["vpd_hpa__anti", "reason"] == "kept"
    t3 = by_feature(select_features(matrix, variance_threshold=2.0))
    assert t3.loc["air_temp_c__mean", "reason"] == "low_variance"
    assert t3.loc["air_temp_c__copy", "reason"] == "kept"  # its partner is gone, so it stays


def test_greedy_only_drops_against_kept_columns():
    """A~B and B~C but not A~C: B goes (partner A), C stays because B was not kept."""
    t = np.linspace(0, 1, 50)
    rng = np.random.default_rng(1)
    base = rng.normal(size=50)
    other = rng.normal(size=50)
    a = base
    b = base + 0.35 * other
    c = base + 0.7 * other
    matrix = pd.DataFrame({"a": a, "b": b, "c": c, "t": t})
    corr = matrix.corr()
    thr = (max(corr.loc["a", "b"], corr.loc["b", "c"]) + corr.loc["a", "c"]) / 2
    assert corr.loc["a", "b"] > thr and corr.loc["b", "c"] > thr and corr.loc["a", "c"] < thr
    table = by_feature(select_features(matrix, correlation_threshold=thr))
    assert table.loc["b", "partner"] == "a"
    assert table.loc["c", "reason"] == "kept"


def test_one_era_means_low_variance_everywhere():
    matrix = pd.DataFrame([[1.0, 2.0, np.nan, 4.0]], columns=["w", "x", "y", "z"])
    result = select_features(matrix, pca_components=3)
    assert result.table["reason"].tolist() == ["low_variance", "low_variance", "all_nan", "low_variance"]
    assert result.selected == [] and result.pca_explained_variance == []


def test_inf_is_missing_and_nan_rows_use_pairwise_complete_eras():
    rng = np.random.default_rng(4)
    a = rng.normal(size=20)
    copy = 3 * a
    copy[[2, 5]] = np.nan  # still an exact copy where both exist
    noisy = rng.normal(size=20)
    noisy[7] = np.inf
    matrix = pd.DataFrame({"a": a, "copy": copy, "noisy": noisy})
    t = by_feature(select_features(matrix))
    assert (t.loc["copy", "reason"], t.loc["copy", "partner"]) == ("correlated", "a")
    assert t.loc["noisy", "reason"] == "kept" and np.isfinite(t.loc["noisy", "variance"])


def random_matrix(seed: int, n: int, p: int, nan_fraction: float) -> pd.DataFrame:
    """Groups of columns sharing a factor at random noise levels: some pairs above, some below."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, max(p // 6, 1)))
    cols = {}
    for j in range(p):
        f = factors[:, rng.integers(factors.shape[1])]
        cols[f"f{j:03d}"] = rng.normal(0, 5) * f + rng.exponential(0.25) * rng.normal(size=n)
    m = pd.DataFrame(cols)
    m = m.mask(rng.random(m.shape) < nan_fraction)
    m[m.columns[rng.integers(p)]] = 1.5  # a constant one
    return m


def assert_same_as_reference(matrix: pd.DataFrame, threshold: float, block_size: int) -> None:
    corr = matrix.corr(min_periods=2).to_numpy()
    close = np.abs(np.abs(corr[~np.isnan(corr)]) - threshold) < 1e-9
    if close.any():  # too close to call in floating point: not a fair comparison
        return
    kept, partner = reference(matrix, 1e-10, threshold)
    result = select_features(matrix, correlation_threshold=threshold, block_size=block_size)
    assert result.selected == kept
    table = by_feature(result)
    assert {f: table.loc[f, "partner"] for f in table.index if table.loc[f, "reason"] == "correlated"} == partner


@pytest.mark.parametrize("block_size", [1, 4, 7, 1024])
def test_blocked_equals_dense_reference(block_size):
    matrix = random_matrix(seed=block_size, n=25, p=60, nan_fraction=0.05)
    kept, partner = reference(matrix, 1e-10, 0.9)
    assert 5 < len(partner) < 55  # the data exercises both outcomes
    assert_same_as_reference(matrix, 0.9, block_size)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 15),
    p=st.integers(2, 25),
    nan_fraction=st.sampled_from([0.0, 0.1, 0.3]),
    threshold=st.sampled_from([0.5, 0.8, 0.95]),
    block_size=st.integers(1, 9),
)
def test_blocked_equals_dense_reference_property(seed, n, p, nan_fraction, threshold, block_size):
    assert_same_as_reference(random_matrix(seed, n, p, nan_fraction), threshold, block_size)


def test_many_columns_without_a_dense_matrix():
    p, n = 8_000, 12
    rng = np.random.default_rng(9)
    matrix = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"s__f{j}" for j in range(p)])
    dense_bytes = p * p * 8
    tracemalloc.start()
    try:
        result = select_features(matrix, block_size=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 5, f"peak {peak / 2**20:.0f} MiB"
    assert len(result.table) == p
    assert set(result.table["reason"]) <= {"kept", "correlated"}
    # spot-check the first few drops against numpy directly
    for feature, partner in result.table.loc[result.table["reason"] == "correlated", ["feature", "partner"]].head(5).itertuples(index=False):
        assert abs(np.corrcoef(matrix[feature], matrix[partner])[0, 1]) > 0.95
        assert result.table.set_index("feature").loc[partner, "kept"]


def test_pca_explained_variance_matches_correlation_eigenvalues():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 4)) @ rng.normal(size=(4, 6)) + 0.3 * rng.normal(size=(30, 6))
    matrix = pd.DataFrame(x, columns=[f"c{j}" for j in range(6)])
    result = select_features(matrix, correlation_threshold=0.999, pca_components=3)
    assert len(result.selected) == 6
    eig = np.sort(np.linalg.eigvalsh(np.corrcoef(x.T)))[::-1]
    np.testing.assert_allclose(result.pca_explained_variance, eig[:3] / eig.sum(), rtol=1e-9)
    assert select_features(matrix).pca_explained_variance == []
    # two eras: at most two components (threshold 1.0 keeps all: no |r| exceeds 1)
    assert len(select_features(matrix.iloc[:2], correlation_threshold=1.0, pca_components=5).pca_explained_variance) == 2


def test_table_types_and_errors():
    result = select_features(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [3.0, 1.0, 2.0]}))
    t = result.table
    assert list(t.columns) == ["feature", "variance", "kept", "reason", "partner"]
    assert t["variance"].dtype == np.float64 and t["kept"].dtype == bool
    with pytest.raises(ValueError, match="duplicate"):
        select_features(pd.DataFrame([[1.0, 2.0]], columns=["a", "a"]))
