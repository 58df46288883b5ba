"""tsfresh features of one clean era, in long form (sensor, feature, value).

tsfresh refuses a series holding NaN ("must not contain NaN"); preprocessing leaves NaN
only in a sensor with no reading in the era, so such sensors skip tsfresh and get NaN for
every feature name instead of crashing the stage.

BLAS is pinned to one thread, in this process while tsfresh runs and in each of its worker
processes (pool initializer): several multi-threaded BLAS pools on a few cores ran 3-9x
slower (DESIGN.md, cost facts). Stages scale by adding processes, not BLAS threads.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tsfresh import extract_features
from tsfresh.feature_extraction import (
    ComprehensiveFCParameters,
    EfficientFCParameters,
    MinimalFCParameters,
)
from tsfresh.utilities.distribution import MultiprocessingDistributor, initialize_warnings_in_workers

from stages.ingest import LONG_FORM_COLUMNS
from stages.worker_pool import one_blas_thread_per_worker, worker_context

TIMESTAMP = "timestamp"
OUTPUT_COLUMNS = ["sensor", "feature", "value"]
_FC_PARAMETERS = {
    "minimal": MinimalFCParameters,
    "efficient": EfficientFCParameters,
    "comprehensive": ComprehensiveFCParameters,
}
# Internal long-form column names, chosen not to clash with sensor names such as "value"
# (ingest refuses sensors named like them); tsfresh names its output columns
# "<column_value>__<feature>".
_ID, _KIND = LONG_FORM_COLUMNS
_NAME_PROBE_LENGTH = 40  # long enough that no calculator skips, short enough to be quick


def fc_parameters(feature_set: str) -> dict:
    """tsfresh's settings for a feature set name (a fresh, mutable copy each call)."""
    try:
        return _FC_PARAMETERS[feature_set]()
    except KeyError:
        raise ValueError(
            f"unknown feature set {feature_set!r}; allowed: {', '.join(_FC_PARAMETERS)}"
        ) from None


def _init_worker(show_warnings: bool) -> None:
    initialize_warnings_in_workers(show_warnings)
    one_blas_thread_per_worker()


class _PinnedBlasDistributor(MultiprocessingDistributor):
    """tsfresh's process pool, with BLAS limited to one thread in every worker and workers
    started from the fork server (stages.worker_pool), never forked from this process."""

    def __init__(self, n_workers: int) -> None:
        # Not calling super().__init__: it would start a pool with its own initializer.
        self.pool = worker_context().Pool(processes=n_workers, initializer=_init_worker, initargs=(False,))
        self.n_workers = n_workers
        self.disable_progressbar = True
        self.progressbar_title = "Feature Extraction"


def _extract_wide(long: pd.DataFrame, feature_set: str, n_jobs: int) -> pd.DataFrame:
    """tsfresh on a long frame (id=sensor, sort=timestamp, value) -> one row per sensor."""
    distributor = _PinnedBlasDistributor(n_jobs) if n_jobs > 1 else None
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calculators warn on short/flat series; values say enough
        return extract_features(
            long,
            column_id=_ID,
            column_sort=TIMESTAMP,
            column_value=_KIND,
            default_fc_parameters=fc_parameters(feature_set),
            disable_progressbar=True,
            n_jobs=n_jobs,
            distributor=distributor,
        )


def _strip(columns: pd.Index) -> list[str]:
    prefix = f"{_KIND}__"
    return [c[len(prefix) :] if c.startswith(prefix) else c for c in columns]


@lru_cache(maxsize=None)
def _feature_names(feature_set: str) -> tuple[str, ...]:
    t = np.arange(_NAME_PROBE_LENGTH, dtype="float64")
    probe = pd.DataFrame({_ID: "probe", TIMESTAMP: t, _KIND: np.sin(t) + 0.01 * t})
    return tuple(_strip(_extract_wide(probe, feature_set, n_jobs=0).columns))


def feature_names(feature_set: str) -> list[str]:
    """Feature names of a set, without the sensor prefix, in tsfresh's order (cached)."""
    fc_parameters(feature_set)  # validate before caching anything
    return list(_feature_names(feature_set))


def _nan_rows(sensors: list[str], feature_set: str) -> pd.DataFrame:
    names = feature_names(feature_set)
    return pd.DataFrame(
        {
            "sensor": np.repeat(np.asarray(sensors, dtype=object), len(names)),
            "feature": np.tile(np.asarray(names, dtype=object), len(sensors)),
            "value": np.full(len(sensors) * len(names), np.nan),
        }
    )


ENGINES = ("fast", "tsfresh")


def extract_era_features(
    clean: pd.DataFrame, sensors: list[str], feature_set: str, n_jobs: int = 0, engine: str = "tsfresh"
) -> pd.DataFrame:
    """Long-form tsfresh features for a clean era, in ``sensors`` order, then tsfresh's order.

    engine="fast" computes the same numbers with stages.feature_engine's kernels (tsfresh's
    own function where a calculator has none); engine="tsfresh" calls tsfresh itself.
    """
    fc_parameters(feature_set)
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0, got {n_jobs}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    missing = [c for c in [TIMESTAMP, *sensors] if c not in clean.columns]
    if missing:
        raise ValueError(f"extract_era_features: missing column(s) {', '.join(missing)}")
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(OUTPUT_COLUMNS, ("str", "str", "float64"))})
    if len(clean) == 0 or not sensors:
        return empty
    if engine == "fast":
        return _extract_fast(clean, sensors, feature_set, n_jobs)

    good = [s for s in sensors if clean[s].notna().all()]
    parts: dict[str, pd.DataFrame] = {}
    if good:
        long = clean[[TIMESTAMP, *good]].melt(id_vars=TIMESTAMP, var_name=_ID, value_name=_KIND)
        long[_KIND] = long[_KIND].astype("float64")
        wide = _extract_wide(long, feature_set, n_jobs)
        wide.columns = _strip(wide.columns)
        names = feature_names(feature_set)
        if set(wide.columns) == set(names):  # one column order whatever the pool did
            wide = wide[names]
        for s in good:
            parts[s] = pd.DataFrame({"sensor": s, "feature": wide.columns, "value": wide.loc[s].to_numpy(dtype="float64")})
    bad = [s for s in sensors if s not in parts]
    if bad:
        nan = _nan_rows(bad, feature_set)
        for s, rows in nan.groupby("sensor", sort=False):
            parts[str(s)] = rows
    out = pd.concat([parts[s] for s in sensors], ignore_index=True)
    return _typed(out)


def _extract_fast(clean: pd.DataFrame, sensors: list[str], feature_set: str, n_jobs: int) -> pd.DataFrame:
    from stages.feature_engine import extract_features_fast

    ordered = clean.sort_values(TIMESTAMP, kind="stable")
    series = {s: ordered[s].to_numpy(dtype="float64") for s in sensors}
    out = extract_features_fast(series, fc_parameters(feature_set), n_jobs=n_jobs)
    rank = {s: i for i, s in enumerate(sensors)}
    order = {name: i for i, name in enumerate(feature_names(feature_set))}
    out = out.assign(_s=out["sensor"].map(rank), _f=out["feature"].map(order).fillna(len(order)))
    out = out.sort_values(["_s", "_f"], kind="stable").drop(columns=["_s", "_f"]).reset_index(drop=True)
    return _typed(out)


def _typed(out: pd.DataFrame) -> pd.DataFrame:
    """The output columns with the stage's dtypes, whichever engine made them."""
    return out.astype({"sensor": "str", "feature": "str", "value": "float64"})[OUTPUT_COLUMNS]
