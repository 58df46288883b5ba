"""The engine's contract: tsfresh's rows and names, NaN series, mixed lengths, n_jobs, fallback."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tsfresh import extract_features
from tsfresh.feature_extraction import EfficientFCParameters, MinimalFCParameters

from _feature_engine_ref import mismatches
from stages.feature_engine import extract_features_fast, kernel_coverage


def _series(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "air_temp_c": 20 + np.cumsum(rng.normal(scale=0.1, size=n)),
        "co2_status": (rng.random(n) < 0.4).astype(float),
        "spot_price_dkk_mwh": np.repeat(rng.uniform(100, 900, size=n // 60 + 1), 60)[:n],
    }


def _tsfresh_long(series, params, n_jobs=0) -> dict[str, dict[str, float]]:
    df = pd.concat(
        [pd.DataFrame({"sensor": s, "value": v}) for s, v in series.items()], ignore_index=True
    )
    wide = extract_features(
        df, column_id="sensor", column_value="value", default_fc_parameters=params,
        n_jobs=n_jobs, disable_progressbar=True,
    )
    return {
        str(s): {c.split("__", 1)[1]: float(wide.loc[s, c]) for c in wide.columns}
        for s in wide.index
    }


def _as_dict(df) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s, f, v in zip(df["sensor"], df["feature"], df["value"]):
        assert f not in out.setdefault(s, {}), f"duplicate row {s} {f}"
        out[s][f] = v
    return out


@pytest.mark.parametrize("params", [MinimalFCParameters(), EfficientFCParameters()], ids=["minimal", "efficient"])
def test_rows_equal_tsfresh_extract_features(params):
    series = _series()
    ref = _tsfresh_long(series, params)
    df = extract_features_fast(series, params)
    assert list(df.columns) == ["sensor", "feature", "value"]
    assert df["value"].dtype == np.float64
    got = _as_dict(df)
    assert set(got) == set(ref)
    for s in ref:
        bad = mismatches(ref[s], got[s])
        assert not bad, "\n".join(bad[:20])


def test_nan_series_gives_nan_features_and_others_are_unaffected():
    series = _series()
    series["broken"] = series["air_temp_c"].copy()
    series["broken"][5] = np.nan
    series["all_nan"] = np.full(300, np.nan)
    df = extract_features_fast(series, EfficientFCParameters())
    got = _as_dict(df)
    assert set(got["broken"]) == set(got["air_temp_c"])
    assert all(np.isnan(v) for v in got["broken"].values())
    assert all(np.isnan(v) for v in got["all_nan"].values())
    ref = _tsfresh_long({"air_temp_c": series["air_temp_c"]}, EfficientFCParameters())
    assert not mismatches(ref["air_temp_c"], got["air_temp_c"])


def test_mixed_lengths_and_empty_series():
    rng = np.random.default_rng(1)
    series = {"a": rng.normal(size=50), "b": rng.normal(size=120), "c": rng.normal(size=50),
              "empty": np.array([]), "one": np.array([1.5])}
    params = EfficientFCParameters()
    got = _as_dict(extract_features_fast(series, params))
    ref = _tsfresh_long({k: series[k] for k in ("a", "b", "c", "one")}, params)
    for s in ("a", "b", "c", "one"):
        assert not mismatches(ref[s], got[s]), s
    assert set(got["empty"]) == set(got["a"])  # same names, whatever tsfresh gives on no data


def test_n_jobs_gives_the_same_rows():
    series = {f"s{i}": v for i, v in enumerate(_series(n=8000).values())}
    params = {k: EfficientFCParameters()[k] for k in ("mean", "augmented_dickey_fuller", "number_cwt_peaks", "quantile")}
    a = extract_features_fast(series, params, n_jobs=0)
    b = extract_features_fast(series, params, n_jobs=2)
    pd.testing.assert_frame_equal(a, b)


def test_switch_back_to_plain_tsfresh_functions():
    series = _series(n=200)
    params = EfficientFCParameters()
    a = _as_dict(extract_features_fast(series, params))
    b = _as_dict(extract_features_fast(series, params, use_kernels=False))
    for s in series:
        assert not mismatches(b[s], a[s])


def test_custom_callable_calculator_falls_back():
    def my_feature(x):
        return float(np.sum(x > 0))

    my_feature.fctype = "simple"
    df = extract_features_fast({"a": np.array([1.0, -1.0, 2.0])}, {my_feature: None, "mean": None})
    assert _as_dict(df)["a"] == {"my_feature": 2.0, "mean": pytest.approx(2.0 / 3.0)}


def test_kernel_coverage_lists_the_comprehensive_set():
    cov = kernel_coverage()
    assert cov["mean"] is True
    assert "linear_trend_timewise" in cov
    assert all(isinstance(v, bool) for v in cov.values())


def test_parameters_a_kernel_does_not_take_go_to_tsfresh():
    """Unusual parameters (a pvalue attr, an aggregator ndarray lacks) get tsfresh's answer
    (NaN where tsfresh raises) instead of crashing the stage."""
    rng = np.random.default_rng(4)
    x = np.cumsum(rng.normal(size=200))
    params = {"agg_linear_trend": [{"attr": "pvalue", "chunk_len": 5, "f_agg": "mean"}],
              "partial_autocorrelation": [{"lag": 150}]}
    got = _as_dict(extract_features_fast({"x": x}, params))["x"]
    ref = _tsfresh_long({"x": x}, params)["x"]
    assert not mismatches(ref, got)
    bad = {"agg_linear_trend": [{"attr": "slope", "chunk_len": 5, "f_agg": "median"}]}
    got = _as_dict(extract_features_fast({"x": x}, bad))["x"]
    assert list(got) == ['agg_linear_trend__attr_"slope"__chunk_len_5__f_agg_"median"']
    assert np.isnan(list(got.values())[0])
