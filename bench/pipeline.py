"""The streaming pipeline against a plain batch tsfresh script on the same input and N_JOBS.

    .venv/bin/python bench/pipeline.py --input samples/greenhouse_sample.csv.gz --feature-set efficient --n-jobs 1 \
        [--engine fast|tsfresh] [--tsfresh-workers 1,2]

Both are measured in this run (machines here are noisy) and the ratio is printed:
  batch    read the file, cut eras, preprocess, one tsfresh.extract_features call over every
           (era, sensor) series -- what a hand-rolled script does;
  pipeline `erastream run` end to end: local broker start, topics, four stage processes,
           ingest, Kafka, ClickHouse writes, selection, shutdown.
The broker's jars must be provisioned (`erastream broker provision`); the broker start is
part of the pipeline's time, as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def batch(path: Path, feature_set: str, n_jobs: int, era_length: str) -> tuple[float, int]:
    import pandas as pd
    import tsfresh

    from stages.ingest import assign_eras, read_sensor_file
    from stages.preprocess import preprocess_era
    from stages.tsfresh_features import fc_parameters

    started = time.perf_counter()
    table = read_sensor_file(path)
    longs = []
    for spec, rows in assign_eras(table.frame, None, era_length):
        clean = preprocess_era(rows, table.sensors)
        long = clean.melt(id_vars="timestamp", value_vars=table.sensors, var_name="sensor", value_name="value")
        long["id"] = spec.key + "|" + long["sensor"]
        longs.append(long.dropna(subset=["value"]))
    data = pd.concat(longs, ignore_index=True)
    wide = tsfresh.extract_features(data[["id", "timestamp", "value"]], column_id="id", column_sort="timestamp",
                                    default_fc_parameters=fc_parameters(feature_set), n_jobs=n_jobs,
                                    disable_progressbar=True)
    return time.perf_counter() - started, wide.size


def pipeline(path: Path, feature_set: str, n_jobs: int, era_length: str, engine: str, tsfresh_workers: int = 1) -> float:
    data_dir = Path(tempfile.mkdtemp(prefix="erastream-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = [sys.executable, "-m", "streams.cli", "--data-dir", str(data_dir), "--feature-set", feature_set,
           "--n-jobs", str(n_jobs), "--feature-engine", engine, "--run-id", "bench", "run", "--input", str(path),
           "--era-length", era_length, "--tsfresh-workers", str(tsfresh_workers)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(data_dir, ignore_errors=True)
    if proc.returncode != 0:
        sys.exit(f"erastream run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=ROOT / "samples" / "greenhouse_sample.csv.gz")
    parser.add_argument("--feature-set", default="efficient", choices=["minimal", "efficient", "comprehensive"])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--era-length", default="1D")
    parser.add_argument("--repeat", type=int, default=1, help="alternate both this many times; report the best of each")
    parser.add_argument("--engine", default="fast", choices=["fast", "tsfresh"], help="the tsfresh stage's FEATURE_ENGINE")
    parser.add_argument("--tsfresh-workers", default="1", help="comma list: one pipeline run per count, e.g. 1,2")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    counts = [int(c) for c in args.tsfresh_workers.split(",")]
    batch_times: list[float] = []
    pipe_times: dict[int, list[float]] = {c: [] for c in counts}
    values = 0
    for _ in range(args.repeat):
        seconds, values = batch(args.input, args.feature_set, args.n_jobs, args.era_length)
        batch_times.append(seconds)
        for count in counts:
            pipe_times[count].append(pipeline(args.input, args.feature_set, args.n_jobs, args.era_length, args.engine, count))
    b = min(batch_times)
    print(f"input {args.input.name}, feature set {args.feature_set}, N_JOBS={args.n_jobs}, engine {args.engine}, "
          f"{values:,} feature values")
    print(f"batch tsfresh.extract_features:            {b:8.2f} s   1.00x")
    for count in counts:
        p = min(pipe_times[count])
        print(f"erastream run, {count} tsfresh worker(s):      {p:8.2f} s   {p / b:5.2f}x of batch")


if __name__ == "__main__":
    main()
