"""Unsupervised feature selection over an era x feature matrix.

Steps, each column getting the first reason that applies:

1. ``all_nan``: no finite value (``inf`` counts as missing here).
2. ``low_variance``: population variance (ddof 0, NaN ignored) <= ``variance_threshold``.
   With one era every variance is 0, so every column is low_variance and nothing is
   "correlated": one observation says nothing about correlation.
3. ``correlated``: greedy in column order. A column is dropped when |Pearson r| with an
   already *kept* column exceeds ``correlation_threshold``; ``partner`` is the first such
   kept column. r uses the eras where both columns have a value (pairwise complete, as
   ``DataFrame.corr``); a pair with fewer than two shared eras or no spread on them is not
   correlated.
4. ``kept``.

The correlation pass never holds the p x p matrix: columns go in blocks of ``block_size``,
each compared with the kept columns before it, block against block (memory
O(block_size^2 + n x p)).

Optional PCA (scikit-learn) runs on the kept columns, NaN filled with the column mean and
standardized, with min(pca_components, eras, kept) components; it needs two eras or more
and otherwise reports no ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

KEPT, LOW_VARIANCE, CORRELATED, ALL_NAN = "kept", "low_variance", "correlated", "all_nan"
BLOCK_SIZE = 1024


@dataclass
class SelectionResult:
    table: pd.DataFrame  # feature, variance, kept, reason, partner
    pca_explained_variance: list[float]  # empty when PCA is off
    selected: list[str]


class _Columns:
    """Centered values with NaN as 0 plus presence masks: what pairwise sums need."""

    def __init__(self, values: np.ndarray) -> None:
        present = ~np.isnan(values)
        means = np.nanmean(values, axis=0)  # every column has a value: callers pass candidates only
        centered = np.where(present, values - means, 0.0)
        scale = np.sqrt((centered**2).sum(axis=0))  # rescaling keeps sums well conditioned
        scale[scale == 0] = 1.0
        self.x = centered / scale
        self.m = present.astype("float64")
        self.x2 = self.x**2
        self.has_nan = ~present.all(axis=0)
        self.flat = (centered**2).sum(axis=0) == 0  # no spread: r undefined

    def corr(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise-complete Pearson r between columns a (rows) and b (columns)."""
        xa, xb = self.x[:, a], self.x[:, b]
        if not (self.has_nan[a].any() or self.has_nan[b].any()):
            # Complete columns, centered, unit norm: r is a dot product (the common case).
            full = np.clip(xa.T @ xb, -1.0, 1.0)
            full[self.flat[a], :] = np.nan
            full[:, self.flat[b]] = np.nan
            return full
        ma, mb = self.m[:, a], self.m[:, b]
        n = ma.T @ mb
        sab = xa.T @ xb
        sa = xa.T @ mb  # sum of a over eras where b is present
        sb = ma.T @ xb
        saa = self.x2[:, a].T @ mb
        sbb = ma.T @ self.x2[:, b]
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = n * sab - sa * sb
            var_a = n * saa - sa**2
            var_b = n * sbb - sb**2
            r = cov / np.sqrt(var_a * var_b)
        degenerate = (n < 2) | (var_a <= 1e-12 * n * saa) | (var_b <= 1e-12 * n * sbb)
        r[degenerate] = np.nan
        return np.clip(r, -1.0, 1.0)


def _greedy_correlation(
    cols: _Columns, candidates: np.ndarray, threshold: float, block_size: int
) -> dict[int, int]:
    """{dropped column: kept partner} for the candidates, in column order, blockwise."""
    kept: list[int] = []
    partner: dict[int, int] = {}
    for lo in range(0, len(candidates), block_size):
        block = candidates[lo : lo + block_size]
        first_hit = np.full(len(block), -1)
        # Against kept columns of earlier blocks, in order: the first chunk with a hit wins.
        for klo in range(0, len(kept), block_size):
            chunk = np.asarray(kept[klo : klo + block_size])
            hits = np.abs(cols.corr(chunk, block)) > threshold  # NaN -> False
            new = (first_hit < 0) & hits.any(axis=0)
            first_hit[new] = chunk[hits[:, new].argmax(axis=0)]
        # Within the block, sequentially: a column may only fall to a column kept before it.
        inner = np.abs(cols.corr(block, block)) > threshold
        kept_here = np.zeros(len(block), dtype=bool)
        for j in range(len(block)):
            if first_hit[j] < 0:
                earlier = np.flatnonzero(kept_here[:j] & inner[:j, j])
                if len(earlier):
                    first_hit[j] = block[earlier[0]]
            if first_hit[j] >= 0:
                partner[int(block[j])] = int(first_hit[j])
            else:
                kept_here[j] = True
        kept.extend(int(c) for c in block[kept_here])
    return partner


def _pca_ratios(values: np.ndarray, components: int) -> list[float]:
    n_rows, n_cols = values.shape
    k = min(components, n_rows, n_cols)
    if components <= 0 or n_rows < 2 or k < 1:
        return []
    from sklearn.decomposition import PCA

    means = np.nanmean(values, axis=0)
    filled = np.where(np.isnan(values), means, values)
    std = filled.std(axis=0)
    std[std == 0] = 1.0
    standardized = (filled - filled.mean(axis=0)) / std
    return [float(r) for r in PCA(n_components=k).fit(standardized).explained_variance_ratio_]


def select_features(
    matrix: pd.DataFrame,
    variance_threshold: float = 1e-10,
    correlation_threshold: float = 0.95,
    pca_components: int = 0,
    *,
    block_size: int = BLOCK_SIZE,
) -> SelectionResult:
    """Variance, then greedy correlation filtering, then optional PCA; see the module doc."""
    names = [str(c) for c in matrix.columns]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"select_features: duplicate feature names: {', '.join(dupes[:5])}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    values = matrix.to_numpy(dtype="float64", na_value=np.nan).copy()
    values[~np.isfinite(values)] = np.nan

    p = len(names)
    present = ~np.isnan(values)
    all_nan = ~present.any(axis=0)
    variance = np.full(p, np.nan)
    if (~all_nan).any():
        variance[~all_nan] = np.nanvar(values[:, ~all_nan], axis=0)
    low = ~all_nan & (variance <= variance_threshold)

    reason = np.full(p, KEPT, dtype=object)
    reason[all_nan] = ALL_NAN
    reason[low] = LOW_VARIANCE
    partner_name = np.full(p, "", dtype=object)

    candidates = np.flatnonzero(~all_nan & ~low)
    if len(candidates) > 1:
        cols = _Columns(values[:, candidates])
        local = np.arange(len(candidates))
        for dropped, kept in _greedy_correlation(cols, local, correlation_threshold, block_size).items():
            reason[candidates[dropped]] = CORRELATED
            partner_name[candidates[dropped]] = names[candidates[kept]]

    kept_mask = reason == KEPT
    table = pd.DataFrame(
        {
            "feature": pd.Series(names, dtype="str"),
            "variance": variance.astype("float64"),
            "kept": kept_mask,
            "reason": pd.Series(reason, dtype="str"),
            "partner": pd.Series(partner_name, dtype="str"),
        }
    )
    selected = [n for n, k in zip(names, kept_mask) if k]
    return SelectionResult(
        table=table,
        pca_explained_variance=_pca_ratios(values[:, kept_mask], pca_components),
        selected=selected,
    )
