"""stages.tsfresh_features: parity with tsfresh called directly, NaN sensors, parallelism."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info
from tsfresh import extract_features
from tsfresh.feature_extraction import ComprehensiveFCParameters, EfficientFCParameters, MinimalFCParameters

from stages.tsfresh_features import (
    _PinnedBlasDistributor,
    extract_era_features,
    fc_parameters,
    feature_names,
)

SETTINGS = {"minimal": MinimalFCParameters, "efficient": EfficientFCParameters, "comprehensive": ComprehensiveFCParameters}


def clean_era(n: int = 40, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-03-01", periods=n, freq="1min").astype("datetime64[ns]"),
            "compartment_id": "gh1",
            "air_temp_c": 20 + 3 * np.sin(t / 6) + rng.normal(0, 0.2, n),
            "rain_status": (rng.random(n) < 0.3).astype(float),
            "spot_price_dkk_mwh": np.repeat(rng.normal(500, 50, n // 10 + 1), 10)[:n],
        }
    )


def direct(clean: pd.DataFrame, sensors: list[str], feature_set: str) -> dict[str, pd.Series]:
    """Reference: tsfresh on the wide era (one id, one column per sensor) -> per-sensor series."""
    wide = clean[["timestamp", *sensors]].assign(era="e")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = extract_features(
            wide,
            column_id="era",
            column_sort="timestamp",
            default_fc_parameters=SETTINGS[feature_set](),
            disable_progressbar=True,
            n_jobs=0,
        )
    row = result.loc["e"]
    return {s: row[[c for c in row.index if c.startswith(f"{s}__")]].rename(lambda c, s=s: c[len(s) + 2 :]) for s in sensors}


@pytest.mark.parametrize(
    ("feature_set", "n", "sensors"),
    [
        ("minimal", 40, ["air_temp_c", "rain_status", "spot_price_dkk_mwh"]),
        ("efficient", 40, ["air_temp_c", "rain_status", "spot_price_dkk_mwh"]),
        ("comprehensive", 60, ["air_temp_c"]),
    ],
)
def test_matches_tsfresh_called_directly(feature_set, n, sensors):
    clean = clean_era(n)
    got = extract_era_features(clean, sensors, feature_set)
    expected = direct(clean, sensors, feature_set)

    assert list(got.columns) == ["sensor", "feature", "value"]
    assert got["value"].dtype == np.float64
    assert got["sensor"].unique().tolist() == sensors
    for s in sensors:
        mine = got.loc[got["sensor"] == s].set_index("feature")["value"]
        ref = expected[s]
        assert sorted(mine.index) == sorted(ref.index)
        assert mine.index.is_unique
        ref = ref.reindex(mine.index).astype("float64")
        np.testing.assert_array_equal(np.isnan(mine.to_numpy()), np.isnan(ref.to_numpy()))
        np.testing.assert_allclose(mine.to_numpy(), ref.to_numpy(), rtol=1e-9, atol=0, equal_nan=True)
        assert mine.index.tolist() == feature_names(feature_set)


def test_feature_names():
    minimal = feature_names("minimal")
    assert len(minimal) == len(set(minimal)) == 10
    assert {"mean", "median", "length", "standard_deviation"} <= set(minimal)
    efficient = feature_names("efficient")
    assert 'agg_autocorrelation__f_agg_"mean"__maxlag_40' in efficient
    assert not any(n.startswith("value__") for n in efficient)
    assert feature_names("efficient") is not feature_names("efficient")  # callers get a copy
    with pytest.raises(ValueError, match="unknown feature set 'huge'"):
        feature_names("huge")


def test_fc_parameters():
    assert isinstance(fc_parameters("minimal"), MinimalFCParameters)
    assert isinstance(fc_parameters("efficient"), EfficientFCParameters)
    assert "approximate_entropy" in fc_parameters("comprehensive")
    with pytest.raises(ValueError):
        fc_parameters("Minimal")


def test_sensor_names_that_look_like_internal_columns():
    clean = clean_era(30).rename(columns={"air_temp_c": "value", "rain_status": "sensor"})
    got = extract_era_features(clean, ["value", "sensor"], "minimal")
    assert got["sensor"].unique().tolist() == ["value", "sensor"]
    mean = got.set_index(["sensor", "feature"])["value"]
    assert mean["value", "mean"] == pytest.approx(clean["value"].mean(), rel=1e-12)
    assert mean["sensor", "mean"] == pytest.approx(clean["sensor"].mean(), rel=1e-12)


def test_all_nan_sensor_gives_nan_for_every_name():
    clean = clean_era(n=30)
    clean["dead"] = np.nan
    clean.loc[3, "rain_status"] = np.nan  # any NaN left: tsfresh would refuse it too
    got = extract_era_features(clean, ["dead", "air_temp_c", "rain_status"], "efficient")
    assert got["sensor"].unique().tolist() == ["dead", "air_temp_c", "rain_status"]
    for s in ("dead", "rain_status"):
        rows = got.loc[got["sensor"] == s]
        assert rows["feature"].tolist() == feature_names("efficient")
        assert rows["value"].isna().all()
    assert got.loc[got["sensor"] == "air_temp_c", "value"].notna().any()


def test_n_jobs_two_equals_in_process():
    clean = clean_era(n=30)
    sensors = ["air_temp_c", "rain_status", "spot_price_dkk_mwh"]
    a = extract_era_features(clean, sensors, "efficient", n_jobs=0)
    b = extract_era_features(clean, sensors, "efficient", n_jobs=2)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12)


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]


def test_worker_processes_pin_blas_to_one_thread():
    distributor = _PinnedBlasDistributor(1)
    try:
        threads = distributor.pool.apply(_blas_threads)
    finally:
        distributor.close()
    assert threads and all(t == 1 for t in threads)


def test_empty_era_and_no_sensors():
    clean = clean_era().iloc[:0]
    got = extract_era_features(clean, ["air_temp_c"], "minimal")
    assert got.empty and list(got.columns) == ["sensor", "feature", "value"]
    assert got["value"].dtype == np.float64
    assert extract_era_features(clean_era(), [], "minimal").empty


def test_unknown_feature_set_and_missing_column():
    with pytest.raises(ValueError, match="unknown feature set"):
        extract_era_features(clean_era(), ["air_temp_c"], "nope")
    with pytest.raises(ValueError, match="missing column.*ghost"):
        extract_era_features(clean_era(), ["ghost"], "minimal")


@pytest.mark.parametrize("feature_set", ["minimal", "efficient"])
def test_fast_engine_gives_tsfresh_engine_numbers(feature_set):
    from stages.sample_data import generate_sample
    from stages.preprocess import preprocess_era

    raw = generate_sample(days=1, freq="10min", seed=21)
    sensors = [c for c in raw.columns if c not in ("timestamp", "compartment_id")]
    clean = preprocess_era(raw, sensors)
    clean["co2_status"] = np.nan  # an all-NaN sensor: NaN for every feature with both engines
    fast = extract_era_features(clean, sensors, feature_set, engine="fast")
    ref = extract_era_features(clean, sensors, feature_set, engine="tsfresh")
    assert list(fast["sensor"]) == list(ref["sensor"]) and list(fast["feature"]) == list(ref["feature"])
    a, b = fast["value"].to_numpy(), ref["value"].to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], rtol=1e-9, atol=1e-12)
    assert fast.loc[fast["sensor"] == "co2_status", "value"].isna().all()


def test_unknown_engine_is_refused():
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, freq="min"), "x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="engine"):
        extract_era_features(frame, ["x"], "minimal", engine="turbo")
