"""Benchmark: erastream's feature engine against tsfresh.extract_features, in one run.

For each era size (rows x 14 sensors) and feature set it prints
* the wall time of ``tsfresh.extract_features`` (long frame, one id per sensor) and of
  ``stages.feature_engine.extract_features_fast``, both with the same ``--n-jobs``, and the ratio;
* per calculator, the single-process time of tsfresh's own function and of our kernel (or
  fallback) over the same sensors (best of repetitions), the ratio, and "< 1.0 SLOWER" where
  ours is slower; ``--per-calc-only`` prints that table for every calculator without the
  whole-set runs.

Usage:
  python bench/features.py --sizes 1000,10000 --sets minimal,efficient --n-jobs 2
  python bench/features.py --per-calc-only --sizes 1000,10000 --sets comprehensive --calc-sensors 3
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


def _tsfresh_call(func, params):
    """A bare call of tsfresh's function as ``_do_extraction_on_chunk`` makes it (its input type
    prepared outside the timing)."""
    if getattr(func, "fctype", None) == "combiner":
        return lambda x: list(func(x, param=params))
    if params:
        return lambda x: [func(x, **p) for p in params]
    return lambda x: func(x)


def _best_of(fn, min_total: float, max_reps: int, min_reps: int = 5, long_s: float = 0.5) -> float:
    """Smallest wall time of ``fn()`` over repetitions: at least ``min_reps`` (a shared machine
    preempts single samples) and until ``min_total`` seconds are spent; a call longer than
    ``long_s`` is timed once."""
    best = float("inf")
    spent = 0.0
    for rep in range(max_reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        if dt > long_s or (rep + 1 >= min_reps and spent >= min_total):
            break
    return best


#: tsfresh calculators that are quadratic in time or memory: not run against tsfresh above
#: ``--quadratic-max`` rows (approximate_entropy asks for ~150 GiB at 100,000 rows).
QUADRATIC = {"approximate_entropy", "sample_entropy"}


def per_calculator(era, params, sensors, *, min_total=0.2, max_reps=20, only=None,
                   skip=()) -> list[tuple[str, float, float]]:
    """(calculator, tsfresh seconds, our seconds) over the given sensors, one process.

    tsfresh: its bare function per sensor (a pandas Series where the function takes one, built
    outside the timing); ours: the engine's step for that calculator (kernel or fallback, on the
    stacked 2-D array, written into the era's output) as ``_compute_group`` runs it. The per-era
    overhead both sides pay once for the whole set (tsfresh: its frame grouping; ours: stacking,
    one output allocation, one ``errstate``) is not in either. Each side is the best of several
    repetitions, both with BLAS pinned to one thread (statsmodels' SVDs are faster so)."""
    arrays = [np.ascontiguousarray(era[s]) for s in sensors]
    X = np.ascontiguousarray(np.stack(arrays))  # the engine stacks once per era, not per calculator
    rows = []
    for step in _engine.plan(params):
        func, p, name, _ = step
        if (only and name not in only) or name in skip:
            continue
        inputs = [pd.Series(a) if getattr(func, "input", None) == "pd.Series" else a for a in arrays]
        call = _tsfresh_call(func, p)

        def run_tsfresh():
            for x in inputs:
                try:
                    call(x)
                except Exception:  # noqa: BLE001
                    pass

        out = np.empty((X.shape[0], len(step[3])))

        def run_ours():
            _engine._run_step(X, step, out, 0, True)

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            run_ours()  # first call: numba/JIT and caches out of the timing
            with _engine._one_blas_thread():  # both sides: BLAS threads only add noise here
                t_ts = _best_of(run_tsfresh, min_total, max_reps)
                t_us = _best_of(run_ours, min_total, max_reps)
        rows.append((name, t_ts, t_us))
    return rows


def print_table(table, cov, title, top=0) -> list[tuple[str, float, float]]:
    """The per-calculator table (most expensive for tsfresh first); returns the rows < 1.0 x."""
    table = sorted(table, key=lambda r: -r[1])
    tot_ts = sum(r[1] for r in table)
    tot_us = sum(r[2] for r in table)
    print(f"{title}: tsfresh functions {tot_ts:.4f} s, ours {tot_us:.4f} s ({tot_ts / tot_us:.1f} x)")
    print(f"{'calculator':48s} {'kernel':>6s} {'tsfresh ms':>11s} {'ours ms':>10s} {'ratio':>8s}")
    for name, a, b in table[: top or None]:
        flag = "  < 1.0 SLOWER" if a < b else ""
        print(f"{name:48s} {'yes' if cov.get(name) else 'no':>6s} {a * 1e3:11.3f} {b * 1e3:10.3f} "
              f"{a / b:8.2f}{flag}")
    slower = [(n, a, b) for n, a, b in table if a < b]
    print("slower than tsfresh's own function: "
          + (", ".join(f"{n} ({a / b:.2f} x)" for n, a, b in slower) if slower else "none"))
    return slower


def per_calc_only(args, sizes, sets, cov) -> int:
    only = set(args.calcs.split(",")) if args.calcs else None
    slower_all = []
    for set_name in sets:
        params = SETS[set_name]()
        prev = None  # (rows, sensors, {calculator: tsfresh seconds}) of the previous size
        for rows in sorted(sizes):
            era = make_era(rows)
            k = args.calc_sensors or 3
            sensors = [SENSORS[0], SENSORS[-3], SENSORS[-1], *SENSORS[1:-3]][:k]
            skip = set(QUADRATIC) if rows > args.quadratic_max else set()
            skip |= {c for c in args.skip_calcs.split(",") if c}
            if prev is not None:  # tsfresh's time at this size, linear from the previous size
                r0, k0, t0 = prev
                est = {n: t * (rows / r0) * (k / k0) for n, t in t0.items()}
                skip |= {n for n, t in est.items() if t > args.max_tsfresh_s}
            table = per_calculator(era, params, sensors, min_total=args.min_time, only=only, skip=skip)
            prev = (rows, k, {n: a for n, a, _ in table})
            print(f"\n## per calculator: {set_name} set, {rows:,} rows x {k} sensors, one process")
            if skip:
                print(f"(tsfresh not run, too slow at this size: {', '.join(sorted(skip))})")
            slower_all += [(set_name, rows, *r) for r in print_table(table, cov, "total")]
    print(f"\n## calculators slower than tsfresh's function: {len(slower_all)}")
    for set_name, rows, n, a, b in slower_all:
        print(f"  {set_name} {rows:,} rows: {n} {a / b:.2f} x")
    return 0


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
    ap.add_argument("--per-calc-only", action="store_true",
                    help="only the per-calculator table (every calculator, no whole-set run)")
    ap.add_argument("--calcs", default="", help="comma-separated calculators for --per-calc-only")
    ap.add_argument("--skip-calcs", default="", help="comma-separated calculators to leave out")
    ap.add_argument("--min-time", type=float, default=0.2,
                    help="seconds of repetitions per calculator and side (best-of timing)")
    ap.add_argument("--quadratic-max", type=int, default=10_000,
                    help="largest size at which tsfresh's quadratic entropies are run")
    ap.add_argument("--max-tsfresh-s", type=float, default=2.0,
                    help="--per-calc-only: skip a calculator whose tsfresh time, scaled from the "
                         "previous size, would exceed this (seconds)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sets = [s for s in args.sets.split(",") if s]
    cov = kernel_coverage()
    print(f"# cores: {os.cpu_count()}, n_jobs={args.n_jobs}, sensors={len(SENSORS)}, "
          f"kernels for {sum(cov.values())}/{len(cov)} calculators")
    # warm up numba's compiled kernels (cached on disk after the first run)
    extract_features_fast(make_era(200, seed=1), ComprehensiveFCParameters())
    if args.n_jobs > 1:  # a stage starts its worker pool once per process, not once an era
        t0 = time.perf_counter()
        extract_features_fast(make_era(2_000, seed=1), ComprehensiveFCParameters(), n_jobs=args.n_jobs)
        print(f"# worker pool start and a first 2,000-row call (fork server + {args.n_jobs} workers, once per process, not timed "
              f"below): {time.perf_counter() - t0:.2f} s")
    if args.per_calc_only:
        return per_calc_only(args, sizes, sets, cov)
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
            table = per_calculator(era, params, sensors, min_total=args.min_time,
                                   skip=QUADRATIC if rows > args.quadratic_max else ())
            print_table(table, cov, f"per calculator, one process, {k} sensors", top=args.top)
    print("\n## summary (tsfresh s / ours s)")
    for set_name, rows, t_ts, t_us, ratio in summary:
        print(f"{set_name:14s} {rows:>8,} rows: tsfresh {t_ts:9.2f} s, ours {t_us:8.3f} s, {ratio:7.1f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
