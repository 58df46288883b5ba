"""Rolling statistics of one clean era, and their per-era summaries.

:func:`rolling_series` is pandas' time-based rolling (window strings such as "5min",
"240min"; a window ending at each timestamp, right-closed, min_periods 1, std with ddof 1
so a window of one point has NaN std), mean/std/min/max per sensor and window.

:func:`rolling_summaries` condenses those series into per-era features in the same long
form as tsfresh's output, so both land in ``era_features``. For every sensor, window and
rolling statistic it reports the era mean and the era maximum (NaN ignored), named
``rolling_<window>_<stat>__<agg>``, e.g. ``rolling_5min_std__max``: 8 features per sensor
and window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.backend import ArrayBackend, resolve
from stages.durations import fixed_duration

TIMESTAMP = "timestamp"
STATS: tuple[str, ...] = ("mean", "std", "min", "max")
SUMMARY_AGGS: tuple[str, ...] = ("mean", "max")
SERIES_COLUMNS = [TIMESTAMP, "sensor", "window", *STATS]
SUMMARY_COLUMNS = ["sensor", "feature", "value"]


def summary_feature(window: str, stat: str, agg: str) -> str:
    """The feature name of one summary (one place builds it, so names cannot drift)."""
    return f"rolling_{window}_{stat}__{agg}"


def rolling_series(
    clean: pd.DataFrame, sensors: list[str], windows: list[str], *, backend: ArrayBackend | None = None
) -> pd.DataFrame:
    """One row per timestamp x sensor x window with the rolling mean, std, min and max."""
    resolve(backend)  # the GPU path is not written yet: any backend computes with pandas here
    for w in windows:
        fixed_duration(w, "rolling window")
    missing = [c for c in [TIMESTAMP, *sensors] if c not in clean.columns]
    if missing:
        raise ValueError(f"rolling_series: missing column(s) {', '.join(missing)}")
    indexed = clean.set_index(pd.DatetimeIndex(clean[TIMESTAMP]))[sensors].astype("float64").sort_index()

    # One long block per window (sensor after sensor, each in time order): a small frame per
    # sensor cost about 1 ms each, 26 s for 6,000 sensors and four windows.
    parts = []
    times = indexed.index.to_numpy()
    for window in windows:
        roll = indexed.rolling(window)
        stats = {stat: getattr(roll, stat)() for stat in STATS}
        if not sensors:
            continue
        parts.append(
            pd.DataFrame(
                {
                    TIMESTAMP: np.tile(times, len(sensors)),
                    "sensor": np.repeat(np.asarray(sensors, dtype=object), len(times)),
                    "window": window,
                    **{stat: stats[stat][sensors].to_numpy(dtype="float64").ravel(order="F") for stat in STATS},
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            {TIMESTAMP: pd.Series(dtype="datetime64[ns]"), "sensor": pd.Series(dtype="str"),
             "window": pd.Series(dtype="str"), **{stat: pd.Series(dtype="float64") for stat in STATS}}
        )
    out = pd.concat(parts, ignore_index=True)
    out[TIMESTAMP] = out[TIMESTAMP].astype("datetime64[ns]")
    return out[SERIES_COLUMNS]


def rolling_summaries(series: pd.DataFrame) -> pd.DataFrame:
    """Per sensor and window: era mean and max of each rolling statistic, long form."""
    missing = [c for c in ["sensor", "window", *STATS] if c not in series.columns]
    if missing:
        raise ValueError(f"rolling_summaries: missing column(s) {', '.join(missing)}")
    rows: list[tuple[str, str, float]] = []
    for (sensor, window), group in series.groupby(["sensor", "window"], sort=False):
        for stat in STATS:
            values = group[stat].to_numpy(dtype="float64")
            present = values[~np.isnan(values)]
            for agg in SUMMARY_AGGS:
                value = float(getattr(np, agg)(present)) if len(present) else np.nan
                rows.append((str(sensor), summary_feature(str(window), stat, agg), value))
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["sensor"] = out["sensor"].astype("str")
    out["feature"] = out["feature"].astype("str")
    out["value"] = out["value"].astype("float64")
    return out
