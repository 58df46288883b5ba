"""Registry: tsfresh calculator name -> fast kernel.

A kernel computes one calculator for all rows of a 2-D array ``X`` (sensors x samples, float64,
C-contiguous, finite, one common length ``n``) and returns a float64 array of shape
``(rows, number of features)`` in the order of tsfresh's output for the given parameters
(one column per parameter dictionary for simple calculators, tsfresh's order for combiners).
Rows shorter than ``min_len`` go to tsfresh's own function instead: short series are cheap, and
that is where tsfresh's edge cases live.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Kernel", "KERNELS", "register"]


@dataclass(frozen=True)
class Kernel:
    name: str
    fn: Callable[[np.ndarray, object], np.ndarray]
    min_len: int = 8
    #: the kernel makes full-size temporaries: the engine hands it the era in row blocks that
    #: fit in cache (``engine.BLOCK_ELEMENTS``)
    block: bool = False
    #: from this length on the kernel's path makes no full-size temporaries (one numba pass):
    #: the era goes to it whole, without per-block calls
    unblocked_from: int = 1 << 62


KERNELS: dict[str, Kernel] = {}


def register(name: str, min_len: int = 8):
    """Decorator: register ``fn(X, params) -> (rows, k)`` as the kernel of calculator ``name``."""

    def deco(fn):
        if name in KERNELS:
            raise ValueError(f"kernel for {name} registered twice")
        KERNELS[name] = Kernel(name, fn, min_len)
        return fn

    return deco
