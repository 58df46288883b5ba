"""number_cwt_peaks: scipy's find_peaks_cwt (as tsfresh calls it) counted without Python loops.

tsfresh returns ``len(find_peaks_cwt(x, widths=1..n, wavelet=ricker))``. The count needs:
1. the CWT rows (computed with scipy's own ``_cwt`` and tsfresh's ricker, so bit-identical;
   rows do not depend on each other, so one CWT with widths 1..max(n) serves every n);
2. scipy's ridge-line tracking (``_identify_ridge_lines``), replayed in numba: a ridge point
   joins the line whose last column is nearest (first such line in list order on ties) within
   ``max_distances[row]``, lines whose gap exceeds ``gap_thresh`` are closed;
3. scipy's filter: at least ``ceil(rows/4)`` points and ``|cwt[row, col] / noise[col]| >= 1``
   (NaN passes) at the line's last point, where ``noise`` is the 10th percentile
   (``scoreatpercentile``, 'fraction' interpolation, the same arithmetic) of cwt row 0 over a
   window of ``ceil(N/20)`` points. The percentile is taken only where a line needs it, with a
   Fenwick tree over the window's ranks (O(log N) per point instead of a sort per point).
"""
from __future__ import annotations

import numba
import numpy as np
from scipy.signal._wavelets import _cwt
from tsfresh.feature_extraction.feature_calculators import _ricker

from .registry import register


@numba.njit(cache=True)
def _ridge_lines(mask, max_distances, gap_thresh):
    """For every ridge line: (number of points, row and column of its last point)."""
    R, N = mask.shape
    start_row = -1
    for r in range(R - 1, -1, -1):
        for c in range(N):
            if mask[r, c]:
                start_row = r
                break
        if start_row >= 0:
            break
    total = 0
    for r in range(R):
        for c in range(N):
            if mask[r, c]:
                total += 1
    length = np.zeros(total, np.int64)
    last_row = np.zeros(total, np.int64)
    last_col = np.zeros(total, np.int64)
    gap = np.zeros(total, np.int64)
    if start_row < 0:
        return length[:0], last_row[:0], last_col[:0]
    nlines = 0
    act = np.empty(total, np.int64)  # open lines, in scipy's list order
    nact = 0
    for c in range(N):
        if mask[start_row, c]:
            length[nlines] = 1
            last_row[nlines] = start_row
            last_col[nlines] = c
            act[nact] = nlines
            nact += 1
            nlines += 1
    for row in range(start_row - 1, -1, -1):
        for j in range(nact):
            gap[act[j]] += 1
        nprev = nact
        prev_cols = np.empty(nprev, np.int64)
        for j in range(nprev):
            prev_cols[j] = last_col[act[j]]
        order = np.argsort(prev_cols, kind="mergesort")  # by column, then list position
        svals = prev_cols[order]
        md = max_distances[row]
        for col in range(N):
            if not mask[row, col]:
                continue
            line = -1
            if nprev > 0:
                pos = np.searchsorted(svals, col)  # first >= col
                best_d = -1
                best_j = -1
                if pos < nprev:
                    d = svals[pos] - col
                    best_d = d
                    best_j = order[pos]  # first of its group: smallest list position
                if pos > 0:
                    v = svals[pos - 1]
                    first = np.searchsorted(svals, v)
                    d = col - v
                    jj = order[first]
                    if best_d < 0 or d < best_d or (d == best_d and jj < best_j):
                        best_d = d
                        best_j = jj
                if best_d <= md:
                    line = act[best_j]
            if line >= 0:
                length[line] += 1
                last_row[line] = row
                last_col[line] = col
                gap[line] = 0
            else:
                length[nlines] = 1
                last_row[nlines] = row
                last_col[nlines] = col
                act[nact] = nlines
                nact += 1
                nlines += 1
        k = 0
        for j in range(nact):
            if gap[act[j]] <= gap_thresh:
                act[k] = act[j]
                k += 1
        nact = k
    return length[:nlines], last_row[:nlines], last_col[:nlines]


@numba.njit(cache=True)
def _noise_at(row_one, cols, window_size):
    """scoreatpercentile(row_one[window], 10) for each (ascending) column in ``cols``."""
    N = row_one.shape[0]
    hf = window_size // 2
    odd = window_size % 2
    order = np.argsort(row_one)
    rank = np.empty(N, np.int64)
    for i in range(N):
        rank[order[i]] = i
    svals = row_one[order]
    tree = np.zeros(N + 1, np.int64)
    LOG = 1
    while (1 << LOG) <= N:
        LOG += 1
    out = np.empty(cols.shape[0])
    a = 0
    b = 0
    for t in range(cols.shape[0]):
        c = cols[t]
        wa = max(c - hf, 0)
        wb = min(c + hf + odd, N)
        while b < wb:
            i = rank[b] + 1
            while i <= N:
                tree[i] += 1
                i += i & (-i)
            b += 1
        while a < wa:
            i = rank[a] + 1
            while i <= N:
                tree[i] -= 1
                i += i & (-i)
            a += 1
        L = wb - wa
        idx = 0.1 * (L - 1)
        i0 = int(idx)
        # k-th smallest (1-based) by Fenwick descent, for k = i0 + 1 and i0 + 2
        vals = np.empty(2)
        for q in range(2):
            kk = i0 + 1 + q
            if q == 1 and float(i0) == idx:
                break
            pos = 0
            rem = kk
            step = 1 << (LOG - 1)
            while step > 0:
                nxt = pos + step
                if nxt <= N and tree[nxt] < rem:
                    pos = nxt
                    rem -= tree[nxt]
                step >>= 1
            vals[q] = svals[pos]
        if float(i0) == idx:
            out[t] = vals[0]
        else:
            w0 = (i0 + 1) - idx
            w1 = idx - i0
            out[t] = (vals[0] * w0 + vals[1] * w1) / (w0 + w1)
    return out


def _relmax(M: np.ndarray) -> np.ndarray:
    mask = np.zeros(M.shape, dtype=np.bool_)
    mask[:, 1:-1] = (M[:, 1:-1] > M[:, :-2]) & (M[:, 1:-1] > M[:, 2:])
    return mask


def count_cwt_peaks(x: np.ndarray, ns) -> list[int]:
    """len(find_peaks_cwt(x, widths=np.array(range(1, n + 1)), wavelet=ricker)) for each n."""
    N = len(x)
    widths = np.array(list(range(1, max(ns) + 1)))
    cwt = _cwt(x, _ricker, widths)
    mask_all = _relmax(cwt)
    window_size = int(np.ceil(N / 20))
    row_one = np.ascontiguousarray(cwt[0])
    out = []
    for n in ns:
        M = cwt[:n]
        max_distances = widths[:n] / 4.0
        gap_thresh = float(np.ceil(widths[0]))
        length, lrow, lcol = _ridge_lines(np.ascontiguousarray(mask_all[:n]), max_distances, gap_thresh)
        keep = length >= np.ceil(n / 4)
        if not keep.any():
            out.append(0)
            continue
        cols = np.unique(lcol[keep])
        noise = _noise_at(row_one, cols, window_size)
        nz = noise[np.searchsorted(cols, lcol[keep])]
        with np.errstate(all="ignore"):
            snr = np.abs(M[lrow[keep], lcol[keep]] / nz)
        out.append(int(np.count_nonzero(~(snr < 1))))
    return out


def number_cwt_peaks(X: np.ndarray, params) -> np.ndarray:
    ns = sorted({p["n"] for p in params})
    out = np.empty((X.shape[0], len(params)))
    for i in range(X.shape[0]):
        counts = dict(zip(ns, count_cwt_peaks(X[i], ns)))
        out[i] = [counts[p["n"]] for p in params]
    return out


register("number_cwt_peaks", min_len=8)(number_cwt_peaks)
