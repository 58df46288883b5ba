"""augmented_dickey_fuller: statsmodels' adfuller (regression "c", default maxlag) without one
SVD-based OLS fit per candidate lag.

statsmodels fits every candidate lag on one common sample (the same rows for every lag, so the
information criteria are comparable), with the regressors in the order
``[const, level, dx_{t-1}, ..., dx_{t-maxlag}]``; candidate ``lag`` uses the first ``lag + 2``
columns. Nested least squares problems on one sample share one QR decomposition of
``[regressors | y]``: with R its triangular factor, the residual sum of squares of the model on
the first k columns is ``sum(R[k:, -1]**2)`` and the t-value of its last regressor is
``R[k-1, -1] / sqrt(ssr_k / (nobs - k))`` in absolute value. The chosen lag is then refitted on
its own (longer) sample, as statsmodels does, with the level as the last column so that its
t-value comes from the last row of R. Designs that are (nearly) rank deficient, where
statsmodels' pseudo-inverse and rank rules decide, go to statsmodels itself.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import qr
from statsmodels.tsa.adfvalues import mackinnonp

from . import fallback
from .registry import register

_T_STOP = 1.6448536269514722  # statsmodels' stop value for autolag="t-stat"
_RANK_TOL = 1e-7


def _maxlag(n: int) -> int:
    maxlag = int(np.ceil(12.0 * np.power(n / 100.0, 1 / 4.0)))
    return min(n // 2 - 1 - 1, maxlag)


def _r_factor(Z: np.ndarray) -> np.ndarray | None:
    """R of Z's QR, or None where a column is (nearly) a combination of the ones before it."""
    R = qr(Z, mode="r", overwrite_a=True, check_finite=False)[0]
    k = Z.shape[1]
    R = R[:k, :k]
    # A column (nearly) in the span of the ones before it, or y (nearly) fitted exactly: the
    # numbers are rounding noise there, and statsmodels' own noise is the reference.
    d = np.abs(np.diag(R))
    colnorm = np.sqrt(np.sum(R**2, axis=0))  # column norms of Z, from R
    if np.any(d <= _RANK_TOL * np.maximum(colnorm, np.finfo(float).tiny)):
        return None
    return R


def _design(x: np.ndarray, xdiff: np.ndarray, lags: int, level_last: bool) -> np.ndarray:
    """Fortran-ordered [const, level, dx lags..., y] (or [const, dx lags..., level, y])."""
    nobs = len(xdiff) - lags
    Z = np.empty((nobs, lags + 3), order="F")
    Z[:, 0] = 1.0
    lev = lags + 1 if level_last else 1
    Z[:, lev] = x[-nobs - 1 : -1]
    first = 1 if level_last else 2
    for j in range(1, lags + 1):
        Z[:, first + j - 1] = xdiff[lags - j : lags - j + nobs]
    Z[:, -1] = xdiff[-nobs:]
    return Z


def adf_one(x: np.ndarray, autolag: str | None):
    """(teststat, pvalue, usedlag) as adfuller(x, autolag=autolag)[:3]; None where statsmodels
    must decide (rank deficiency); NaNs where tsfresh returns NaNs."""
    nan3 = (np.nan, np.nan, np.nan)
    n = len(x)
    if n == 0 or x.max() == x.min():
        return nan3
    maxlag = _maxlag(n)
    if maxlag < 0:
        return nan3
    xdiff = np.diff(x)
    if autolag is not None:
        method = autolag.lower()
        R = _r_factor(_design(x, xdiff, maxlag, level_last=False))
        if R is None:
            return None
        nobs = len(xdiff) - maxlag
        tail = R[:, -1] ** 2
        ssr_all = np.cumsum(tail[::-1])[::-1]  # ssr_all[k] = sum(R[k:, -1]**2)
        ks = np.arange(2, maxlag + 3)  # number of regressors of each candidate
        ssr = ssr_all[ks]
        if method == "aic":
            ic = nobs * np.log(ssr) + 2 * ks
            best = int(np.argmin(ic))
        elif method == "bic":
            ic = nobs * np.log(ssr) + np.log(nobs) * ks
            best = int(np.argmin(ic))
        elif method == "t-stat":
            with np.errstate(all="ignore"):
                t = np.abs(R[ks - 1, -1]) / np.sqrt(ssr / (nobs - ks))
            best = 0
            for j in range(len(ks) - 1, -1, -1):
                if np.abs(t[j]) >= _T_STOP:
                    best = j
                    break
        else:
            raise ValueError(f"autolag {autolag!r}")
        usedlag = best
    else:
        usedlag = maxlag
    R = _r_factor(_design(x, xdiff, usedlag, level_last=True))
    if R is None:
        return None
    k = usedlag + 2
    nobs = len(xdiff) - usedlag
    with np.errstate(all="ignore"):
        scale = R[k, k] ** 2 / (nobs - k)
        stat = float(np.sign(R[k - 1, k - 1]) * R[k - 1, k] / np.sqrt(scale))
    pvalue = float(mackinnonp(stat, regression="c", N=1))
    return stat, pvalue, float(usedlag)


def augmented_dickey_fuller(X: np.ndarray, params) -> np.ndarray:
    func = fallback.resolve("augmented_dickey_fuller")
    out = np.full((X.shape[0], len(params)), np.nan)
    autolags = []
    for p in params:
        a = p.get("autolag", "AIC")
        if a not in autolags:
            autolags.append(a)
    for i in range(X.shape[0]):
        x = X[i]
        res = {a: adf_one(x, a) for a in autolags}
        if any(r is None for r in res.values()):
            out[i] = fallback.fallback_block(func, X[i : i + 1], params)[0]
            continue
        for j, p in enumerate(params):
            r = res[p.get("autolag", "AIC")]
            attr = p["attr"]
            if attr == "teststat":
                out[i, j] = r[0]
            elif attr == "pvalue":
                out[i, j] = r[1]
            elif attr == "usedlag":
                out[i, j] = r[2]
    return out


register("augmented_dickey_fuller", min_len=20)(augmented_dickey_fuller)
