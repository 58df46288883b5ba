"""stages.backend: the CPU path is always there; conversions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.backend import CPU, get_backend, resolve, to_pandas


def test_cpu_by_default_and_as_fallback():
    assert get_backend() is CPU and CPU.name == "cpu" and CPU.xp is np and CPU.pd is pd
    backend = get_backend(prefer_gpu=True)  # cpu here unless cuDF/CuPy and a GPU are present
    assert backend.name in ("cpu", "gpu")
    try:
        import cudf  # noqa: F401
    except ImportError:
        assert backend is CPU
    assert resolve(None) is CPU


def test_to_pandas():
    frame = pd.DataFrame({"a": [1.0]})
    assert to_pandas(frame) is frame
    arr = np.arange(3)
    assert to_pandas(arr) is arr
    with pytest.raises(TypeError, match="dict"):
        to_pandas({"a": 1})
