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
  cut-off is exact); the final logs and sums are NumPy's, on the same arrays.
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
def _sample_counts(x, tol):
    """(A, B) of tsfresh's sample_entropy: matching pairs of 3- and 2-windows (ordered, no self)."""
    n = x.shape[0]
    nb = n - 1  # 2-windows start at 0..n-2
    order = np.argsort(x[:nb], kind="mergesort")
    xs = x[:nb][order]
    A = 0
    B = 0
    for p in range(nb):
        i = order[p]
        for q in range(p + 1, nb):
            if xs[q] - xs[p] > tol:
                break
            j = order[q]
            if abs(x[i + 1] - x[j + 1]) <= tol:
                B += 2
                if i < n - 2 and j < n - 2 and abs(x[i + 2] - x[j + 2]) <= tol:
                    A += 2
    return A, B


def sample_entropy(X: np.ndarray, params) -> np.ndarray:
    out = np.empty((X.shape[0], 1))
    for i in range(X.shape[0]):
        x = X[i]
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
