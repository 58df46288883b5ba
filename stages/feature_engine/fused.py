"""Single-pass numba loops for calculators whose NumPy form makes temporaries (diff, abs,
cumsum, a full sort) that tsfresh's form makes too: fused here, with NumPy's own rounding.

``_pairwise`` is NumPy's pairwise summation (``np.add.reduce`` on a contiguous float64 row:
blocks of 128 with eight partial sums, halves split at multiples of 8, a zero start), so a sum
over a virtual array (``|x[t+1] - x[t]|``, ``|x[t]|``) equals ``np.sum`` of the materialised one
bit for bit; cumulative sums are sequential, as ``np.cumsum``.
"""
from __future__ import annotations

import numba
import numpy as np

ABS_DIFF = 0
ABS = 1
PLAIN = 2
SQ_DEV = 3  # (x - c) * (x - c), as np.var's multiply(x, x) of the centred copy
SQ = 4


@numba.njit(cache=True, inline="always")
def _term(x, i, mode, c=0.0):
    if mode == ABS_DIFF:
        return abs(x[i + 1] - x[i])
    if mode == ABS:
        return abs(x[i])
    if mode == PLAIN:
        return x[i]
    if mode == SQ_DEV:
        d = x[i] - c
        return d * d
    return x[i] * x[i]


@numba.njit(cache=True)
def _leaf(x, lo, n, mode, c=0.0):
    if n < 8:
        res = 0.0
        for i in range(n):
            res += _term(x, lo + i, mode, c)
        return res
    r0 = _term(x, lo, mode, c)
    r1 = _term(x, lo + 1, mode, c)
    r2 = _term(x, lo + 2, mode, c)
    r3 = _term(x, lo + 3, mode, c)
    r4 = _term(x, lo + 4, mode, c)
    r5 = _term(x, lo + 5, mode, c)
    r6 = _term(x, lo + 6, mode, c)
    r7 = _term(x, lo + 7, mode, c)
    i = 8
    stop = n - (n % 8)
    while i < stop:
        r0 += _term(x, lo + i, mode, c)
        r1 += _term(x, lo + i + 1, mode, c)
        r2 += _term(x, lo + i + 2, mode, c)
        r3 += _term(x, lo + i + 3, mode, c)
        r4 += _term(x, lo + i + 4, mode, c)
        r5 += _term(x, lo + i + 5, mode, c)
        r6 += _term(x, lo + i + 6, mode, c)
        r7 += _term(x, lo + i + 7, mode, c)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += _term(x, lo + i, mode, c)
        i += 1
    return res


@numba.njit(cache=True)
def _pairwise(x, lo, n, mode, c=0.0):
    """NumPy's recursive halving (n > 128: first n // 2 rounded down to a multiple of 8, then
    the rest; left + right), as an explicit post-order walk (numba's cache and recursion do
    not mix)."""
    if n <= 128:
        return _leaf(x, lo, n, mode, c)
    node_lo = np.empty(128, np.int64)
    node_n = np.empty(128, np.int64)
    state = np.empty(128, np.int64)
    vals = np.empty(128)
    top = 0
    nv = 0
    node_lo[0] = lo
    node_n[0] = n
    state[0] = 0
    while top >= 0:
        cl = node_lo[top]
        cn = node_n[top]
        if cn <= 128:
            vals[nv] = _leaf(x, cl, cn, mode, c)
            nv += 1
            top -= 1
            continue
        n2 = cn // 2
        n2 -= n2 % 8
        if state[top] == 0:
            state[top] = 1
            top += 1
            node_lo[top] = cl
            node_n[top] = n2
            state[top] = 0
        elif state[top] == 1:
            state[top] = 2
            top += 1
            node_lo[top] = cl + n2
            node_n[top] = cn - n2
            state[top] = 0
        else:
            right = vals[nv - 1]
            left = vals[nv - 2]
            nv -= 2
            vals[nv] = left + right
            nv += 1
            top -= 1
    return vals[0]


@numba.njit(cache=True)
def abs_diff_sums(X):
    """np.sum(np.abs(np.diff(x))) per row, without the two temporaries."""
    m, n = X.shape
    out = np.empty(m)
    for i in range(m):
        out[i] = 0.0 + _pairwise(X[i], 0, n - 1, ABS_DIFF)
    return out


@numba.njit(cache=True)
def index_mass(X, qs):
    """tsfresh's index_mass_quantile: (argmax(cumsum(|x|) / sum(|x|) >= q) + 1) / n per row and
    q, NaN where sum(|x|) == 0. The normalised cumulative mass is nondecreasing (sums of
    non-negative terms, divided by a positive number), so the first index is found by bisection;
    argmax of an all-False mask is 0, as in NumPy."""
    m, n = X.shape
    nq = qs.shape[0]
    out = np.empty((m, nq))
    c = np.empty(n)
    for i in range(m):
        s = 0.0 + _pairwise(X[i], 0, n, ABS)
        if s == 0:
            out[i, :] = np.nan
            continue
        acc = 0.0
        for t in range(n):
            acc += abs(X[i, t])
            c[t] = acc
        for j in range(nq):
            q = qs[j]
            lo = 0
            hi = n  # first t with c[t] / s >= q, n if none
            while lo < hi:
                mid = (lo + hi) // 2
                if c[mid] / s >= q:
                    hi = mid
                else:
                    lo = mid + 1
            k = lo if lo < n else 0
            out[i, j] = (k + 1) / n
    return out


@numba.njit(cache=True)
def _last_equal(X, v):
    m, n = X.shape
    out = np.zeros(m, np.int64)
    for i in range(m):
        for t in range(n - 1, -1, -1):
            if X[i, t] == v[i]:
                out[i] = t
                break
    return out


def last_extreme(X, want_max):
    """Index of the last maximum (or minimum) per row: NumPy's SIMD max, then a backward scan
    that stops at the first equal value."""
    return _last_equal(X, X.max(axis=1) if want_max else X.min(axis=1))


@numba.njit(cache=True)
def top_abs(X, k):
    """The k largest |x| per row, ascending (what np.sort(np.abs(x))[-k:] holds), by a small
    insertion buffer in one pass (no full sort)."""
    m, n = X.shape
    out = np.empty((m, k))
    buf = np.empty(k)
    for i in range(m):
        for t in range(k):  # the first k, sorted ascending
            v = abs(X[i, t])
            j = t
            while j > 0 and buf[j - 1] > v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
        for t in range(k, n):
            v = abs(X[i, t])
            if v > buf[0]:
                j = 1
                while j < k and buf[j] < v:
                    buf[j - 1] = buf[j]
                    j += 1
                buf[j - 1] = v
        out[i, :] = buf
    return out


@numba.njit(cache=True)
def mean_var(X):
    """(np.mean(x), np.var(x)) per row: NumPy's two pairwise sums (of x, then of the squared
    deviations from the mean) without its centred copy."""
    m, n = X.shape
    mu = np.empty(m)
    var = np.empty(m)
    for i in range(m):
        mean = (0.0 + _pairwise(X[i], 0, n, PLAIN, 0.0)) / n
        mu[i] = mean
        var[i] = (0.0 + _pairwise(X[i], 0, n, SQ_DEV, mean)) / n
    return mu, var


@numba.njit(cache=True)
def mean_square(X):
    m, n = X.shape
    out = np.empty(m)
    for i in range(m):
        out[i] = (0.0 + _pairwise(X[i], 0, n, SQ, 0.0)) / n
    return out


@numba.njit(cache=True)
def count_beyond(X, mu, thresholds):
    """Per row and threshold column: #{t: |x_t - mu| > threshold}."""
    m, n = X.shape
    k = thresholds.shape[1]
    out = np.zeros((m, k))
    for i in range(m):
        for t in range(n):
            d = abs(X[i, t] - mu[i])
            for j in range(k):
                if d > thresholds[i, j]:
                    out[i, j] += 1
    return out


# --------------------------------------------------------------------------- long rows
# Above a few thousand points NumPy's SIMD passes beat the replayed pairwise sums, but its
# multi-step forms (centre, square, sum; abs, max; subtract, divide, diff, dot) stream the row
# through memory several times. These loops make one pass each and let LLVM reassociate the
# sums (SIMD lanes, several accumulators): the rounding differs from NumPy's pairwise order by
# a few units in the last place of a sum of non-negative terms (or of a centred moment, whose
# mean is NumPy's own), far inside the engine's 1e-9 tolerance. Maxima are exact.

_REASSOC = {"reassoc", "nsz", "nnan", "ninf", "contract"}


@numba.njit(cache=True, fastmath=_REASSOC)
def sq_dev_sums(X, mu):
    """sum((x - mu)**2) per row (np.var's numerator for mu = np.mean(x))."""
    m, n = X.shape
    out = np.empty(m)
    for i in range(m):
        c = mu[i]
        s = 0.0
        for t in range(n):
            d = X[i, t] - c
            s += d * d
        out[i] = s
    return out


@numba.njit(cache=True, fastmath=_REASSOC)
def sq_sums(X):
    """sum(x**2) per row."""
    m, n = X.shape
    out = np.empty(m)
    for i in range(m):
        s = 0.0
        for t in range(n):
            s += X[i, t] * X[i, t]
        out[i] = s
    return out


@numba.njit(cache=True, fastmath=_REASSOC)
def diff_sq_sums(X, mu, inv_s):
    """sum(diff((x - mu) * inv_s)**2) per row (tsfresh's cid_ce on the z-scores; mu = 0,
    inv_s = 1 for the raw series), without the z-score and diff temporaries."""
    m, n = X.shape
    out = np.empty(m)
    for i in range(m):
        c = mu[i]
        k = inv_s[i]
        s = 0.0
        for t in range(n - 1):
            d = (X[i, t + 1] - c) * k - (X[i, t] - c) * k
            s += d * d
        out[i] = s
    return out


@numba.njit(cache=True, fastmath=_REASSOC)
def centred_power_sums(X, mu, p):
    """(sum(d**2), sum(d**p)) per row with d = x - mu (p = 3 or 4): pandas' nanskew /
    nankurt sums without the adjusted, squared and cubed copies (a max in the same loop would
    keep LLVM from vectorising it)."""
    m, n = X.shape
    out = np.empty((2, m))
    for i in range(m):
        c = mu[i]
        s2 = 0.0
        sp = 0.0
        if p == 3:
            for t in range(n):
                d = X[i, t] - c
                d2 = d * d
                s2 += d2
                sp += d2 * d
        else:
            for t in range(n):
                d = X[i, t] - c
                d2 = d * d
                s2 += d2
                sp += d2 * d2
        out[0, i] = s2
        out[1, i] = sp
    return out


@numba.njit(cache=True)
def band(x, lo, hi, buf):
    """Values of x in [lo, hi] copied to the front of buf (buf holds len(x) + 1); returns
    (#below lo, #above hi, #in band). One branch-free pass: every value is written at the
    band's end and kept only if inside (random data would mispredict a branch per value)."""
    below = 0
    above = 0
    k = 0
    for t in range(x.shape[0]):
        v = x[t]
        below += v < lo
        above += v > hi
        buf[k] = v
        k += (v >= lo) & (v <= hi)
    return below, above, k
