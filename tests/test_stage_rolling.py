"""stages.rolling: parity with pandas' own rolling, and the per-era summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.rolling import rolling_series, rolling_summaries

SENSORS = ["air_temp_c", "vent_pos_1_percent"]
WINDOWS = ["5min", "17min"]


def clean_era(n: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-03-01", periods=n, freq="1min").astype("datetime64[ns]"),
            "air_temp_c": 20 + np.cumsum(rng.normal(0, 0.3, n)),
            "vent_pos_1_percent": np.clip(rng.normal(10, 15, n), 0, 100),
        }
    )


def test_equals_pandas_rolling():
    clean = clean_era()
    got = rolling_series(clean, SENSORS, WINDOWS)
    assert list(got.columns) == ["timestamp", "sensor", "window", "mean", "std", "min", "max"]
    assert len(got) == len(clean) * len(SENSORS) * len(WINDOWS)
    assert not got.duplicated(["timestamp", "sensor", "window"]).any()
    for s in SENSORS:
        series = pd.Series(clean[s].to_numpy(), index=pd.DatetimeIndex(clean["timestamp"]))
        for w in WINDOWS:
            mine = got.loc[(got["sensor"] == s) & (got["window"] == w)].set_index("timestamp")
            assert (mine.index == series.index).all()
            roll = series.rolling(w)
            for stat, ref in (("mean", roll.mean()), ("std", roll.std()), ("min", roll.min()), ("max", roll.max())):
                np.testing.assert_allclose(mine[stat].to_numpy(), ref.to_numpy(), rtol=1e-12, equal_nan=True)


def test_day_window_is_accepted():
    clean = clean_era(60).assign(timestamp=lambda f: pd.date_range("2024-03-01", periods=60, freq="2h"))
    got = rolling_series(clean, ["air_temp_c"], ["1D"])
    ref = pd.Series(clean["air_temp_c"].to_numpy(), index=pd.DatetimeIndex(clean["timestamp"])).rolling("1D").mean()
    np.testing.assert_allclose(got["mean"].to_numpy(), ref.to_numpy(), rtol=1e-12)


def test_windows_are_time_based_not_row_based():
    """With a gap, a 5-minute window holds fewer than 5 rows: time decides, not row count."""
    clean = clean_era(20).drop(index=range(5, 15)).reset_index(drop=True)
    got = rolling_series(clean, ["air_temp_c"], ["5min"])
    after_gap = got.loc[got["timestamp"] == clean["timestamp"].iloc[5]]
    assert after_gap["mean"].iloc[0] == clean["air_temp_c"].iloc[5]
    assert np.isnan(after_gap["std"].iloc[0])  # one point in the window


def test_unsorted_input_is_sorted_first():
    clean = clean_era(30)
    shuffled = clean.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(
        rolling_series(shuffled, SENSORS, ["5min"]), rolling_series(clean, SENSORS, ["5min"])
    )


def test_summaries_are_mean_and_max_of_each_rolling_stat():
    clean = clean_era()
    series = rolling_series(clean, SENSORS, WINDOWS)
    summaries = rolling_summaries(series)
    assert list(summaries.columns) == ["sensor", "feature", "value"]
    assert len(summaries) == len(SENSORS) * len(WINDOWS) * 4 * 2
    assert not summaries.duplicated(["sensor", "feature"]).any()
    lookup = summaries.set_index(["sensor", "feature"])["value"]
    s = pd.Series(clean["air_temp_c"].to_numpy(), index=pd.DatetimeIndex(clean["timestamp"]))
    roll = s.rolling("17min")
    assert lookup["air_temp_c", "rolling_17min_mean__mean"] == pytest.approx(roll.mean().mean(), rel=1e-12)
    assert lookup["air_temp_c", "rolling_17min_std__max"] == pytest.approx(roll.std().max(), rel=1e-12)
    assert lookup["air_temp_c", "rolling_17min_std__mean"] == pytest.approx(roll.std().mean(), rel=1e-12)  # NaN skipped
    assert lookup["air_temp_c", "rolling_17min_max__max"] == pytest.approx(s.max(), rel=1e-12)


def test_all_nan_sensor_gives_nan_not_an_error():
    clean = clean_era(10).assign(dead=np.nan)
    series = rolling_series(clean, ["dead"], ["5min"])
    assert len(series) == 10 and series[["mean", "std", "min", "max"]].isna().all().all()
    summaries = rolling_summaries(series)
    assert len(summaries) == 8 and summaries["value"].isna().all()


def test_empty_inputs_and_bad_windows():
    empty = rolling_series(clean_era().iloc[:0], SENSORS, WINDOWS)
    assert empty.empty and list(empty.columns) == ["timestamp", "sensor", "window", "mean", "std", "min", "max"]
    assert rolling_summaries(empty).empty
    with pytest.raises(ValueError, match="'7'"):
        rolling_series(clean_era(), SENSORS, ["7"])
    with pytest.raises(ValueError, match="fixed"):
        rolling_series(clean_era(), SENSORS, ["1MS"])
