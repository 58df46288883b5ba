"""Spectral calculators: spkt_welch_density, fourier_entropy, cwt_coefficients.

* spkt_welch_density / fourier_entropy: scipy's ``welch`` on the 2-D array (per row bit-identical
  to tsfresh's 1-D call: the same segments, window and FFT per row); fourier_entropy then bins
  each row's ``pxx / max(pxx)`` with NumPy's histogram arithmetic (``simple._histogram_rows``).
* cwt_coefficients: pywt's ``cwt(x, widths, "mexh")`` (method "conv": ``np.convolve`` with the
  integrated wavelet resampled at each scale, then ``-sqrt(scale) * diff``, trimmed to the
  centre). tsfresh reads only the first coefficients; the first k outputs of a full convolution
  depend only on the first k inputs, so ``np.convolve`` runs on a prefix of the series just
  longer than the filter (the same dot products, so the same numbers) instead of the whole era.
"""
from __future__ import annotations

from math import floor

import numpy as np
import pywt
from scipy.signal import welch

from .registry import register
from .simple import _entropy_of_counts, _histogram_rows

_MAX_SEG = 256


def _welch_rows(X: np.ndarray) -> np.ndarray:
    _, pxx = welch(X, nperseg=min(X.shape[1], _MAX_SEG), axis=-1)
    return pxx


def spkt_welch_density(X: np.ndarray, params) -> np.ndarray:
    P = _welch_rows(X)
    out = np.full((X.shape[0], len(params)), np.nan)
    for j, p in enumerate(params):
        c = p["coeff"]
        if c < P.shape[1]:
            out[:, j] = P[:, c]
    return out


register("spkt_welch_density", min_len=2)(spkt_welch_density)


def fourier_entropy(X: np.ndarray, params) -> np.ndarray:
    P = _welch_rows(X)
    Y = P / np.max(P, axis=1)[:, None]
    out = np.full((X.shape[0], len(params)), np.nan)
    ok = ~np.isnan(Y).any(axis=1)  # tsfresh's binned_entropy: NaN in, NaN out
    if ok.any():
        Yo = Y[ok]
        for j, p in enumerate(params):
            out[ok, j] = _entropy_of_counts(_histogram_rows(Yo, int(p["bins"])), Yo.shape[1])
    return out


register("fourier_entropy", min_len=2)(fourier_entropy)

# --------------------------------------------------------------------------- CWT (pywt, mexh)

_PSI: dict = {}


def _mexh_filter(scale) -> np.ndarray:
    """pywt.cwt's reversed, resampled integrated wavelet for one scale (method "conv")."""
    f = _PSI.get(scale)
    if f is None:
        if "int" not in _PSI:
            int_psi, x = pywt.integrate_wavelet(pywt.ContinuousWavelet("mexh"), precision=12)
            _PSI["int"] = (np.asarray(int_psi, dtype=np.float64), np.asarray(x, dtype=np.float64))
        int_psi, x = _PSI["int"]
        step = x[1] - x[0]
        j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
        if j[-1] >= int_psi.size:
            j = np.extract(j < int_psi.size, j)
        f = int_psi[j][::-1]
        _PSI[scale] = f
    return f


def _cwt_head(X: np.ndarray, scale, ncoef: int) -> np.ndarray:
    """The first ``ncoef`` columns of pywt.cwt's row for ``scale``, for every row of X."""
    filt = _mexh_filter(scale)
    m, n = X.shape
    F = filt.size
    lo = floor((F - 2) / 2.0)  # the trim of the coefficients to the series' length
    need = lo + ncoef + 1  # conv outputs 0..need-1
    L = n if n <= F + need else F + need  # a prefix longer than the filter: no argument swap
    out = np.empty((m, ncoef))
    sq = np.sqrt(scale)
    for i in range(m):
        conv = np.convolve(X[i, :L], filt)
        coef = -sq * np.diff(conv[:need])
        out[i] = coef[lo : lo + ncoef]
    return out


def cwt_coefficients(X: np.ndarray, params) -> np.ndarray:
    """One CWT row per distinct width (a row does not depend on the other widths of the tuple),
    only as many leading coefficients as the parameters read."""
    m, n = X.shape
    out = np.full((m, len(params)), np.nan)
    ncoef = min(n, 1 + max(p["coeff"] for p in params))
    heads: dict = {}
    for j, p in enumerate(params):
        w, c = p["w"], p["coeff"]
        tuple(p["widths"]).index(w)  # tsfresh raises for a width not in the tuple
        if c >= n:
            continue
        if w not in heads:
            heads[w] = _cwt_head(X, w, ncoef)
        out[:, j] = heads[w][:, c]
    return out


register("cwt_coefficients", min_len=1)(cwt_coefficients)
