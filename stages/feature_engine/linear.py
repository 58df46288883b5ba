"""Autocorrelation and regression calculators: partial_autocorrelation, agg_linear_trend.

* partial_autocorrelation: statsmodels' ``pacf(x, method="ld")`` computes the adjusted
  autocovariance at *all* n lags (np.correlate, quadratic) and then uses the first few; here only
  the lags that Levinson-Durbin needs are computed (the same dot products), and the recursion is
  statsmodels' own ``levinson_durbin``.
* agg_linear_trend: the chunk aggregates of every (f_agg, chunk_len) for all sensors at once
  (a reshape, plus the short last chunk), then scipy's linregress arithmetic on the 2-D array.
"""
from __future__ import annotations

import numpy as np
from statsmodels.tsa.stattools import levinson_durbin

from . import fallback
from .registry import register


def _pacf_ld(x: np.ndarray, nlags: int) -> np.ndarray:
    n = len(x)
    xo = x - x.mean()
    acov = np.empty(nlags + 1)
    acov[0] = xo.dot(xo)
    for i in range(nlags):
        acov[i + 1] = xo[i + 1 :].dot(xo[: -(i + 1)])
    acov /= n - np.arange(nlags + 1)
    with np.errstate(all="ignore"):
        return levinson_durbin(acov, nlags=nlags, isacov=True).pacf


def partial_autocorrelation(X: np.ndarray, params) -> np.ndarray:
    maxd = max(p["lag"] for p in params)
    n = X.shape[1]
    max_lag = n // 2 - 1 if maxd >= n // 2 else maxd
    out = np.full((X.shape[0], len(params)), np.nan)
    if max_lag <= 0:
        return out
    for i in range(X.shape[0]):
        coeffs = np.full(maxd + 1, np.nan)
        coeffs[: max_lag + 1] = _pacf_ld(X[i], max_lag)
        out[i] = [coeffs[p["lag"]] for p in params]
    return out


register("partial_autocorrelation", min_len=8)(partial_autocorrelation)

_LINREG_ATTRS = {"rvalue", "intercept", "slope", "stderr"}


def _aggregate(X: np.ndarray, f_agg: str, c: int) -> np.ndarray:
    m, n = X.shape
    full = n // c
    parts = []
    if full:
        B = X[:, : full * c].reshape(m, full, c)
        parts.append(getattr(B, f_agg)(axis=2))
    if n % c:
        parts.append(getattr(X[:, full * c :], f_agg)(axis=1)[:, None])
    return np.concatenate(parts, axis=1)


def _linregress_rows(Y: np.ndarray) -> dict[str, np.ndarray]:
    """scipy.stats.linregress(range(k), y) for every row y of Y: slope, intercept, rvalue, stderr."""
    m, k = Y.shape
    x = np.arange(k, dtype=np.float64)
    xmean = np.mean(x)
    ymean = np.mean(Y, axis=1)
    xc = x - xmean
    Yc = Y - ymean[:, None]
    f = 1.0 / k
    ssxm = xc.dot(xc) * f
    ssxym = (Yc @ xc) * f
    ssym = np.einsum("ij,ij->i", Yc, Yc) * f
    with np.errstate(all="ignore"):
        r = ssxym / np.sqrt(ssxm * ssym)
        r = np.clip(r, -1.0, 1.0)
        r = np.where(ssym == 0.0, np.where(ssxym == 0, np.nan, 0.0), r)
        slope = ssxym / ssxm
        intercept = ymean - slope * xmean
        if k == 2:
            stderr = np.zeros(m)
        else:
            stderr = np.sqrt((1 - r**2) * ssym / ssxm / (k - 2))
    return {"slope": slope, "intercept": intercept, "rvalue": r, "stderr": stderr}


def agg_linear_trend(X: np.ndarray, params) -> np.ndarray:
    if any(p["attr"] not in _LINREG_ATTRS for p in params):  # e.g. pvalue: tsfresh's own
        return fallback.fallback_block(fallback.resolve("agg_linear_trend"), X, params)
    n = X.shape[1]
    out = np.full((X.shape[0], len(params)), np.nan)
    cache: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for j, p in enumerate(params):
        c, f = p["chunk_len"], p["f_agg"]
        if c >= n:
            continue
        key = (f, c)
        if key not in cache:
            cache[key] = _linregress_rows(_aggregate(X, f, c))
        out[:, j] = cache[key][p["attr"]]
    return out


register("agg_linear_trend", min_len=8)(agg_linear_trend)
