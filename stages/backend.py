"""The GPU/CPU array backend seam.

Stages that may one day run on cuDF/CuPy take a ``backend`` keyword and ask it for the
array (``xp``) and frame (``pd``) modules instead of importing numpy/pandas directly for
that work. Today only the CPU path is implemented and tested; :func:`get_backend` returns
it whenever cuDF/CuPy cannot be imported or no GPU is visible, so callers can always ask
for ``prefer_gpu=True`` safely.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrayBackend:
    """Which array/frame libraries a stage computes with."""

    name: Literal["cpu", "gpu"]
    xp: ModuleType  # numpy or cupy
    pd: ModuleType  # pandas or cudf

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"


CPU = ArrayBackend(name="cpu", xp=np, pd=pd)


def _gpu_backend() -> ArrayBackend | None:
    """cuDF + CuPy with at least one visible device, or None (any failure means no GPU)."""
    try:
        import cudf  # type: ignore[import-not-found]
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception as exc:  # ImportError, CUDA driver errors, ...
        log.debug("GPU backend unavailable: %s", exc)
        return None
    return ArrayBackend(name="gpu", xp=cupy, pd=cudf)


def get_backend(prefer_gpu: bool = False) -> ArrayBackend:
    """The GPU backend when asked for and usable, else the CPU one."""
    if prefer_gpu:
        gpu = _gpu_backend()
        if gpu is not None:
            return gpu
    return CPU


def resolve(backend: ArrayBackend | None) -> ArrayBackend:
    """``None`` means CPU: the default stays cheap and deterministic."""
    return CPU if backend is None else backend


def to_pandas(obj: Any) -> Any:
    """pandas/numpy objects as they are; cuDF frames/series and CuPy arrays copied to host."""
    if isinstance(obj, (pd.DataFrame, pd.Series, pd.Index, np.ndarray)):
        return obj
    if hasattr(obj, "to_pandas"):  # cudf.DataFrame / Series / Index
        return obj.to_pandas()
    if hasattr(obj, "get") and hasattr(obj, "__cuda_array_interface__"):  # cupy.ndarray
        return obj.get()
    raise TypeError(f"to_pandas: cannot convert {type(obj).__name__} to pandas")
