"""The feature engine: tsfresh settings in, tsfresh's features out, kernels where they exist."""
from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Mapping

import numpy as np
import pandas as pd

from threadpoolctl import threadpool_limits

from stages.worker_pool import discard_executor, one_blas_thread_per_worker, shared_executor

from . import fallback
from .registry import KERNELS

# Importing the kernel modules registers their kernels.
from . import simple as _simple  # noqa: F401
from . import adf as _adf  # noqa: F401
from . import peaks as _peaks  # noqa: F401
from . import entropy as _entropy  # noqa: F401
from . import linear as _linear  # noqa: F401
from . import spectral as _spectral  # noqa: F401

__all__ = ["extract_features_fast", "kernel_coverage", "plan"]

#: Work (samples x sensors) below which n_jobs > 1 still runs in one process.
PARALLEL_MIN_SAMPLES = 20_000
#: Calculators whose kernels are single NumPy passes: a set made of these only (the minimal
#: set) is cheaper than starting worker processes.
_CHEAP = frozenset(_simple.CHEAP)


def plan(fc_parameters: Mapping) -> list[tuple[object, object, str, tuple[str, ...]]]:
    """(tsfresh function, parameters, calculator name, full feature names) per calculator that
    tsfresh would run on an index-less series, in the settings' order."""
    out = []
    for key, params in fc_parameters.items():
        func = fallback.resolve(key)
        if fallback.needs_index(func):
            continue  # tsfresh skips it for data without a DatetimeIndex
        names = tuple(fallback.full_names(func, params))
        out.append((func, params, func.__name__, names))
    return out


_KERNEL_OF: dict = {}


def _kernel_for(func, name: str, use_kernels: bool):
    if not use_kernels:
        return None
    try:
        return _KERNEL_OF[func]
    except KeyError:
        kern = None if callable_is_custom(func) else KERNELS.get(name)
        _KERNEL_OF[func] = kern
        return kern


#: Elements per call of a kernel flagged ``block``: above this the rows of an era go to it in
#: blocks, so that its temporaries (a few per element) stay in cache (at 100,000 rows x 14 sensors the
#: whole-era temporaries are 11 MB each and made single-pass kernels slower than per-series
#: NumPy). Every kernel is row-independent (each row its own result), so blocking never
#: changes a value.
BLOCK_ELEMENTS = 1 << 16


def _call_kernel(kern, X: np.ndarray, params, m: int, k: int):
    """The kernel's (m, k) result (or a broadcastable constant); None where it declines."""
    try:
        v = kern.fn(X, params)
    except Exception:  # noqa: BLE001 - parameters the kernel does not take: tsfresh decides
        return None
    if type(v) is float and k == 1:  # a constant column (length)
        return v
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (m, k) and not (k == 1 and v.shape in ((m,), ())):
        raise AssertionError(f"kernel {kern.name} returned {v.shape}, expected {(m, k)}")
    return v if v.ndim != 1 else v[:, None]


def _run_step(X: np.ndarray, step, out: np.ndarray, col: int, use_kernels: bool) -> int:
    """One calculator's features of the rows of X into ``out[:, col:...]``; returns the next
    column. Runs under the caller's ``errstate``."""
    func, params, name, names = step
    m, n = X.shape
    k = len(names)
    kern = _kernel_for(func, name, use_kernels)
    if kern is not None and n >= kern.min_len:  # an attribute, not a method call: ~1 µs calls
        rows = max(1, BLOCK_ELEMENTS // max(n, 1)) if kern.block and n < kern.unblocked_from else m
        if rows >= m:
            v = _call_kernel(kern, X, params, m, k)
            if v is not None:
                out[:, col : col + k] = v
                return col + k
        else:
            for r0 in range(0, m, rows):
                Xb = X[r0 : r0 + rows]
                v = _call_kernel(kern, Xb, params, Xb.shape[0], k)
                if v is None:
                    break
                out[r0 : r0 + rows, col : col + k] = v
            else:
                return col + k
    out[:, col : col + k] = fallback.fallback_block(func, X, params)
    return col + k


def _compute_group(X: np.ndarray, steps, use_kernels: bool) -> np.ndarray:
    """All features of the rows of X (one common length, finite): (rows, total features).

    Written into one preallocated array under one ``errstate`` (the per-era overhead); per
    calculator the engine's bookkeeping is about a microsecond."""
    out = np.empty((X.shape[0], sum(len(s[3]) for s in steps)))
    col = 0
    with np.errstate(all="ignore"):
        for step in steps:
            col = _run_step(X, step, out, col, use_kernels)
    return out


def callable_is_custom(func) -> bool:
    return getattr(fallback._fc, func.__name__, None) is not func


def _compute(arrays: list[np.ndarray], steps, use_kernels: bool = True) -> np.ndarray:
    total = sum(len(s[3]) for s in steps)
    out = np.full((len(arrays), total), np.nan)
    by_len: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        if np.isnan(a).any():
            continue  # tsfresh refuses NaN: every feature NaN, never a crash
        if not np.isfinite(a).all():
            out[i] = _compute_group(a[None, :], steps, use_kernels=False)[0]
            continue
        by_len.setdefault(len(a), []).append(i)
    for n, idx in by_len.items():
        X = np.ascontiguousarray(np.stack([arrays[i] for i in idx])) if n else np.empty((len(idx), 0))
        out[idx] = _compute_group(X, steps, use_kernels)
    return out


def _one_blas_thread():
    """BLAS pinned to one thread: the kernels' matrices are small or tall-and-thin, and BLAS
    threads on a shared machine cost more than they give (DESIGN.md, cost facts)."""
    return threadpool_limits(1, user_api="blas")


def _worker(args):
    arrays, fc_parameters, use_kernels = args
    return _compute(arrays, plan(fc_parameters), use_kernels)


def _split(lengths: list[int], parts: int) -> list[list[int]]:
    """Indices split into ``parts`` groups of about equal total length (largest first)."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        j = int(np.argmin(load))
        groups[j].append(i)
        load[j] += lengths[i]
    return [sorted(g) for g in groups if g]


def extract_features_fast(
    series: Mapping[str, np.ndarray],
    fc_parameters: Mapping,
    n_jobs: int = 0,
    *,
    use_kernels: bool = True,
) -> pd.DataFrame:
    """tsfresh's features of each series, in long form (columns sensor, feature, value).

    ``fc_parameters`` is a tsfresh settings dictionary (e.g. ``EfficientFCParameters()``).
    The rows are those ``tsfresh.extract_features`` gives for a long frame with one id per
    sensor, with the ``<kind>__`` prefix removed from the feature names. A series holding NaN
    gives NaN for every feature. ``n_jobs`` > 1 splits the sensors over that many processes
    (0 or 1: this process). ``use_kernels=False`` computes everything with tsfresh's functions.
    """
    sensors = [str(s) for s in series.keys()]
    arrays = [np.ascontiguousarray(np.asarray(v, dtype=np.float64).ravel()) for v in series.values()]
    steps = plan(fc_parameters)
    names = [nm for s in steps for nm in s[3]]
    work = sum(len(a) for a in arrays)
    heavy = any(s[2] not in _CHEAP for s in steps)
    if n_jobs and n_jobs > 1 and len(arrays) > 1 and heavy and work >= PARALLEL_MIN_SAMPLES:
        groups = _split([len(a) for a in arrays], min(n_jobs, len(arrays)))
        values = np.full((len(arrays), len(names)), np.nan)
        pool = shared_executor(n_jobs, one_blas_thread_per_worker)
        jobs = [([arrays[i] for i in g], dict(fc_parameters), use_kernels) for g in groups]
        try:
            for g, res in zip(groups, pool.map(_worker, jobs)):
                values[g] = res
        except BrokenProcessPool:
            discard_executor(pool)
            raise
    else:
        with _one_blas_thread():
            values = _compute(arrays, steps, use_kernels)
    return pd.DataFrame(
        {
            "sensor": np.repeat(np.asarray(sensors, dtype=object), len(names)),
            "feature": np.tile(np.asarray(names, dtype=object), len(sensors)),
            "value": values.ravel().astype(np.float64),
        }
    )


def kernel_coverage() -> dict[str, bool]:
    """Calculator name -> True where a fast kernel exists (for tsfresh's comprehensive set)."""
    from tsfresh.feature_extraction import ComprehensiveFCParameters

    return {name: name in KERNELS for name in ComprehensiveFCParameters()}
