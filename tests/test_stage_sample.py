"""stages.sample_data and the committed sample file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.ingest import read_sensor_file
from stages.sample_data import BINARY, CONTINUOUS, SENSORS, generate_sample, main

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "greenhouse_sample.csv.gz"


def test_deterministic_for_a_seed():
    a = generate_sample(days=1, seed=3)
    pd.testing.assert_frame_equal(a, generate_sample(days=1, seed=3))
    assert not a[list(CONTINUOUS)].equals(generate_sample(days=1, seed=4)[list(CONTINUOUS)])


def test_shape_gaps_nans_and_binaries():
    frame = generate_sample(days=2, freq="1min", seed=7, compartments=("gh1", "gh2"))
    assert list(frame.columns) == ["timestamp", "compartment_id", *SENSORS]
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    for comp, rows in frame.groupby("compartment_id"):
        steps = rows["timestamp"].diff().dropna()
        assert steps.min() == pd.Timedelta("1min")
        assert (steps > pd.Timedelta("1min")).sum() >= 1  # missing rows
        assert len(rows) < 2 * 1440
    assert frame[list(CONTINUOUS)].isna().any().sum() >= 5  # scattered NaN cells
    for name in BINARY:
        values = set(frame[name].dropna().unique())
        assert values == {0.0, 1.0}, name
    price = frame.loc[frame["compartment_id"] == "gh1"].set_index("timestamp")["spot_price_dkk_mwh"]
    assert (price.groupby(price.index.floor("h")).nunique() == 1).all()  # constant within the hour
    assert price.nunique() > 24
    temp = frame.loc[frame["compartment_id"] == "gh1"].set_index("timestamp")["air_temp_c"]
    by_hour = temp.groupby(temp.index.hour).mean()
    assert by_hour.loc[12] - by_hour.loc[2] > 2.0  # daily cycle


def test_committed_sample_reads_cleanly_and_is_small():
    assert SAMPLE.stat().st_size < 1.5 * 2**20
    table = read_sensor_file(SAMPLE)
    assert table.bad_rows == [] and table.sensors == list(SENSORS)
    assert table.frame["compartment_id"].unique().tolist() == ["greenhouse_1"]
    expected = generate_sample(days=3)
    np.testing.assert_allclose(table.frame[list(SENSORS)].to_numpy(), expected[list(SENSORS)].to_numpy(), equal_nan=True)


def test_cli_writes_a_file(tmp_path, capsys):
    out = tmp_path / "s.csv.gz"
    main(["--out", str(out), "--days", "1", "--seed", "2"])
    assert len(read_sensor_file(out).frame) == len(generate_sample(days=1, seed=2))
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(ValueError):
        generate_sample(days=0)
