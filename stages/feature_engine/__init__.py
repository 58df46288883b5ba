"""Fast tsfresh feature kernels.

``extract_features_fast(series, fc_parameters, n_jobs)`` computes tsfresh's features (same
settings dictionaries, same names, same values within 1e-9) with vectorised / compiled kernels
where they exist and tsfresh's own calculator functions everywhere else.
"""
from .engine import extract_features_fast, kernel_coverage
from .registry import KERNELS

__all__ = ["extract_features_fast", "kernel_coverage", "KERNELS"]
