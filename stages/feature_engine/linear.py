"""Autocorrelation and regression calculators: partial_autocorrelation, agg_linear_trend.

* partial_autocorrelation: statsmodels' ``pacf(x, method="ld")`` computes the adjusted
  autocovariance at *all* n lags (np.correlate, quadratic) and then uses the first few; here only
  the lags that Levinson-Durbin needs are computed (the same dot products), and the recursion is
  statsmodels' own ``levinson_durbin``.
* agg_linear_trend: the chunk aggregates of every (f_agg, chunk_len) for all sensors at once
  (a reshape, plus the short last chunk), then scipy's linregress arithmetic on the 2-D array.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
from scipy.linalg import qr, solve_triangular
from scipy.special import stdtr
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
    ssym = np.vecdot(Yc, Yc) * f
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

# --------------------------------------------------------------------------- linear_trend

_TINY = 1.0e-20


def _linregress_on_index(X: np.ndarray) -> dict[str, np.ndarray]:
    """scipy.stats.linregress(range(n), x) for every row x of X, with scipy's arithmetic:
    np.cov's centring and its one ``dot`` of the stacked, centred pair (per row, so BLAS sums
    in the same order), its ``*= 1/n``, and the t-distribution p-value (``2 * stdtr(df, -|t|)``)
    on whole columns."""
    m, n = X.shape
    xr = np.arange(n, dtype=np.float64)
    xmean = np.mean(np.arange(n))
    Z = np.empty((2, n))
    Z[0] = xr - np.mean(xr)
    ymean = np.mean(X, axis=1)
    inv = np.true_divide(1, float(n))
    ssxm = np.empty(m)
    ssxym = np.empty(m)
    ssym = np.empty(m)
    for i in range(m):
        Z[1] = X[i]
        Z[1] -= ymean[i]
        c = np.dot(Z, Z.T)
        c *= inv
        ssxm[i], ssxym[i], _, ssym[i] = c.flat
    with np.errstate(all="ignore"):
        r = np.clip(ssxym / np.sqrt(ssxm * ssym), -1.0, 1.0)
        r = np.where((ssxm == 0.0) | (ssym == 0.0), np.where(ssxym == 0, np.nan, 0.0), r)
        slope = ssxym / ssxm
        intercept = ymean - slope * xmean
        df = n - 2
        t = r * np.sqrt(df / ((1.0 - r + _TINY) * (1.0 + r + _TINY)))
        pvalue = 2 * stdtr(df, -np.abs(t))
        stderr = np.sqrt((1 - r**2) * ssym / ssxm / df)
    return {"slope": slope, "intercept": intercept, "rvalue": r, "pvalue": pvalue, "stderr": stderr}


def linear_trend(X: np.ndarray, params) -> np.ndarray:
    res = _linregress_on_index(X)
    return np.stack([res[p["attr"]] for p in params], axis=1)


register("linear_trend", min_len=3)(linear_trend)

# --------------------------------------------------------------------------- agg_autocorrelation


def agg_autocorrelation(X: np.ndarray, params) -> np.ndarray:
    """tsfresh's agg_autocorrelation: statsmodels' acf(adjusted=True) at lags 1..maxlag, from the
    lag products of the centred rows (only the lags asked for, not all n by FFT or np.correlate:
    the acf differs from statsmodels' by round-off relative to acov[0], ~1e-16), then
    NumPy's aggregate over the first maxlag values."""
    m, n = X.shape
    maxlags = [int(p["maxlag"]) for p in params]
    L = min(max(maxlags), n - 1)
    var = np.var(X, axis=1)
    Xo = X - X.mean(axis=1)[:, None]
    acov = np.empty((m, L + 1))
    acov[:, 0] = np.vecdot(Xo, Xo)
    for k in range(1, L + 1):
        acov[:, k] = np.vecdot(Xo[:, k:], Xo[:, :-k])
    acov /= n - np.arange(L + 1)
    A = acov[:, 1:] / acov[:, :1]
    A[(np.abs(var) < 10**-10) | (n == 1)] = 0.0
    out = np.empty((m, len(params)))
    for j, p in enumerate(params):
        out[:, j] = getattr(np, p["f_agg"])(A[:, : maxlags[j]], axis=1)
    return out


register("agg_autocorrelation", min_len=2)(agg_autocorrelation)

# --------------------------------------------------------------------------- ar_coefficient


def _ar_params(x: np.ndarray, k: int) -> np.ndarray | None:
    """statsmodels' AutoReg(x, lags=k, trend="c").fit().params ([const, phi_1..phi_k]) as one
    least-squares solve: R of the QR of ``[1, x_{t-1}, ..., x_{t-k} | x_t]`` (t = k..n-1, the
    rows AutoReg keeps), then the triangular solve. statsmodels solves the same problem with a
    pseudo-inverse (SVD); for a full-rank design both are the exact least-squares solution up to
    round-off. None where the design is (nearly) rank deficient: statsmodels' pseudo-inverse
    decides there."""
    n = len(x)
    nobs = n - k
    Z = np.empty((nobs, k + 2), order="F")
    Z[:, 0] = 1.0
    for j in range(1, k + 1):
        Z[:, j] = x[k - j : n - j]
    Z[:, -1] = x[k:]
    R = qr(Z, mode="r", overwrite_a=True, check_finite=False)[0][: k + 2, : k + 2]
    d = np.abs(np.diag(R))[: k + 1]
    colnorm = np.sqrt(np.sum(R[:, : k + 1] ** 2, axis=0))
    if np.any(d <= _AR_RANK_TOL * np.maximum(colnorm, np.finfo(float).tiny)):
        return None
    return solve_triangular(R[: k + 1, : k + 1], R[: k + 1, -1], check_finite=False)


_AR_RANK_TOL = 1e-6


def ar_coefficient(X: np.ndarray, params) -> np.ndarray:
    m, n = X.shape
    ks = sorted({int(p["k"]) for p in params})
    if any(n - k < 2 * (k + 1) for k in ks):
        raise ValueError("short series: tsfresh's own function")  # its error paths
    func = fallback.resolve("ar_coefficient")
    out = np.empty((m, len(params)))
    for i in range(m):
        fits = {k: _ar_params(X[i], k) for k in ks}
        if any(v is None for v in fits.values()):
            out[i] = fallback.fallback_block(func, X[i : i + 1], params)[0]
            continue
        for j, p in enumerate(params):
            k, c = int(p["k"]), p["coeff"]
            out[i, j] = fits[k][c] if c <= k else np.nan
    return out


register("ar_coefficient", min_len=8)(ar_coefficient)

# --------------------------------------------------------------------------- friedrich / langevin


@numba.njit(cache=True, inline="always")
def _kahan_add(sums, comps, b, value):
    """sums[b] += value, Kahan-compensated as pandas' group_mean does (NaN compensation reset)."""
    y = value - comps[b]
    t = sums[b] + y
    comps[b] = t - sums[b] - y
    if comps[b] != comps[b]:
        comps[b] = 0.0
    sums[b] = t


@numba.njit(cache=True)
def _kahan_bin_means(sig, delta, labels, nb):
    """pandas' cython group_mean (Kahan-compensated sums in row order, then sum / count) of
    ``sig`` and ``delta`` per bin label; NaN for empty bins."""
    sx = np.zeros(nb)
    cx = np.zeros(nb)
    sy = np.zeros(nb)
    cy = np.zeros(nb)
    cnt = np.zeros(nb)
    for i in range(sig.shape[0]):
        b = labels[i]
        if b < 0:
            continue
        cnt[b] += 1
        _kahan_add(sx, cx, b, sig[i])
        _kahan_add(sy, cy, b, delta[i])
    xm = np.full(nb, np.nan)
    ym = np.full(nb, np.nan)
    for b in range(nb):
        if cnt[b] > 0:
            xm[b] = sx[b] / cnt[b]
            ym[b] = sy[b] / cnt[b]
    return xm, ym


def _qcut_quantiles(r: int) -> np.ndarray:
    """pd.qcut's quantile levels for ``q=r`` (linspace, nudged up where not exact)."""
    q = np.linspace(0, 1, r + 1)
    np.putmask(q, r * q != np.arange(r + 1), np.nextafter(q, 1))
    return q


def _friedrich_rows(X: np.ndarray, m: int, r: int) -> np.ndarray:
    """tsfresh's _estimate_friedrich_coefficients for every row: pd.qcut(x[:-1], r) bins (the
    quantiles np.quantile gives pandas), the bin means of x[:-1] and diff(x) as pandas'
    groupby computes them, np.polyfit on the non-empty bins. (rows, m + 1), NaN where tsfresh's
    qcut or polyfit fail; rows where pandas' interval labels could merge or fail (bin edges of
    extreme magnitude, where its rounding to 3+ digits misbehaves) are marked for tsfresh."""
    rows, n = X.shape
    out = np.full((rows, m + 1), np.nan)
    odd = np.zeros(rows, dtype=bool)
    if n < 2:
        return out, odd
    S = X[:, :-1]
    D = np.diff(X, axis=1)
    qs = _qcut_quantiles(r)
    B = np.quantile(S, qs, axis=1).T  # (rows, r + 1): what Series.quantile computes
    for i in range(rows):
        bins = B[i]
        if np.any(bins[1:] == bins[:-1]) and len(bins) != 2:
            continue  # qcut: "Bin edges must be unique"
        a = np.abs(bins)
        if not np.all((a == 0) | ((a > 1e-200) & (a < 1e200))):
            odd[i] = True
            continue
        s = S[i]
        ids = np.searchsorted(bins, s, side="left")
        ids[s == bins[0]] = 1
        ids[(ids == len(bins)) | (ids == 0)] = 0
        xm, ym = _kahan_bin_means(s, D[i], ids - 1, len(bins) - 1)
        keep = ~(np.isnan(xm) | np.isnan(ym))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[i] = np.polyfit(xm[keep], ym[keep], deg=m)
        except (np.linalg.LinAlgError, ValueError):
            pass
    return out, odd


def _odd_rows_from_tsfresh(name: str, X: np.ndarray, params, out: np.ndarray, odd: np.ndarray):
    func = fallback.resolve(name)
    for i in np.flatnonzero(odd):
        out[i] = fallback.fallback_block(func, X[i : i + 1], params)[0]
    return out


def friedrich_coefficients(X: np.ndarray, params) -> np.ndarray:
    out = np.full((X.shape[0], len(params)), np.nan)
    cache: dict = {}
    odd = np.zeros(X.shape[0], dtype=bool)
    for j, p in enumerate(params):
        m, r, c = int(p["m"]), int(p["r"]), p["coeff"]
        assert m > 0 and c >= 0
        if (m, r) not in cache:
            cache[(m, r)], o = _friedrich_rows(X, m, r)
            odd |= o
        if c <= m:
            out[:, j] = cache[(m, r)][:, c]
    return _odd_rows_from_tsfresh("friedrich_coefficients", X, params, out, odd)


register("friedrich_coefficients", min_len=3)(friedrich_coefficients)


def max_langevin_fixed_point(X: np.ndarray, params) -> np.ndarray:
    out = np.full((X.shape[0], len(params)), np.nan)
    cache: dict = {}
    odd = np.zeros(X.shape[0], dtype=bool)
    for j, p in enumerate(params):
        m, r = int(p["m"]), int(p["r"])
        assert m > 0
        if (m, r) not in cache:
            cache[(m, r)], o = _friedrich_rows(X, m, r)
            odd |= o
        for i, coeff in enumerate(cache[(m, r)]):
            try:
                out[i, j] = np.max(np.real(np.roots(coeff)))
            except (np.linalg.LinAlgError, ValueError):
                pass
    return _odd_rows_from_tsfresh("max_langevin_fixed_point", X, params, out, odd)


register("max_langevin_fixed_point", min_len=3)(max_langevin_fixed_point)
