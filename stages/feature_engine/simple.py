"""Kernels for the cheap aggregate calculators: one NumPy pass over all sensors of a length.

Each follows tsfresh 0.21's definition in feature_calculators.py to the operation (same ddof,
same comparisons, same reductions along contiguous rows, so the same rounding).
"""
from __future__ import annotations

import numpy as np

from .registry import KERNELS, register

# --------------------------------------------------------------------------- helpers


def _plain(name: str, min_len: int = 8):
    """Register a parameterless calculator ``f(X) -> (m,)`` (the engine takes the 1-D result
    as the one column: no reshaping per call)."""

    def deco(f):
        register(name, min_len)(lambda X, params: f(X))
        return f

    return deco


def _each(name: str, min_len: int = 8):
    """Register a calculator with a parameter list, computed ``f(X, **p) -> (m,)`` per dict."""

    def deco(f):
        def kernel(X, params):
            if len(params) == 1:
                return f(X, **params[0])
            out = np.empty((X.shape[0], len(params)))
            for j, p in enumerate(params):
                out[:, j] = f(X, **p)
            return out

        register(name, min_len)(kernel)
        return f

    return deco


def _mean(X):
    return np.mean(X, axis=1)


def _std(X):
    return np.std(X, axis=1)


def _var(X):
    return np.var(X, axis=1)


# --------------------------------------------------------------------------- moments


@_plain("sum_values")
def sum_values(X):
    return np.sum(X, axis=1)


@_plain("mean")
def mean(X):
    return _mean(X)


@_plain("median")
def median(X):
    return np.median(X, axis=1)


@_plain("length")
def length(X):
    return float(X.shape[1])  # broadcast by the engine


@_plain("standard_deviation")
def standard_deviation(X):
    return _std(X)


@_plain("variance")
def variance(X):
    return _var(X)


@_plain("variance_larger_than_standard_deviation")
def variance_larger_than_standard_deviation(X):
    y = _var(X)
    return y > np.sqrt(y)


@_plain("variation_coefficient")
def variation_coefficient(X):
    avg = _mean(X)
    with np.errstate(all="ignore"):
        out = _std(X) / avg
    return np.where(avg == 0, np.nan, out)


@_plain("root_mean_square")
def root_mean_square(X):
    return np.sqrt(np.mean(np.square(X), axis=1))


@_plain("abs_energy")
def abs_energy(X):
    return np.einsum("ij,ij->i", X, X)


@_plain("maximum")
def maximum(X):
    return np.max(X, axis=1)


@_plain("minimum")
def minimum(X):
    return np.min(X, axis=1)


@_plain("absolute_maximum")
def absolute_maximum(X):
    return np.max(np.abs(X), axis=1)


@_each("large_standard_deviation")
def large_standard_deviation(X, r):
    return _std(X) > (r * (np.max(X, axis=1) - np.min(X, axis=1)))


@_each("ratio_beyond_r_sigma")
def ratio_beyond_r_sigma(X, r):
    m = _mean(X)[:, None]
    s = _std(X)[:, None]
    return np.sum(np.abs(X - m) > r * s, axis=1) / X.shape[1]


def symmetry_looking(X, params):
    mmd = np.abs(_mean(X) - np.median(X, axis=1))
    rng = np.max(X, axis=1) - np.min(X, axis=1)
    return np.stack([mmd < (p["r"] * rng) for p in params], axis=1).astype(np.float64)


register("symmetry_looking")(symmetry_looking)

# --------------------------------------------------------------------------- changes


@_plain("mean_abs_change")
def mean_abs_change(X):
    return np.mean(np.abs(np.diff(X, axis=1)), axis=1)


@_plain("absolute_sum_of_changes")
def absolute_sum_of_changes(X):
    return np.sum(np.abs(np.diff(X, axis=1)), axis=1)


@_plain("mean_change")
def mean_change(X):
    return (X[:, -1] - X[:, 0]) / (X.shape[1] - 1)


@_plain("mean_second_derivative_central")
def mean_second_derivative_central(X):
    return (X[:, -1] - X[:, -2] - X[:, 1] + X[:, 0]) / (2 * (X.shape[1] - 2))


@_each("cid_ce")
def cid_ce(X, normalize):
    if normalize:
        s = _std(X)
        m = _mean(X)
        ok = s != 0
        with np.errstate(all="ignore"):
            Z = (X - m[:, None]) / s[:, None]
        d = np.diff(Z, axis=1)
        out = np.sqrt(np.einsum("ij,ij->i", d, d))
        return np.where(ok, out, 0.0)
    d = np.diff(X, axis=1)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


@_each("number_crossing_m")
def number_crossing_m(X, m):
    pos = X > m
    return np.count_nonzero(pos[:, 1:] != pos[:, :-1], axis=1)


@_each("time_reversal_asymmetry_statistic")
def time_reversal_asymmetry_statistic(X, lag):
    n = X.shape[1]
    if 2 * lag >= n:
        return np.zeros(X.shape[0])
    x0 = X[:, : n - 2 * lag]
    x1 = X[:, lag : n - lag]
    x2 = X[:, 2 * lag :]
    return np.mean(x2 * x2 * x1 - x1 * x0 * x0, axis=1)


@_each("c3")
def c3(X, lag):
    n = X.shape[1]
    if 2 * lag >= n:
        return np.zeros(X.shape[0])
    return np.mean(X[:, 2 * lag :] * X[:, lag : n - lag] * X[:, : n - 2 * lag], axis=1)


@_each("autocorrelation")
def autocorrelation(X, lag):
    n = X.shape[1]
    if n < lag:
        return np.full(X.shape[0], np.nan)
    m = _mean(X)[:, None]
    sp = np.sum((X[:, : n - lag] - m) * (X[:, lag:] - m), axis=1)
    v = _var(X)
    with np.errstate(all="ignore"):
        out = sp / ((n - lag) * v)
    return np.where(np.isclose(v, 0), np.nan, out)


# --------------------------------------------------------------------------- order statistics


@_each("quantile")
def quantile(X, q):
    return np.quantile(X, q, axis=1)


@_each("count_above")
def count_above(X, t):
    return np.sum(X >= t, axis=1) / X.shape[1]


@_each("count_below")
def count_below(X, t):
    return np.sum(X <= t, axis=1) / X.shape[1]


@_each("value_count")
def value_count(X, value):
    if np.isnan(value):
        return np.zeros(X.shape[0])  # the engine's rows are NaN-free
    return np.count_nonzero(X == value, axis=1)


@_each("range_count")
def range_count(X, min, max):  # noqa: A002 - tsfresh's parameter names
    return np.sum((X >= min) & (X < max), axis=1)


@_plain("count_above_mean")
def count_above_mean(X):
    return np.count_nonzero(X > _mean(X)[:, None], axis=1)


@_plain("count_below_mean")
def count_below_mean(X):
    return np.count_nonzero(X < _mean(X)[:, None], axis=1)


def _longest_run(B):
    """Longest run of True per row (0 where none)."""
    m, n = B.shape
    P = np.zeros((m, n + 2), dtype=np.int8)
    P[:, 1:-1] = B
    D = np.diff(P, axis=1)
    r_s, c_s = np.nonzero(D == 1)
    _, c_e = np.nonzero(D == -1)
    out = np.zeros(m)
    if len(r_s):
        np.maximum.at(out, r_s, (c_e - c_s).astype(np.float64))
    return out


@_plain("longest_strike_below_mean")
def longest_strike_below_mean(X):
    return _longest_run(X < _mean(X)[:, None])


@_plain("longest_strike_above_mean")
def longest_strike_above_mean(X):
    return _longest_run(X > _mean(X)[:, None])


@_plain("first_location_of_maximum")
def first_location_of_maximum(X):
    return np.argmax(X, axis=1) / X.shape[1]


@_plain("last_location_of_maximum")
def last_location_of_maximum(X):
    return 1.0 - np.argmax(X[:, ::-1], axis=1) / X.shape[1]


@_plain("first_location_of_minimum")
def first_location_of_minimum(X):
    return np.argmin(X, axis=1) / X.shape[1]


@_plain("last_location_of_minimum")
def last_location_of_minimum(X):
    return 1.0 - np.argmin(X[:, ::-1], axis=1) / X.shape[1]


@_plain("has_duplicate_max")
def has_duplicate_max(X):
    return np.sum(X == np.max(X, axis=1)[:, None], axis=1) >= 2


@_plain("has_duplicate_min")
def has_duplicate_min(X):
    return np.sum(X == np.min(X, axis=1)[:, None], axis=1) >= 2


def _sorted_groups(X):
    """Sorted rows, the flags 'first of its value' and 'value occurs more than once'."""
    S = np.sort(X, axis=1)
    eq = S[:, 1:] == S[:, :-1]  # equal to the next one
    first = np.ones_like(S, dtype=bool)
    first[:, 1:] = ~eq
    dup_next = np.zeros_like(S, dtype=bool)
    dup_next[:, :-1] = eq
    return S, first, dup_next, eq


@_plain("has_duplicate")
def has_duplicate(X):
    S = np.sort(X, axis=1)
    return np.any(S[:, 1:] == S[:, :-1], axis=1)


@_plain("ratio_value_number_to_time_series_length")
def ratio_value_number_to_time_series_length(X):
    _, first, _, _ = _sorted_groups(X)
    return np.count_nonzero(first, axis=1) / X.shape[1]


@_plain("percentage_of_reoccurring_values_to_all_values")
def percentage_of_reoccurring_values_to_all_values(X):
    _, first, dup_next, _ = _sorted_groups(X)
    return np.count_nonzero(first & dup_next, axis=1) / np.count_nonzero(first, axis=1)


@_plain("percentage_of_reoccurring_datapoints_to_all_datapoints")
def percentage_of_reoccurring_datapoints_to_all_datapoints(X):
    _, _, dup_next, eq = _sorted_groups(X)
    in_group = dup_next.copy()
    in_group[:, 1:] |= eq
    return np.count_nonzero(in_group, axis=1) / X.shape[1]


@_each("number_peaks")
def number_peaks(X, n):
    N = X.shape[1]
    if N <= 2 * n:
        return np.zeros(X.shape[0])
    core = X[:, n : N - n]
    res = np.ones(core.shape, dtype=bool)
    for i in range(1, n + 1):
        res &= core > X[:, n - i : N - n - i]
        res &= core > X[:, n + i : N - n + i]
    return np.sum(res, axis=1)


@_each("mean_n_absolute_max")
def mean_n_absolute_max(X, number_of_maxima):
    if X.shape[1] <= number_of_maxima:
        return np.full(X.shape[0], np.nan)
    A = np.sort(np.abs(X), axis=1)[:, -number_of_maxima:]
    return np.mean(A, axis=1)


def index_mass_quantile(X, params):
    A = np.abs(X)
    s = np.sum(A, axis=1)
    with np.errstate(all="ignore"):
        mc = np.cumsum(A, axis=1) / s[:, None]
    n = X.shape[1]
    cols = []
    for p in params:
        v = (np.argmax(mc >= p["q"], axis=1) + 1) / n
        cols.append(np.where(s == 0, np.nan, v))
    return np.stack(cols, axis=1)


register("index_mass_quantile")(index_mass_quantile)


def energy_ratio_by_chunks(X, params):
    full = np.sum(X**2, axis=1)
    n = X.shape[1]
    cols = []
    for p in params:
        k, f = p["num_segments"], p["segment_focus"]
        assert f < k and k > 0
        # np.array_split: the first n % k pieces get one element more
        q, r = divmod(n, k)
        start = f * q + min(f, r)
        stop = start + q + (1 if f < r else 0)
        with np.errstate(all="ignore"):
            v = np.sum(X[:, start:stop] ** 2.0, axis=1) / full
        cols.append(np.where(full == 0, np.nan, v))
    return np.stack(cols, axis=1)


register("energy_ratio_by_chunks")(energy_ratio_by_chunks)

# --------------------------------------------------------------------------- spectra


def fft_coefficient(X, params):
    F = np.fft.rfft(X, axis=1)
    L = F.shape[1]
    out = np.full((X.shape[0], len(params)), np.nan)
    for j, p in enumerate(params):
        c, attr = p["coeff"], p["attr"]
        if c >= L:
            continue
        z = F[:, c]
        if attr == "real":
            out[:, j] = z.real
        elif attr == "imag":
            out[:, j] = z.imag
        elif attr == "abs":
            out[:, j] = np.abs(z)
        elif attr == "angle":
            out[:, j] = np.angle(z, deg=True)
        else:
            raise ValueError('`agg` must be "real", "imag", "angle" or "abs"')
    return out


register("fft_coefficient")(fft_coefficient)


def fft_aggregated(X, params):
    A = np.abs(np.fft.rfft(X, axis=1))
    k = np.arange(A.shape[1], dtype=float)
    tot = A.sum(axis=1)

    def moment(p):
        w = k**p  # one 1-D dot per row, as tsfresh computes it
        return np.array([A[i].dot(w) for i in range(A.shape[0])]) / tot

    with np.errstate(all="ignore"):
        c = moment(1)
        var = moment(2) - c**2
        res = {"centroid": c, "variance": var}
        m3, m4, m2 = moment(3), moment(4), moment(2)
        skew = (m3 - 3 * c * var - c**3) / var ** (1.5)
        kurt = (m4 - 4 * c * m3 + 6 * m2 * c**2 - 3 * c) / var**2
        res["skew"] = np.where(var < 0.5, np.nan, skew)
        res["kurtosis"] = np.where(var < 0.5, np.nan, kurt)
    return np.stack([res[p["aggtype"]] for p in params], axis=1)


register("fft_aggregated")(fft_aggregated)

# --------------------------------------------------------------------------- corridors


def change_quantiles(X, params):
    """tsfresh's change_quantiles: pandas' qcut corridor is ``q_lo <= x <= q_hi`` with the
    quantiles of np.quantile (what pandas calls); the aggregate runs on the same compacted
    array as tsfresh's, so the same rounding."""
    m, n = X.shape
    out = np.zeros((m, len(params)))
    qs = sorted({p["ql"] for p in params} | {p["qh"] for p in params})
    Q = {q: v for q, v in zip(qs, np.quantile(X, qs, axis=1))}  # each (m,)
    D = np.diff(X, axis=1)
    DA = np.abs(D)
    sel_cache: dict = {}
    for j, p in enumerate(params):
        ql, qh, isabs, f_agg = p["ql"], p["qh"], p["isabs"], p["f_agg"]
        if ql >= qh:
            continue
        key = (ql, qh)
        if key not in sel_cache:
            inside = (X >= Q[ql][:, None]) & (X <= Q[qh][:, None])
            sel_cache[key] = inside[:, 1:] & inside[:, :-1]
        ind = sel_cache[key]
        agg = getattr(np, f_agg)
        src = DA if isabs else D
        for i in range(m):
            sel = src[i][ind[i]]
            if sel.size:
                out[i, j] = agg(sel)
    return out


register("change_quantiles")(change_quantiles)

# --------------------------------------------------------------------------- first digits

_BENFORD = np.array([np.log10(1 + 1 / n) for n in range(1, 10)])


def _first_digits(v: np.ndarray) -> np.ndarray:
    """First character of np.format_float_scientific(v) for v >= 0 (0 for zero), vectorised;
    values whose mantissa lies near a digit boundary take the string route tsfresh takes."""
    d = np.zeros(v.shape, dtype=np.int64)
    pos = v > 0
    with np.errstate(all="ignore"):
        e = np.floor(np.log10(np.where(pos, v, 1.0)))
        mant = np.where(pos, v / 10.0**e, 0.0)
    fl = np.floor(mant)
    frac = mant - fl
    unsure = pos & ((frac < 1e-6) | (frac > 1 - 1e-6) | (mant < 1) | (mant >= 10) | ~np.isfinite(mant))
    d[pos] = fl[pos].astype(np.int64)
    for idx in zip(*np.nonzero(unsure)):
        d[idx] = int(str(np.format_float_scientific(v[idx]))[:1])
    return d


def benford_correlation(X, params):
    D = _first_digits(np.abs(np.nan_to_num(X)))
    n = X.shape[1]
    out = np.empty((X.shape[0], 1))
    for i in range(X.shape[0]):
        counts = np.bincount(D[i], minlength=10)[1:10]
        with np.errstate(all="ignore"):
            out[i, 0] = np.corrcoef(_BENFORD, counts / n)[0, 1]
    return out


register("benford_correlation")(benford_correlation)



# --------------------------------------------------------------------------- higher moments
# pandas' nanskew / nankurt (what Series.skew / Series.kurtosis call) on the rows: the same sums
# (NumPy's pairwise row sums equal its 1-D sums), the same zeroing of m2/m3/m4 below the
# round-off bound of a constant series, the same bias-corrected formulas.

_EPS = np.finfo(np.float64).eps


def _centred_moments(X):
    count = float(X.shape[1])
    mean = X.sum(axis=1, dtype=np.float64) / count
    adj = X - mean[:, None]
    adj2 = adj**2
    max_abs = np.abs(X).max(axis=1, initial=0.0)
    return count, adj, adj2, max_abs


def _zero_below(arg, tol):
    return np.where(np.abs(arg) < tol, 0, arg)


@_plain("skewness", min_len=3)
def skewness(X):
    count, adj, adj2, max_abs = _centred_moments(X)
    m2 = adj2.sum(axis=1, dtype=np.float64)
    m3 = (adj2 * adj).sum(axis=1, dtype=np.float64)
    m2 = _zero_below(m2, ((_EPS * max_abs) ** 2) * count)
    m3 = _zero_below(m3, ((_EPS * max_abs) ** 3) * count)
    res = (count * (count - 1) ** 0.5 / (count - 2)) * (m3 / m2**1.5)
    return np.where(m2 == 0, 0.0, res)


@_plain("kurtosis", min_len=4)
def kurtosis(X):
    count, _, adj2, max_abs = _centred_moments(X)
    m2 = adj2.sum(axis=1, dtype=np.float64)
    m4 = (adj2**2).sum(axis=1, dtype=np.float64)
    m2 = _zero_below(m2, ((_EPS * max_abs) ** 2) * count)
    m4 = _zero_below(m4, ((_EPS * max_abs) ** 4) * count)
    adj = 3 * (count - 1) ** 2 / ((count - 2) * (count - 3))
    num = count * (count + 1) * (count - 1) * m4
    den = (count - 2) * (count - 3) * m2**2
    return np.where(den == 0, 0.0, num / den - adj)


# --------------------------------------------------------------------------- reoccurring sums


def _reoccurring(X, points: bool):
    """tsfresh's ``np.sum(counts * unique)`` with counts clipped (values) or zeroed below 2
    (data points): per row the same array (one entry per distinct value, in sorted order) is
    summed, so the same pairwise rounding; rows without repeats are 0 without that step."""
    S = np.sort(X, axis=1)
    eq = S[:, 1:] == S[:, :-1]
    has = eq.any(axis=1)
    out = np.zeros(X.shape[0])
    n = X.shape[1]
    for i in np.flatnonzero(has):
        starts = np.flatnonzero(np.r_[True, ~eq[i]])
        counts = np.diff(np.r_[starts, n])
        uniq = S[i, starts]
        if points:
            counts[counts < 2] = 0
        else:
            counts = (counts > 1).astype(counts.dtype)
        out[i] = np.sum(counts * uniq)
    return out


@_plain("sum_of_reoccurring_values", min_len=1)
def sum_of_reoccurring_values(X):
    return _reoccurring(X, points=False)


@_plain("sum_of_reoccurring_data_points", min_len=1)
def sum_of_reoccurring_data_points(X):
    return _reoccurring(X, points=True)


# --------------------------------------------------------------------------- binned entropy


def _histogram_rows(X, bins: int) -> np.ndarray:
    """np.histogram(x, bins)[0] for every row (uniform bins from the row's min and max), with
    NumPy's own index arithmetic and edge corrections: (m, bins) integer counts."""
    m, n = X.shape
    lo = X.min(axis=1)
    hi = X.max(axis=1)
    same = lo == hi
    lo = np.where(same, lo - 0.5, lo)
    hi = np.where(same, hi + 0.5, hi)
    # np.linspace(lo, hi, bins + 1) per row, as np.histogram builds its edges
    edges = np.linspace(lo, hi, bins + 1, axis=1)
    idx = ((X - lo[:, None]) / (hi - lo)[:, None] * bins).astype(np.intp)
    idx[idx == bins] -= 1
    rows = np.arange(m)[:, None]
    idx -= X < edges[rows, idx]
    idx += (X >= edges[rows, idx + 1]) & (idx != bins - 1)
    flat = (idx + rows * bins).ravel()
    return np.bincount(flat, minlength=m * bins).reshape(m, bins)


def _entropy_of_counts(H: np.ndarray, n: int) -> np.ndarray:
    probs = H / n
    probs[probs == 0] = 1.0
    return -np.sum(probs * np.log(probs), axis=1)


def binned_entropy(X, params):
    out = np.empty((X.shape[0], len(params)))
    for j, p in enumerate(params):
        out[:, j] = _entropy_of_counts(_histogram_rows(X, int(p["max_bins"])), X.shape[1])
    return out


register("binned_entropy", min_len=1)(binned_entropy)


# --------------------------------------------------------------------------- query similarity


def query_similarity_count(X, params):
    """tsfresh gives NaN for a query that is None or shorter than 3 (the comprehensive set's
    only parameter); real queries (stumpy's MASS) are left to tsfresh."""
    for p in params:
        q = np.asarray(p.get("query", None)).astype(float)
        if q.size >= 3:
            raise NotImplementedError("a real query: tsfresh's own function")
    return np.full((X.shape[0], len(params)), np.nan)


register("query_similarity_count", min_len=1)(query_similarity_count)


#: Every calculator registered in this module (single NumPy passes, no per-series loops).
CHEAP = frozenset(k for k, v in KERNELS.items() if v.fn.__module__ == __name__)
