"""stages.preprocess: regular grid, duplicates, imputation, binary coercion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.preprocess import BINARY_SENSORS, preprocess_era, sampling_step

T0 = pd.Timestamp("2024-03-01 00:00:00")


def at(*minutes: float) -> pd.Series:
    return pd.Series([T0 + pd.Timedelta(minutes=m) for m in minutes]).astype("datetime64[ns]")


def test_sampling_step_is_the_datas_own_step():
    assert sampling_step(at(0, 1, 2, 3, 10, 11)) == pd.Timedelta("1min")
    assert sampling_step(at(10, 0, 5, 5, 15, 20)) == pd.Timedelta("5min")  # unsorted, duplicate
    assert sampling_step(at(0, 1, 3)) == pd.Timedelta("1min")  # lower median: a step the data has
    with pytest.raises(ValueError):
        sampling_step(at(4, 4))


def test_grid_is_regular_sorted_and_spans_first_to_last():
    rng = np.random.default_rng(3)
    minutes = [m for m in range(0, 120, 2) if not 30 <= m < 50]  # a 20-minute gap
    order = rng.permutation(len(minutes))
    frame = pd.DataFrame({"timestamp": at(*np.asarray(minutes)[order]), "x": rng.normal(size=len(minutes))[order]})
    frame["compartment_id"] = "gh1"  # extra columns are fine and dropped
    out = preprocess_era(frame, ["x"])
    assert list(out.columns) == ["timestamp", "x"]
    assert out["timestamp"].dtype == np.dtype("datetime64[ns]") and out["x"].dtype == np.float64
    assert out["timestamp"].iloc[0] == T0 and out["timestamp"].iloc[-1] == T0 + pd.Timedelta(minutes=118)
    assert (out["timestamp"].diff().dropna() == pd.Timedelta("2min")).all()
    assert len(out) == 60
    # values that were present are untouched
    original = frame.set_index("timestamp")["x"]
    assert np.allclose(out.set_index("timestamp").loc[original.index, "x"], original)


def test_duplicates_are_collapsed_by_mean_ignoring_nan():
    frame = pd.DataFrame({"timestamp": at(0, 1, 1, 1, 2), "x": [1.0, 2.0, 6.0, np.nan, 3.0]})
    out = preprocess_era(frame, ["x"])
    assert out["timestamp"].is_unique and len(out) == 3
    assert out["x"].tolist() == [1.0, 4.0, 3.0]


def test_gaps_forward_filled_then_backward_filled_within_the_era():
    frame = pd.DataFrame({"timestamp": at(0, 1, 2, 3, 6, 7), "x": [np.nan, np.nan, 5.0, np.nan, 8.0, np.nan]})
    out = preprocess_era(frame, ["x"])
    # leading NaN from the first reading (bfill), interior NaN and missing rows from the last one (ffill)
    assert out["x"].tolist() == [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 8.0, 8.0]


def test_imputation_does_not_cross_eras():
    """Each era is preprocessed alone: the second era's leading gap is filled from its own data."""
    first = pd.DataFrame({"timestamp": at(0, 1, 2), "x": [1.0, 2.0, 3.0]})
    second = pd.DataFrame({"timestamp": at(3, 4, 5), "x": [np.nan, np.nan, 9.0]})
    out = preprocess_era(second, ["x"])
    assert out["x"].tolist() == [9.0, 9.0, 9.0]
    assert preprocess_era(first, ["x"])["x"].tolist() == [1.0, 2.0, 3.0]


def test_binary_sensors_are_exactly_zero_or_one():
    frame = pd.DataFrame(
        {
            "timestamp": at(0, 0, 1, 1, 2, 3),
            "rain_status": [0.0, 1.0, 0.3, 0.0, 2.0, np.nan],  # named: averaged 0.5 -> 1, 0.15 -> 0, 2 -> 1
            "pump_on": [1.0, 0.0, 0.0, 0.0, 1.0, 1.0],  # all 0/1: binary by value
            "temp": [0.0, 1.0, 0.0, 0.0, 1.0, 0.5],  # 0.5 present: continuous
        }
    )
    out = preprocess_era(frame, ["rain_status", "pump_on", "temp"])
    assert "rain_status" in BINARY_SENSORS
    assert out["rain_status"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert out["pump_on"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert out["temp"].tolist() == [0.5, 0.0, 1.0, 0.5]


def test_all_nan_sensor_survives():
    frame = pd.DataFrame({"timestamp": at(0, 1, 3), "x": [1.0, 2.0, 3.0], "dead": [np.nan] * 3, "co2_status": np.nan})
    out = preprocess_era(frame, ["x", "dead", "co2_status"])
    assert len(out) == 4
    assert out["dead"].isna().all() and out["co2_status"].isna().all()
    assert out["x"].tolist() == [1.0, 2.0, 2.0, 3.0]


def test_one_row_era_is_one_row():
    out = preprocess_era(pd.DataFrame({"timestamp": at(5), "x": ["7.5"]}), ["x"])
    assert len(out) == 1 and out["x"].tolist() == [7.5] and out["timestamp"].iloc[0] == T0 + pd.Timedelta(minutes=5)


def test_empty_era_is_empty_with_columns():
    out = preprocess_era(pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns]"), "x": pd.Series(dtype=float)}), ["x"])
    assert out.empty and list(out.columns) == ["timestamp", "x"]


def test_missing_sensor_column_is_a_clear_error():
    with pytest.raises(ValueError, match="missing column.*nope"):
        preprocess_era(pd.DataFrame({"timestamp": at(0), "x": [1.0]}), ["x", "nope"])


def test_sample_era_end_to_end():
    from stages.sample_data import BINARY, generate_sample

    raw = generate_sample(days=1, seed=11)
    sensors = [c for c in raw.columns if c not in ("timestamp", "compartment_id")]
    out = preprocess_era(raw, sensors)
    assert len(out) == 1440  # gaps restored on the 1-minute grid
    assert not out[sensors].isna().any().any()
    for name in BINARY:
        assert set(out[name].unique()) <= {0.0, 1.0}
