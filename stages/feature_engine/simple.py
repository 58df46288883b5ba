"""Kernels for the cheap aggregate calculators: one NumPy pass over all sensors of a length.

Each follows tsfresh 0.21's definition in feature_calculators.py to the operation (same ddof,
same comparisons, same reductions along contiguous rows, so the same rounding).
"""
from __future__ import annotations

import dataclasses

import numba
import numpy as np

from . import fused as _fused
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


#: Up to this length np.var's sums are replayed in numba (no per-call overhead, no centred
#: copy); above it NumPy's SIMD passes on cache-sized row blocks are faster.
_FUSED_VAR_MAX = 4096


def _mean_var(X):
    """(np.mean(x), np.var(x)) per row: bit for bit up to ``_FUSED_VAR_MAX`` points; above,
    NumPy's own mean and one reassociated pass for the squared deviations (no centred copy)."""
    n = X.shape[1]
    if n <= _FUSED_VAR_MAX:
        return _fused.mean_var(X)
    mu = np.mean(X, axis=1)
    return mu, _fused.sq_dev_sums(X, mu) / n


def _std(X):
    return np.sqrt(_mean_var(X)[1])  # np.std: the square root of np.var


def _var(X):
    return _mean_var(X)[1]


def _count_rows(B) -> np.ndarray:
    """True values per row of a boolean array: np.count_nonzero per row (its SIMD count),
    much faster than a reduction along axis 1 (which sums through an integer cast)."""
    return np.array([np.count_nonzero(b) for b in B], dtype=np.float64)


# --------------------------------------------------------------------------- moments


@_plain("sum_values")
def sum_values(X):
    return np.sum(X, axis=1)


@_plain("mean")
def mean(X):
    return _mean(X)


#: Points of the strided sample that brackets the median of a long row.
_MEDIAN_SAMPLE = 2048


def _median(X):
    """np.median per row, bit for bit. Long rows: two order statistics of a strided sample
    bracket the median's rank (3.5 standard deviations of the sample quantile either side); one
    pass counts the values below and above the bracket and copies those inside; the median is
    then selected in that small band (the same order statistics, the same mean of the middle
    two). Where the bracket misses (a period that aliases the stride), np.median itself."""
    m, n = X.shape
    if n < 8 * _MEDIAN_SAMPLE:
        return np.median(X, axis=1)
    h = n // 2
    klo, khi = (h - 1, h) if n % 2 == 0 else (h, h)
    step = n // _MEDIAN_SAMPLE
    s = (n + step - 1) // step  # sample size
    c = 3.5 * np.sqrt(s) / 2
    a = max(0, int(klo * s / n - c))
    b = min(s - 1, int(khi * s / n + c) + 1)
    buf = np.empty(n + 1)
    out = np.empty(m)
    for i in range(m):
        x = X[i]
        sample = x[::step].copy()
        sample.partition((a, b))
        lo, hi = sample[a], sample[b]
        below, above, nb = _fused.band(x, lo, hi, buf)
        if below <= klo and khi < n - above:
            if lo == hi:  # a band of one value (ties: binary series)
                out[i] = lo
                continue
            band = buf[:nb]
            r0, r1 = klo - below, khi - below
            if r0 == r1:
                band.partition(r0)
                out[i] = band[r0]
            else:
                band.partition((r0, r1))
                out[i] = (band[r0] + band[r1]) / 2  # np.median's mean of the two
        else:
            out[i] = np.median(x)
    return out


@_plain("median")
def median(X):
    return _median(X)


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
    avg, var = _mean_var(X)
    with np.errstate(all="ignore"):
        out = np.sqrt(var) / avg
    return np.where(avg == 0, np.nan, out)


@_plain("root_mean_square")
def root_mean_square(X):
    if X.shape[1] <= _FUSED_VAR_MAX:
        return np.sqrt(_fused.mean_square(X))
    return np.sqrt(_fused.sq_sums(X) / X.shape[1])


@_plain("abs_energy")
def abs_energy(X):
    return np.vecdot(X, X)  # a dot per row, as tsfresh's np.dot(x, x)


@_plain("maximum")
def maximum(X):
    return np.max(X, axis=1)


@_plain("minimum")
def minimum(X):
    return np.min(X, axis=1)


@_plain("absolute_maximum")
def absolute_maximum(X):
    # max|x| = max(max x, -min x): two SIMD reductions, no |x| copy (+ 0.0: -0.0 -> 0.0)
    return np.maximum(np.max(X, axis=1), -np.min(X, axis=1)) + 0.0


def large_standard_deviation(X, params):
    """std, max and min once for every r (tsfresh recomputes them per r)."""
    s = _std(X)
    rng = np.max(X, axis=1) - np.min(X, axis=1)
    return np.stack([s > (p["r"] * rng) for p in params], axis=1).astype(np.float64)


register("large_standard_deviation")(large_standard_deviation)


def ratio_beyond_r_sigma(X, params):
    """One pass for every r: |x - mean| > r * std counted per threshold."""
    mu, var = _mean_var(X)
    s = np.sqrt(var)
    thr = np.stack([p["r"] * s for p in params], axis=1)
    return _fused.count_beyond(X, mu, np.ascontiguousarray(thr)) / X.shape[1]


register("ratio_beyond_r_sigma")(ratio_beyond_r_sigma)


def symmetry_looking(X, params):
    mmd = np.abs(_mean(X) - _median(X))
    rng = np.max(X, axis=1) - np.min(X, axis=1)
    return np.stack([mmd < (p["r"] * rng) for p in params], axis=1).astype(np.float64)


register("symmetry_looking")(symmetry_looking)

# --------------------------------------------------------------------------- changes


@_plain("mean_abs_change")
def mean_abs_change(X):
    return _fused.abs_diff_sums(X) / (X.shape[1] - 1)  # np.mean's sum, then / count


@_plain("absolute_sum_of_changes")
def absolute_sum_of_changes(X):
    return _fused.abs_diff_sums(X)


@_plain("mean_change")
def mean_change(X):
    return (X[:, -1] - X[:, 0]) / (X.shape[1] - 1)


@_plain("mean_second_derivative_central")
def mean_second_derivative_central(X):
    return (X[:, -1] - X[:, -2] - X[:, 1] + X[:, 0]) / (2 * (X.shape[1] - 2))


@_each("cid_ce")
def cid_ce(X, normalize):
    if X.shape[1] > _FUSED_VAR_MAX:  # one pass, no z-score / diff copies
        m = X.shape[0]
        if not normalize:
            return np.sqrt(_fused.diff_sq_sums(X, np.zeros(m), np.ones(m)))
        mu, var = _mean_var(X)
        s = np.sqrt(var)
        ok = s != 0
        inv = 1.0 / np.where(ok, s, 1.0)
        return np.where(ok, np.sqrt(_fused.diff_sq_sums(X, mu, inv)), 0.0)
    if normalize:
        m, var = _mean_var(X)
        s = np.sqrt(var)
        ok = s != 0
        with np.errstate(all="ignore"):
            Z = (X - m[:, None]) / s[:, None]
        d = np.diff(Z, axis=1)
        out = np.sqrt(np.vecdot(d, d))
        return np.where(ok, out, 0.0)
    d = np.diff(X, axis=1)
    return np.sqrt(np.vecdot(d, d))


@_each("number_crossing_m")
def number_crossing_m(X, m):
    pos = X > m
    return _count_rows(pos[:, 1:] != pos[:, :-1])


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


def autocorrelation(X, params):
    """Mean, variance and the centred copy once for every lag (tsfresh: per lag)."""
    n = X.shape[1]
    mu, v = _mean_var(X)
    C = X - mu[:, None]
    zero = np.isclose(v, 0)
    out = np.full((X.shape[0], len(params)), np.nan)
    for j, p in enumerate(params):
        lag = p["lag"]
        if n < lag:
            continue
        sp = np.sum(C[:, : n - lag] * C[:, lag:], axis=1)
        with np.errstate(all="ignore"):
            out[:, j] = np.where(zero, np.nan, sp / ((n - lag) * v))
    return out


register("autocorrelation")(autocorrelation)


# --------------------------------------------------------------------------- order statistics


def quantile(X, params):
    """All quantiles from one call (one partition at every order statistic needed): each
    value is the same order statistics and the same interpolation as a call per q."""
    return np.quantile(X, [p["q"] for p in params], axis=1).T


register("quantile")(quantile)


@_each("count_above")
def count_above(X, t):
    return _count_rows(X >= t) / X.shape[1]


@_each("count_below")
def count_below(X, t):
    return _count_rows(X <= t) / X.shape[1]


@_each("value_count")
def value_count(X, value):
    if np.isnan(value):
        return np.zeros(X.shape[0])  # the engine's rows are NaN-free
    return _count_rows(X == value)


@_each("range_count")
def range_count(X, min, max):  # noqa: A002 - tsfresh's parameter names
    return _count_rows((X >= min) & (X < max))


@_plain("count_above_mean")
def count_above_mean(X):
    return _count_rows(X > _mean(X)[:, None])


@_plain("count_below_mean")
def count_below_mean(X):
    return _count_rows(X < _mean(X)[:, None])


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
    n = X.shape[1]
    return 1.0 - (n - 1 - _fused.last_extreme(X, True)) / n  # tsfresh: argmax of the reversal


@_plain("first_location_of_minimum")
def first_location_of_minimum(X):
    return np.argmin(X, axis=1) / X.shape[1]


@_plain("last_location_of_minimum")
def last_location_of_minimum(X):
    n = X.shape[1]
    return 1.0 - (n - 1 - _fused.last_extreme(X, False)) / n


@_plain("has_duplicate_max")
def has_duplicate_max(X):
    return _count_rows(X == np.max(X, axis=1)[:, None]) >= 2


@_plain("has_duplicate_min")
def has_duplicate_min(X):
    return _count_rows(X == np.min(X, axis=1)[:, None]) >= 2


@numba.njit(cache=True)
def _hash_slot(bits, mask):
    """splitmix64's finaliser: every bit of the key reaches the low bits used as the slot."""
    z = np.uint64(bits)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z & np.uint64(mask))


_NEG_ZERO = np.array([-0.0]).view(np.int64)[0]


@numba.njit(cache=True)
def _hash_table(n):
    """(keys, counts, mask) of an open-addressing table for up to ``n`` keys, at most half full."""
    size = 16
    while size < 2 * n:
        size *= 2
    return np.empty(size, np.int64), np.zeros(size, np.int64), size - 1


@numba.njit(cache=True, inline="always")
def _find_slot(keys, cnt, bits, mask):
    """The slot holding ``bits``, or the empty slot where it goes (linear probing)."""
    j = _hash_slot(bits, mask)
    while cnt[j] != 0 and keys[j] != bits:
        j = (j + 1) & mask
    return j


def _value_counts(X, stop_at_first):
    """Per row: (distinct values, values seen more than once, points of such values), by an
    open-addressing hash on the bits (-0.0 taken as 0.0, as sorting and pandas do): linear
    time, where np.unique sorts. With ``stop_at_first`` a row stops at its first repeat."""
    return _value_counts_bits(np.ascontiguousarray(X).view(np.int64), stop_at_first, _NEG_ZERO)


@numba.njit(cache=True)
def _value_counts_bits(X, stop_at_first, neg_zero):
    m, n = X.shape
    keys, cnt, mask = _hash_table(n)
    res = np.zeros((m, 3), np.int64)
    for i in range(m):
        cnt[:] = 0
        distinct = 0
        rep_vals = 0
        rep_pts = 0
        for t in range(n):
            b = X[i, t]
            if b == neg_zero:
                b = 0
            j = _find_slot(keys, cnt, b, mask)
            c = cnt[j]
            if c == 0:
                keys[j] = b
                distinct += 1
            elif c == 1:
                rep_vals += 1
                rep_pts += 2
            else:
                rep_pts += 1
            cnt[j] = c + 1
            if stop_at_first and c > 0:
                break
        res[i, 0] = distinct
        res[i, 1] = rep_vals
        res[i, 2] = rep_pts
    return res


@_plain("has_duplicate")
def has_duplicate(X):
    return _value_counts(X, True)[:, 1] > 0


@_plain("ratio_value_number_to_time_series_length")
def ratio_value_number_to_time_series_length(X):
    return _value_counts(X, False)[:, 0] / X.shape[1]


@_plain("percentage_of_reoccurring_values_to_all_values")
def percentage_of_reoccurring_values_to_all_values(X):
    c = _value_counts(X, False)
    return c[:, 1] / c[:, 0]


@_plain("percentage_of_reoccurring_datapoints_to_all_datapoints")
def percentage_of_reoccurring_datapoints_to_all_datapoints(X):
    return _value_counts(X, False)[:, 2] / X.shape[1]


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
    return _count_rows(res)


def mean_n_absolute_max(X, params):
    """The k largest |x| in ascending order (one pass for the largest k asked): the same values
    in the same order as tsfresh's np.sort(np.abs(x))[-k:], so the same mean."""
    ks = [int(p["number_of_maxima"]) for p in params]
    if min(ks) <= 0 or X.shape[1] <= max(ks):
        raise ValueError("tsfresh's own function decides")
    kmax = max(ks)
    top = _fused.top_abs(X, kmax)
    out = np.empty((X.shape[0], len(ks)))
    for j, k in enumerate(ks):
        out[:, j] = np.mean(top[:, kmax - k :], axis=1)
    return out


register("mean_n_absolute_max")(mean_n_absolute_max)


def index_mass_quantile(X, params):
    return _fused.index_mass(X, np.array([float(p["q"]) for p in params]))


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


def _zero_below(arg, tol):
    return np.where(np.abs(arg) < tol, 0, arg)


def _centred_sums(X, p):
    """(count, sum d**2, sum d**p) per row, each zeroed below its round-off bound as pandas does.

    Long rows take one fused pass (no n-wide temporaries); short rows NumPy's arrays.
    """
    count = float(X.shape[1])
    mean = X.sum(axis=1, dtype=np.float64) / count
    if X.shape[1] > _FUSED_VAR_MAX:
        m2, mp = _fused.centred_power_sums(X, mean, p)
        max_abs = np.maximum(np.max(X, axis=1), -np.min(X, axis=1))  # max|x|, no |x| copy
    else:
        adj = X - mean[:, None]
        adj2 = adj**2
        m2 = adj2.sum(axis=1, dtype=np.float64)
        mp = (adj2 * adj if p == 3 else adj2**2).sum(axis=1, dtype=np.float64)
        max_abs = np.abs(X).max(axis=1, initial=0.0)
    m2 = _zero_below(m2, ((_EPS * max_abs) ** 2) * count)
    mp = _zero_below(mp, ((_EPS * max_abs) ** p) * count)
    return count, m2, mp


@_plain("skewness", min_len=3)
def skewness(X):
    count, m2, m3 = _centred_sums(X, 3)
    res = (count * (count - 1) ** 0.5 / (count - 2)) * (m3 / m2**1.5)
    return np.where(m2 == 0, 0.0, res)


@_plain("kurtosis", min_len=4)
def kurtosis(X):
    count, m2, m4 = _centred_sums(X, 4)
    adj = 3 * (count - 1) ** 2 / ((count - 2) * (count - 3))
    num = count * (count + 1) * (count - 1) * m4
    den = (count - 2) * (count - 3) * m2**2
    return np.where(den == 0, 0.0, num / den - adj)


# --------------------------------------------------------------------------- reoccurring sums


@numba.njit(cache=True)
def _distinct_bits(row, neg_zero):
    """Distinct values (as bits, -0.0 as 0.0) of one row and their counts, by hashing."""
    n = row.shape[0]
    keys, cnt, mask = _hash_table(n)
    slots = np.empty(n, np.int64)
    k = 0
    for t in range(n):
        b = row[t]
        if b == neg_zero:
            b = 0
        j = _find_slot(keys, cnt, b, mask)
        if cnt[j] == 0:
            keys[j] = b
            slots[k] = j
            k += 1
        cnt[j] += 1
    return keys[slots[:k]], cnt[slots[:k]]


def _reoccurring(X, points: bool):
    """tsfresh's ``np.sum(counts * unique)`` with counts clipped (values) or zeroed below 2
    (data points). Distinct values and counts come from a hash (linear time); only the
    distinct values are sorted, giving np.unique's arrays, so the sum is over the same array in
    the same order (the same pairwise rounding). Rows without repeats are 0."""
    B = np.ascontiguousarray(X).view(np.int64)
    c = _value_counts(X, True)  # stops at a row's first repeat
    out = np.zeros(X.shape[0])
    for i in np.flatnonzero(c[:, 1] > 0):
        keys, counts = _distinct_bits(B[i], _NEG_ZERO)
        vals = keys.view(np.float64)
        order = np.argsort(vals)
        uniq = vals[order]
        counts = counts[order]
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


@numba.njit(cache=True)
def _bin_counts(X, lo, hi, edges, bins, bad):
    """np.histogram's uniform-bin index arithmetic per element (the same float operations in
    the same order), counted per row."""
    m, n = X.shape
    H = np.zeros((m, bins), np.int64)
    for i in range(m):
        if bad[i]:
            continue
        denom = hi[i] - lo[i]
        for t in range(n):
            x = X[i, t]
            f = (x - lo[i]) / denom * bins
            j = np.int64(f)
            if j == bins:
                j -= 1
            if x < edges[i, j]:
                j -= 1
            if x >= edges[i, j + 1] and j != bins - 1:
                j += 1
            H[i, j] += 1
    return H


def _histogram_rows(X, bins: int) -> np.ndarray:
    """np.histogram(x, bins)[0] for every row (uniform bins from the row's min and max), with
    NumPy's own edges (np.linspace) and index arithmetic: (m, bins) float counts, NaN rows
    where np.histogram raises (edges not increasing: a range too small for that many bins)."""
    lo = X.min(axis=1)
    hi = X.max(axis=1)
    same = lo == hi
    lo = np.where(same, lo - 0.5, lo)
    hi = np.where(same, hi + 0.5, hi)
    edges = np.ascontiguousarray(np.linspace(lo, hi, bins + 1, axis=1))
    bad = np.any(edges[:, :-1] >= edges[:, 1:], axis=1)
    H = _bin_counts(X, lo, hi, edges, int(bins), bad).astype(np.float64)
    H[bad] = np.nan
    return H


def _entropy_of_counts(H: np.ndarray, n: int) -> np.ndarray:
    probs = H / n  # NaN rows stay NaN
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


#: Kernels whose NumPy form makes full-size temporaries (centred copies, squares, masks of
#: floats, partition copies): the engine feeds them cache-sized row blocks on long eras.
_BLOCKED = (
    "standard_deviation", "variance", "variance_larger_than_standard_deviation",
    "variation_coefficient", "root_mean_square", "large_standard_deviation",
    "ratio_beyond_r_sigma", "cid_ce", "time_reversal_asymmetry_statistic", "c3",
    "autocorrelation", "skewness", "kurtosis", "energy_ratio_by_chunks", "number_peaks",
    "count_above_mean", "count_below_mean", "number_crossing_m", "range_count",
    "longest_strike_below_mean", "longest_strike_above_mean",
)
#: ... of which these take one numba pass above ``_FUSED_VAR_MAX`` points (no temporaries).
_ONE_PASS_LONG = (
    "standard_deviation", "variance", "variance_larger_than_standard_deviation",
    "variation_coefficient", "root_mean_square", "large_standard_deviation",
    "ratio_beyond_r_sigma", "cid_ce", "skewness", "kurtosis",
)
for _name in _BLOCKED:
    KERNELS[_name] = dataclasses.replace(
        KERNELS[_name], block=True,
        unblocked_from=_FUSED_VAR_MAX + 1 if _name in _ONE_PASS_LONG else 1 << 62,
    )


#: Every calculator registered in this module (single NumPy passes, no per-series loops).
CHEAP = frozenset(k for k, v in KERNELS.items() if v.fn.__module__ == __name__)
