"""Synthetic greenhouse data shaped like the original deployment's (DESIGN.md, sensors).

Continuous sensors follow a daily cycle plus noise and respond to each other roughly as a
greenhouse would (sun -> light and temperature -> vents; rain closes vents; night ->
screen closed and heating); the three status sensors are 0/1; the spot price is a step
function that changes on the hour. A few runs of missing rows (logger outages) and
scattered NaN cells are added, so ingest and preprocessing have real work to do.
Everything derives from ``seed``: the same arguments give the same frame.

    python -m stages.sample_data --out samples/greenhouse_sample.csv.gz --days 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-03-01 00:00:00")
CONTINUOUS = (
    "air_temp_c",
    "relative_humidity_percent",
    "co2_measured_ppm",
    "light_intensity_umol",
    "radiation_w_m2",
    "pipe_temp_1_c",
    "flow_temp_1_c",
    "outside_temp_c",
    "vpd_hpa",
    "heating_setpoint_c",
    "vent_pos_1_percent",
    "vent_pos_2_percent",
    "curtain_1_percent",
)
BINARY = ("rain_status", "co2_status", "co2_dosing_status")
STEP = ("spot_price_dkk_mwh",)
SENSORS = CONTINUOUS + BINARY + STEP
NAN_FRACTION = 0.002  # of continuous cells
GAPS = 3  # runs of missing rows per compartment
GAP_ROWS = (5, 40)  # length range of a run, in rows


def _markov_01(rng: np.random.Generator, n: int, p_on: float, p_off: float) -> np.ndarray:
    """A 0/1 chain that switches on with p_on and off with p_off per step (episodes)."""
    flips = rng.random(n)
    state = np.zeros(n)
    on = 0.0
    for i in range(n):
        on = 1.0 if (on == 0.0 and flips[i] < p_on) or (on == 1.0 and flips[i] >= p_off) else 0.0
        state[i] = on
    return state


def _compartment(rng: np.random.Generator, ts: pd.DatetimeIndex, compartment: str) -> pd.DataFrame:
    n = len(ts)
    hours = (ts - ts.normalize()).total_seconds().to_numpy() / 3600.0
    days = (ts - ts[0]).total_seconds().to_numpy() / 86400.0
    step_minutes = max((ts[1] - ts[0]).total_seconds() / 60.0, 1e-9) if n > 1 else 1.0

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, n)

    daylight = np.clip(np.sin(np.pi * (hours - 6.0) / 12.0), 0.0, None)  # 06:00-18:00
    clouds = np.clip(1.0 - 0.6 * np.abs(np.sin(2 * np.pi * days * 1.7 + rng.uniform(0, 6))), 0.2, 1.0)
    radiation = np.clip(650.0 * daylight * clouds + noise(15.0) * (daylight > 0), 0.0, None)
    lamps = ((hours >= 4) & (hours < 8) | (hours >= 16) & (hours < 20)).astype(float)
    light = np.clip(2.1 * radiation + 180.0 * lamps + noise(8.0), 0.0, None)

    outside = 6.0 + 5.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0) + 1.5 * np.sin(2 * np.pi * days / 5.0) + noise(0.3)
    setpoint = np.where((hours >= 6) & (hours < 20), 21.0, 18.0)
    air = setpoint + 4.0 * daylight * clouds + noise(0.25)
    pipe = np.clip(35.0 + 2.2 * (setpoint - outside) - 10.0 * daylight + noise(0.8), 20.0, 80.0)
    flow = pipe + 6.0 + noise(0.4)

    # A rain episode lasts ~1 h on average and starts ~twice a day.
    rain = _markov_01(rng, n, p_on=2.0 * step_minutes / 1440.0, p_off=step_minutes / 60.0)
    vent1 = np.clip((air - 22.0) * 18.0 + noise(2.0), 0.0, 100.0) * (1.0 - 0.85 * rain)
    vent2 = np.clip((air - 23.0) * 15.0 + noise(2.0), 0.0, 100.0) * (1.0 - rain)
    curtain = np.where(daylight > 0.05, 0.0, 100.0) + np.where(daylight > 0.05, np.clip(noise(1.0), 0, None), 0.0)

    co2_status = ((daylight > 0.05) & (vent1 < 30.0)).astype(float)
    co2 = 420.0 + co2_status * (380.0 - 6.0 * vent1).clip(0.0) + noise(12.0)
    co2_dosing = (co2_status * (co2 < 760.0)).astype(float)

    rh = np.clip(82.0 - 18.0 * daylight * clouds + 10.0 * rain + noise(1.5), 35.0, 100.0)
    es = 6.112 * np.exp(17.67 * air / (air + 243.5))  # saturation vapour pressure, hPa
    vpd = np.clip(es * (1.0 - rh / 100.0), 0.0, None)

    hour_index = ((ts - ts[0].floor("h")) // pd.Timedelta(hours=1)).to_numpy()
    walk = np.cumsum(rng.normal(0.0, 25.0, hour_index.max() + 1))
    hour_of = (ts[0].floor("h") + pd.to_timedelta(np.arange(hour_index.max() + 1), unit="h")).hour.to_numpy()
    daily = 180.0 * np.exp(-((hour_of - 8.0) ** 2) / 6.0) + 220.0 * np.exp(-((hour_of - 18.0) ** 2) / 6.0)
    price = np.round(450.0 + walk + daily, 2)[hour_index]

    values = {
        "air_temp_c": air,
        "relative_humidity_percent": rh,
        "co2_measured_ppm": co2,
        "light_intensity_umol": light,
        "radiation_w_m2": radiation,
        "pipe_temp_1_c": pipe,
        "flow_temp_1_c": flow,
        "outside_temp_c": outside,
        "vpd_hpa": vpd,
        "heating_setpoint_c": setpoint,
        "vent_pos_1_percent": vent1,
        "vent_pos_2_percent": vent2,
        "curtain_1_percent": curtain,
        "rain_status": rain,
        "co2_status": co2_status,
        "co2_dosing_status": co2_dosing,
        "spot_price_dkk_mwh": price,
    }
    frame = pd.DataFrame({"timestamp": ts, "compartment_id": compartment})
    for name in SENSORS:
        frame[name] = np.round(values[name], 2)

    cells = rng.random((n, len(CONTINUOUS))) < NAN_FRACTION
    for j, name in enumerate(CONTINUOUS):
        frame.loc[cells[:, j], name] = np.nan
    keep = np.ones(n, dtype=bool)
    if n > 4 * GAP_ROWS[1]:
        for start in rng.choice(np.arange(GAP_ROWS[1], n - 2 * GAP_ROWS[1]), size=GAPS, replace=False):
            keep[start : start + rng.integers(GAP_ROWS[0], GAP_ROWS[1] + 1)] = False
    return frame.loc[keep].reset_index(drop=True)


def generate_sample(
    days: int = 3, freq: str = "1min", seed: int = 7, compartments: tuple[str, ...] = ("greenhouse_1",)
) -> pd.DataFrame:
    """Wide frame: timestamp, compartment_id, then the DESIGN.md sensors; same seed, same frame."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    ts = pd.date_range(START, START + pd.Timedelta(days=days), freq=freq, inclusive="left")
    rng = np.random.default_rng(seed)
    parts = [_compartment(rng, ts, c) for c in compartments]
    out = pd.concat(parts, ignore_index=True)
    out["timestamp"] = out["timestamp"].astype("datetime64[ns]")
    return out


def write_sample(frame: pd.DataFrame, out: Path) -> None:
    """CSV (gzip with mtime 0 when the name ends in .gz, so equal frames give equal bytes) or Parquet."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
        return
    compression = {"method": "gzip", "mtime": 0} if out.suffix == ".gz" else None
    frame.to_csv(out, index=False, date_format="%Y-%m-%d %H:%M:%S", compression=compression)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .csv, .csv.gz or .parquet")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--freq", default="1min")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compartments", default="greenhouse_1", help="comma-separated ids")
    args = parser.parse_args(argv)
    frame = generate_sample(args.days, args.freq, args.seed, tuple(args.compartments.split(",")))
    write_sample(frame, args.out)
    print(f"wrote {len(frame)} rows x {len(SENSORS)} sensors to {args.out}")


if __name__ == "__main__":
    main()
