"""Compile every numba kernel into numba's on-disk cache ahead of first use.

``make install`` runs ``python -m stages.feature_engine.warm``, so the first era a fresh
checkout computes does not pay ~40 s of compilation (numba compiles a ``cache=True`` function
on its first call and keeps the machine code in ``__pycache__`` beside the source, keyed by the
source file's stamp: an edited kernel simply compiles again on its next first use).

The warm-up runs the comprehensive set once on a few series chosen to reach every kernel's
paths: a short and a long continuous series (the fused single-pass kernels switch at 4,096
points), a binary series and a constant one.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from tsfresh.feature_extraction import ComprehensiveFCParameters

from .engine import extract_features_fast

WARM_LENGTHS = (300, 6000)


def warm_series() -> dict[str, np.ndarray]:
    """Series that reach the short and long paths of every kernel, binary and constant ones."""
    rng = np.random.default_rng(0)
    series: dict[str, np.ndarray] = {}
    for n in WARM_LENGTHS:
        t = np.arange(n, dtype=np.float64)
        series[f"continuous_{n}"] = 20 + 5 * np.sin(t / 60) + rng.normal(0, 0.5, n)
        series[f"binary_{n}"] = (rng.random(n) > 0.7).astype(np.float64)
    series["constant"] = np.full(WARM_LENGTHS[0], 3.0)
    return series


def warm() -> float:
    """Compute the comprehensive set on :func:`warm_series` once; returns the seconds it took."""
    started = time.perf_counter()
    extract_features_fast(warm_series(), ComprehensiveFCParameters(), n_jobs=0)
    return time.perf_counter() - started


def main() -> None:
    seconds = warm()
    print(f"feature kernels compiled into numba's cache in {seconds:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
