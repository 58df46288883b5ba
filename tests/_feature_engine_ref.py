"""Shared helpers of the feature-engine parity tests: tsfresh's reference values and the
comparison rule (1e-9 relative, 1e-12 absolute near zero, same NaN/inf pattern, same names)."""
from __future__ import annotations

import numpy as np
from tsfresh.feature_extraction import ComprehensiveFCParameters

from stages.feature_engine import extract_features_fast
from stages.feature_engine import fallback

RTOL = 1e-9
ATOL = 1e-12

COMPREHENSIVE = ComprehensiveFCParameters()


def reference(name: str, params, x: np.ndarray) -> dict[str, float]:
    """tsfresh's own function on one series: {full feature name: value} (NaN where it raises)."""
    func = fallback.resolve(name)
    keys = fallback.feature_keys(func, params)
    try:
        res = dict(fallback.call_tsfresh(func, np.asarray(x, dtype=float), params))
    except Exception:  # noqa: BLE001
        res = {}
    return {(name + "__" + k if k else name): res.get(k, np.nan) for k in keys}


def engine(name: str, params, series: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    df = extract_features_fast(series, {name: params})
    out: dict[str, dict[str, float]] = {}
    for s, f, v in zip(df["sensor"], df["feature"], df["value"]):
        out.setdefault(s, {})[f] = v
    return out


def mismatches(ref: dict[str, float], got: dict[str, float]) -> list[str]:
    bad = []
    if set(ref) != set(got):
        return [f"names differ: only tsfresh {sorted(set(ref) - set(got))[:5]}, only ours {sorted(set(got) - set(ref))[:5]}"]
    for k, r in ref.items():
        g = got[k]
        r = float(r)
        if np.isnan(r) or np.isnan(g):
            if not (np.isnan(r) and np.isnan(g)):
                bad.append(f"{k}: tsfresh {r!r} ours {g!r}")
            continue
        if np.isinf(r) or np.isinf(g):
            if r != g:
                bad.append(f"{k}: tsfresh {r!r} ours {g!r}")
            continue
        if abs(g - r) > max(RTOL * abs(r), ATOL):
            bad.append(f"{k}: tsfresh {r!r} ours {g!r} (rel {abs(g - r) / max(abs(r), 1e-300):.2e})")
    return bad


def check(name: str, series: dict[str, np.ndarray], params=None) -> list[str]:
    """Compare the engine's features for calculator ``name`` with tsfresh's on every series."""
    if params is None:
        params = COMPREHENSIVE[name]
    got = engine(name, params, series)
    bad = []
    for s, x in series.items():
        for m in mismatches(reference(name, params, x), got[s]):
            bad.append(f"[{s} n={len(x)}] {m}")
    return bad


def fixed_cases(long_n: int = 3000, seed: int = 7) -> dict[str, np.ndarray]:
    """The fixed parity cases: noise, trends, constant runs, binary 0/1, very short, long."""
    rng = np.random.default_rng(seed)
    c: dict[str, np.ndarray] = {}
    for n in range(0, 6):
        c[f"short_noise_{n}"] = rng.normal(size=n)
    c["short_const_3"] = np.full(3, 2.5)
    c["short_binary_5"] = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    for n in (6, 7, 8, 9, 12, 20, 47):
        c[f"noise_{n}"] = rng.normal(size=n)
    n = 400
    t = np.arange(n)
    c["noise"] = rng.normal(size=n)
    c["walk"] = np.cumsum(rng.normal(size=n)) + 20.0
    c["trend"] = 0.05 * t + rng.normal(scale=0.3, size=n)
    c["neg_trend"] = -3.0 - 0.01 * t + rng.normal(scale=0.01, size=n)
    c["const"] = np.full(n, 3.25)
    c["zeros"] = np.zeros(n)
    c["steps"] = np.repeat(rng.normal(size=n // 25), 25)  # constant runs
    c["hourly_price"] = np.repeat(np.round(rng.uniform(200, 900, size=n // 60 + 1), 2), 60)[:n]
    c["binary"] = (rng.random(n) < 0.3).astype(float)
    c["binary_runs"] = np.repeat(rng.integers(0, 2, size=n // 10), 10).astype(float)
    c["integers"] = rng.integers(-3, 4, size=n).astype(float)
    c["sine"] = np.sin(t / 7.0) * 10 + 0.01 * rng.normal(size=n)
    c["spiky"] = np.where(rng.random(n) < 0.02, 50.0, 0.0) + rng.normal(scale=0.1, size=n)
    c["long_walk"] = np.cumsum(rng.normal(size=long_n))
    c["long_noise_trend"] = 0.001 * np.arange(long_n) + rng.normal(size=long_n)
    c["long_binary"] = np.repeat(rng.integers(0, 2, size=long_n // 20), 20).astype(float)
    return c
