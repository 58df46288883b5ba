"""Per-series calls of tsfresh's own feature calculators (the reference, and the fallback).

A calculator without a fast kernel is computed here exactly as
``tsfresh.feature_extraction.extraction._do_extraction_on_chunk`` computes it: a pandas Series
for calculators whose ``input`` is ``"pd.Series"``, the NumPy array otherwise; combiners get the
whole parameter list, simple calculators one call per parameter dictionary.  Where tsfresh's
function raises, the features of that call are NaN (tsfresh would abort the extraction).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import pandas as pd
from tsfresh.feature_extraction import feature_calculators as _fc
from tsfresh.utilities.string_manipulation import convert_to_output_format

__all__ = [
    "resolve",
    "needs_index",
    "feature_keys",
    "call_tsfresh",
]


def resolve(name_or_func) -> Callable:
    """The tsfresh function for a settings key (a name or, as tsfresh allows, a callable)."""
    if callable(name_or_func):
        return name_or_func
    return getattr(_fc, name_or_func)


def calc_name(name_or_func) -> str:
    return name_or_func.__name__ if callable(name_or_func) else str(name_or_func)


def needs_index(func) -> bool:
    """True for calculators that need an index type (linear_trend_timewise): tsfresh skips them
    for data without such an index, and so do we (the engine gets plain arrays)."""
    return getattr(func, "input", None) == "pd.Series" and getattr(func, "index_type", None) is not None


def _iter_results(func, x, params):
    if getattr(func, "fctype", None) == "combiner":
        return list(func(x, param=params))
    if params:
        return [(convert_to_output_format(p), func(x, **p)) for p in params]
    return [("", func(x))]


def _to_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float(np.asarray(v, dtype=float))


def call_tsfresh(func, x: np.ndarray, params) -> list[tuple[str, float]]:
    """tsfresh's result for one series as (key, float) pairs; raises what tsfresh raises."""
    xx = pd.Series(x) if getattr(func, "input", None) == "pd.Series" else x
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [(str(k), _to_float(v)) for k, v in _iter_results(func, xx, params)]


def _probe_series() -> np.ndarray:
    rng = np.random.default_rng(12345)
    return np.cumsum(rng.normal(size=64)) + 0.1 * np.arange(64)


def _freeze(obj):
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return ("nd", obj.tobytes(), obj.dtype.str)
    return obj


_KEYS: dict = {}


def feature_keys(func, params) -> tuple[str, ...]:
    """The feature keys (the part after ``<calculator>__``) tsfresh produces for ``params``.

    Combiners name their outputs themselves; their names do not depend on the data, so they are
    taken once from tsfresh's own function on a probe series and cached.
    """
    ck = (func, _freeze(params))
    keys = _KEYS.get(ck)
    if keys is not None:
        return keys
    if getattr(func, "fctype", None) == "combiner":
        try:
            keys = tuple(k for k, _ in call_tsfresh(func, _probe_series(), params))
        except Exception:  # noqa: BLE001 - the probe failed: tsfresh's naming rule
            keys = tuple(convert_to_output_format(p) for p in params)
    elif params:
        keys = tuple(convert_to_output_format(p) for p in params)
    else:
        keys = ("",)
    _KEYS[ck] = keys
    return keys


def full_names(func, params) -> list[str]:
    base = func.__name__
    return [base + "__" + k if k else base for k in feature_keys(func, params)]


def fallback_block(func, X: np.ndarray, params) -> np.ndarray:
    """tsfresh's values for every row of ``X`` (m, n): shape (m, number of keys)."""
    keys = feature_keys(func, params)
    out = np.full((X.shape[0], len(keys)), np.nan)
    for i in range(X.shape[0]):
        try:
            res = call_tsfresh(func, np.ascontiguousarray(X[i]), params)
        except Exception:  # noqa: BLE001 - tsfresh raised: NaN, the stage goes on
            continue
        if len(res) == len(keys) and all(k == r[0] for k, r in zip(keys, res)):
            out[i] = [v for _, v in res]
        else:
            d = dict(res)
            out[i] = [d.get(k, np.nan) for k in keys]
    return out
