"""Entropy-type calculators: lempel_ziv_complexity, permutation_entropy, sample_entropy,
approximate_entropy.

* lempel_ziv_complexity: tsfresh's phrase parse (a set of tuples) is a prefix-closed
  dictionary, so a trie walk in numba counts the same phrases.
* permutation_entropy: ordinal patterns from pairwise comparisons; windows with tied values
  take their pattern from NumPy's own ``argsort(argsort(.))`` (whose tie order is an
  implementation detail) so the counts are the same as tsfresh's.
* sample_entropy / approximate_entropy: the same integer match counts as tsfresh's quadratic
  arrays, in linear memory: pairs are enumerated in order of the first coordinate and only
  those within the largest tolerance are compared (floating subtraction is monotone, so the
  cut-off is exact); the final logs and sums are NumPy's, on the same arrays. sample_entropy
  first groups identical windows by hashing (a pair of groups of sizes a and b is a * b
  matches), so tie-heavy series (binary, constant runs) take about linear time.
"""
from __future__ import annotations

import numba
import numpy as np

from .registry import register

# --------------------------------------------------------------------------- Lempel-Ziv


@numba.njit(cache=True)
def _lz_phrases(seq, alphabet):
    n = seq.shape[0]
    children = np.full((n + 1, alphabet), -1, np.int32)
    nodes = 1
    count = 0
    ind = 0
    inc = 1
    node = 0  # trie node of seq[ind : ind + inc - 1]
    while ind + inc <= n:
        s = seq[ind + inc - 1]
        child = children[node, s]
        if child >= 0:
            node = child
            inc += 1
        else:
            children[node, s] = nodes
            nodes += 1
            count += 1
            ind += inc
            inc = 1
            node = 0
    return count


def lempel_ziv_complexity(X: np.ndarray, params) -> np.ndarray:
    out = np.empty((X.shape[0], len(params)))
    for i in range(X.shape[0]):
        x = X[i]
        lo, hi = np.min(x), np.max(x)
        for j, p in enumerate(params):
            b = p["bins"]
            edges = np.linspace(lo, hi, b + 1)[1:]
            seq = np.searchsorted(edges, x, side="left").astype(np.int64)
            out[i, j] = _lz_phrases(seq, b + 1) / len(x)
    return out


register("lempel_ziv_complexity", min_len=2)(lempel_ziv_complexity)

# --------------------------------------------------------------------------- permutation


def _perm_codes(W: np.ndarray) -> np.ndarray:
    """Base-d code of argsort(argsort(w)) for each window row w (lexicographic order)."""
    K, d = W.shape
    less = W[:, :, None] < W[:, None, :]  # less[k, i, j]: w_i < w_j
    ranks = less.sum(axis=1)  # rank_j = #{i: w_i < w_j}
    eq = (W[:, :, None] == W[:, None, :]).sum(axis=(1, 2)) > d
    if eq.any():
        ranks[eq] = np.argsort(np.argsort(W[eq]))
    weights = d ** np.arange(d - 1, -1, -1, dtype=np.int64)
    return ranks.astype(np.int64) @ weights


def permutation_entropy(X: np.ndarray, params) -> np.ndarray:
    out = np.empty((X.shape[0], len(params)))
    n = X.shape[1]
    for j, p in enumerate(params):
        tau, d = p["tau"], p["dimension"]
        assert d > 1 and tau > 0
        num = (n - d) // tau + 1
        if num <= 0:
            out[:, j] = np.nan
            continue
        idx = tau * np.arange(num)[:, None] + np.arange(d)[None, :]
        for i in range(X.shape[0]):
            counts = np.bincount(_perm_codes(X[i][idx]), minlength=1)
            counts = counts[counts > 0]  # ascending code = np.unique(axis=0)'s row order
            probs = counts / num
            out[i, j] = -np.sum(probs * np.log(probs))
    return out


register("permutation_entropy", min_len=8)(permutation_entropy)

# --------------------------------------------------------------------------- sample entropy


@numba.njit(cache=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _template_groups(bits, d, count):
    """Identical d-windows among the first ``count`` window starts of one row (``bits``: the
    row's float64 bits with -0.0 made 0.0), by hashing: (a representative start per distinct
    window, its multiplicity)."""
    size = 16
    while size < 2 * count:
        size *= 2
    mask = np.uint64(size - 1)
    rep = np.full(size, -1, np.int64)
    cnt = np.zeros(size, np.int64)
    used = np.empty(count, np.int64)
    k = 0
    for s in range(count):
        h = np.uint64(d)
        for t in range(d):
            h = _mix(h ^ np.uint64(bits[s + t]))
        j = np.int64(h & mask)
        while rep[j] >= 0:
            r = rep[j]
            same = True
            for t in range(d):
                if bits[r + t] != bits[s + t]:
                    same = False
                    break
            if same:
                break
            j = (j + 1) & (size - 1)
        if rep[j] < 0:
            rep[j] = s
            used[k] = j
            k += 1
        cnt[j] += 1
    return rep[used[:k]], cnt[used[:k]]


@numba.njit(cache=True)
def _matching_pairs(x, starts, counts, d, tol):
    """Ordered pairs of windows (no window with itself) whose coordinates all differ by at
    most ``tol``, over distinct windows with multiplicities: identical windows match each other
    (c * (c - 1)), distinct ones are compared in order of their first coordinate and only while
    that one is within ``tol`` (floating subtraction is monotone, so the cut-off is exact)."""
    order = np.argsort(x[starts], kind="mergesort")
    K = starts.shape[0]
    first = np.empty(K)
    for p in range(K):
        first[p] = x[starts[order[p]]]
    total = 0
    for p in range(K):
        i = starts[order[p]]
        ci = counts[order[p]]
        total += ci * (ci - 1)
        for q in range(p + 1, K):
            if first[q] - first[p] > tol:
                break
            j = starts[order[q]]
            ok = True
            for t in range(1, d):
                if abs(x[i + t] - x[j + t]) > tol:
                    ok = False
                    break
            if ok:
                total += 2 * ci * counts[order[q]]
    return total


def _sample_counts(x: np.ndarray, tol: float) -> tuple[int, int]:
    """(A, B) of tsfresh's sample_entropy: ordered pairs (no self-pairs) of matching 3-windows
    (starts 0..n-3) and 2-windows (starts 0..n-2). Identical windows are grouped by hashing
    first, so series with many tied values (binary, constant runs) are counted in about linear
    time; the comparisons are tsfresh's (``abs(a - b) <= tol`` on the same floats)."""
    n = len(x)
    bits = (x + 0.0).view(np.int64)  # -0.0 -> 0.0: equal values, equal bits
    s2, c2 = _template_groups(bits, 2, n - 1)
    s3, c3 = _template_groups(bits, 3, n - 2)
    return int(_matching_pairs(x, s3, c3, 3, tol)), int(_matching_pairs(x, s2, c2, 2, tol))


def sample_entropy(X: np.ndarray, params) -> np.ndarray:
    out = np.empty((X.shape[0], 1))
    for i in range(X.shape[0]):
        x = np.ascontiguousarray(X[i])
        tol = 0.2 * np.std(x)
        A, B = _sample_counts(x, tol)
        with np.errstate(all="ignore"):
            out[i, 0] = -np.log(np.int64(A) / np.int64(B))
    return out


register("sample_entropy", min_len=4)(sample_entropy)

# --------------------------------------------------------------------------- approximate entropy


@numba.njit(cache=True)
def _apen_counts(x, m, rs):
    """Match counts per window (self included) for windows of length m and m + 1, per r."""
    N = x.shape[0]
    nr = rs.shape[0]
    nm = N - m + 1
    c_m = np.ones((nr, nm), np.int64)
    c_m1 = np.ones((nr, nm - 1), np.int64)
    rmax = rs.max()
    order = np.argsort(x[:nm], kind="mergesort")
    xs = x[:nm][order]
    for p in range(nm):
        i = order[p]
        for q in range(p + 1, nm):
            if xs[q] - xs[p] > rmax:
                break
            j = order[q]
            d = xs[q] - xs[p]
            for k in range(1, m):
                e = abs(x[i + k] - x[j + k])
                if e > d:
                    d = e
            d1 = d
            if i < nm - 1 and j < nm - 1:
                e = abs(x[i + m] - x[j + m])
                if e > d1:
                    d1 = e
                both = True
            else:
                both = False
            for t in range(nr):
                if d <= rs[t]:
                    c_m[t, i] += 1
                    c_m[t, j] += 1
                    if both and d1 <= rs[t]:
                        c_m1[t, i] += 1
                        c_m1[t, j] += 1
    return c_m, c_m1


def _phi(counts: np.ndarray, N: int, m: int) -> float:
    C = counts / (N - m + 1)
    return np.sum(np.log(C)) / (N - m + 1.0)


def approximate_entropy(X: np.ndarray, params) -> np.ndarray:
    out = np.empty((X.shape[0], len(params)))
    N = X.shape[1]
    ms = sorted({p["m"] for p in params})
    for i in range(X.shape[0]):
        x = X[i]
        s = np.std(x)
        for m in ms:
            cols = [j for j, p in enumerate(params) if p["m"] == m]
            rs = np.array([params[j]["r"] * s for j in cols], dtype=np.float64)
            if N <= m + 1:
                out[i, cols] = 0.0
                continue
            if np.any(rs < 0):
                raise ValueError("Parameter r must be positive.")
            c_m, c_m1 = _apen_counts(x, m, rs)
            for t, j in enumerate(cols):
                out[i, j] = np.abs(_phi(c_m[t], N, m) - _phi(c_m1[t], N, m + 1))
    return out


register("approximate_entropy", min_len=8)(approximate_entropy)
