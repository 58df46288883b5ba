"""Benchmark: erastream's feature engine against tsfresh.extract_features, in one run.

For each era size (rows x 14 sensors) and feature set it prints
* the wall time of ``tsfresh.extract_features`` (long frame, one id per sensor) and of
  ``stages.feature_engine.extract_features_fast``, both with the same ``--n-jobs``, and the ratio;
* per calculator, the single-process time of tsfresh's own function and of our kernel (or
  fallback) over the same sensors, for the ten most expensive calculators (by tsfresh's time).

Usage:
  python bench/features.py --sizes 1000,10000 --sets minimal,efficient --n-jobs 2
  python bench/features.py --sizes 100000 --sets efficient --n-jobs 2
Comprehensive at 100,000 rows is not run against tsfresh (approximate_entropy needs ~150 GiB).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tsfresh import extract_features  # noqa: E402
from tsfresh.feature_extraction import (  # noqa: E402
    ComprehensiveFCParameters,
    EfficientFCParameters,
    MinimalFCParameters,
)

from stages.feature_engine import extract_features_fast, kernel_coverage  # noqa: E402
from stages.feature_engine import engine as _engine  # noqa: E402
from stages.feature_engine import fallback as _fallback  # noqa: E402

SETS = {
    "minimal": MinimalFCParameters,
    "efficient": EfficientFCParameters,
    "comprehensive": ComprehensiveFCParameters,
}

SENSORS = [
    "air_temp_c", "relative_humidity_percent", "co2_measured_ppm", "light_intensity_umol",
    "radiation_w_m2", "pipe_temp_1_c", "flow_temp_1_c", "outside_temp_c", "vpd_hpa",
    "vent_pos_1_percent", "curtain_1_percent", "rain_status", "co2_dosing_status",
    "spot_price_dkk_mwh",
]


def make_era(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic era like the greenhouse's: smooth continuous sensors with daily cycles and
    noise, actuator positions with constant runs, binary status flags, an hourly price."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    day = np.sin(2 * np.pi * t / 1440.0)
    era = {}
    for i, s in enumerate(SENSORS):
        if s.endswith("_status"):
            era[s] = np.repeat(rng.random(rows // 30 + 1) < 0.3, 30)[:rows].astype(float)
        elif s == "spot_price_dkk_mwh":
            era[s] = np.repeat(np.round(rng.uniform(200, 900, rows // 60 + 1), 2), 60)[:rows]
        elif s.startswith(("vent", "curtain")):
            era[s] = np.clip(np.repeat(np.round(rng.normal(40, 30, rows // 15 + 1)), 15)[:rows], 0, 100)
        else:
            walk = np.cumsum(rng.normal(scale=0.05, size=rows))
            era[s] = 10 * (i + 1) + 5 * day + walk + rng.normal(scale=0.2, size=rows)
    return era


def time_tsfresh(era, params, n_jobs) -> float:
    df = pd.concat([pd.DataFrame({"sensor": s, "value": v}) for s, v in era.items()], ignore_index=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract_features(df, column_id="sensor", column_value="value", default_fc_parameters=params,
                         n_jobs=n_jobs, disable_progressbar=True)
    return time.perf_counter() - t0


def time_ours(era, params, n_jobs) -> float:
    t0 = time.perf_counter()
    extract_features_fast(era, params, n_jobs=n_jobs)
    return time.perf_counter() - t0


def per_calculator(era, params, sensors) -> list[tuple[str, float, float]]:
    """(calculator, tsfresh seconds, our seconds) over the given sensors, one process."""
    arrays = [np.ascontiguousarray(era[s]) for s in sensors]
    X = np.ascontiguousarray(np.stack(arrays))  # the engine stacks once per era, not per calculator
    rows = []
    for step in _engine.plan(params):
        func, p, name, _ = step
        t0 = time.perf_counter()
        for a in arrays:
            try:
                _fallback.call_tsfresh(func, a, p)
            except Exception:  # noqa: BLE001
                pass
        t_ts = time.perf_counter() - t0
        t0 = time.perf_counter()
        with _engine._one_blas_thread():
            _engine._compute_group(X, [step], True)
        t_us = time.perf_counter() - t0
        rows.append((name, t_ts, t_us))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--sets", default="efficient,comprehensive")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--calc-sensors", type=int, default=0,
                    help="sensors for the per-calculator table (0: all up to 10,000 rows, 3 above)")
    ap.add_argument("--no-per-calc", action="store_true")
    ap.add_argument("--no-tsfresh", action="store_true", help="time only our engine")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sets = [s for s in args.sets.split(",") if s]
    cov = kernel_coverage()
    print(f"# cores: {os.cpu_count()}, n_jobs={args.n_jobs}, sensors={len(SENSORS)}, "
          f"kernels for {sum(cov.values())}/{len(cov)} calculators")
    # warm up numba's compiled kernels (cached on disk after the first run)
    extract_features_fast(make_era(200, seed=1), ComprehensiveFCParameters())
    summary = []
    for rows in sizes:
        era = make_era(rows)
        for set_name in sets:
            params = SETS[set_name]()
            skip_ts = args.no_tsfresh or (set_name == "comprehensive" and rows >= 100_000)
            t_us = time_ours(era, params, args.n_jobs)
            t_ts = float("nan") if skip_ts else time_tsfresh(era, params, args.n_jobs)
            ratio = t_ts / t_us
            summary.append((set_name, rows, t_ts, t_us, ratio))
            print(f"\n## {set_name} set, {rows:,} rows x {len(era)} sensors, n_jobs={args.n_jobs}")
            print(f"tsfresh.extract_features: {t_ts:9.3f} s" + ("  (not run)" if skip_ts else ""))
            print(f"extract_features_fast:    {t_us:9.3f} s")
            print(f"speed-up:                 {ratio:9.1f} x")
            if args.no_per_calc or skip_ts:
                continue
            k = args.calc_sensors or (len(SENSORS) if rows <= 10_000 else 3)
            sensors = [SENSORS[0], SENSORS[-3], SENSORS[-1], *SENSORS[1:-3]][:k]
            table = per_calculator(era, params, sensors)
            table.sort(key=lambda r: -r[1])
            tot_ts = sum(r[1] for r in table)
            tot_us = sum(r[2] for r in table)
            print(f"per calculator, one process, {k} sensors: tsfresh functions {tot_ts:.3f} s, "
                  f"ours {tot_us:.3f} s ({tot_ts / tot_us:.1f} x)")
            print(f"{'calculator':48s} {'kernel':>6s} {'tsfresh s':>10s} {'ours s':>9s} {'ratio':>8s}")
            for name, a, b in table[: args.top]:
                print(f"{name:48s} {'yes' if cov.get(name) else 'no':>6s} {a:10.4f} {b:9.4f} {a / b:8.1f}")
            slower = [(n, a, b) for n, a, b in table if b > a * 1.05 and b > 1e-3]
            if slower:
                print("slower than tsfresh's own function: " + ", ".join(f"{n} ({a / b:.2f} x)" for n, a, b in slower))
    print("\n## summary (tsfresh s / ours s)")
    for set_name, rows, t_ts, t_us, ratio in summary:
        print(f"{set_name:14s} {rows:>8,} rows: tsfresh {t_ts:9.2f} s, ours {t_us:8.3f} s, {ratio:7.1f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
