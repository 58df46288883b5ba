"""The embedded ClickHouse (chDB through clickhouse-connect) and the DDL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.clickhouse import ClickHouseError, ClickHouseWriter, EraRecord, apply_schema, connect, era_status, raw_features


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = connect(None, tmp_path_factory.mktemp("ch") / "clickhouse")
    apply_schema(c)
    yield c
    c.close()


def _features(values, version=1):
    n = len(values)
    return pd.DataFrame({
        "compartment_id": "gh1", "era_id": "e1", "sensor": ["air_temp_c"] * n, "feature": [f"f{i}" for i in range(n)],
        "value": np.asarray(values, dtype="float64"), "source": "tsfresh", "feature_set": "minimal", "run_id": "r1",
        "version": np.full(n, version, dtype="uint64"), "computed_at": pd.Timestamp("2024-01-01", tz="UTC"),
    })


def test_table_round_trip_through_embedded_clickhouse(client):
    client.command("CREATE TABLE IF NOT EXISTS roundtrip (k String, ts DateTime64(3, 'UTC'), v Float64) ENGINE = MergeTree ORDER BY k")
    frame = pd.DataFrame({"k": ["a", "b", "c"], "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
                          "v": [1.5, np.nan, -2.25]})
    client.insert_df("roundtrip", frame)
    back = client.query_df("SELECT k, ts, v FROM roundtrip ORDER BY k")
    assert list(back["k"]) == ["a", "b", "c"]
    assert back["v"].iloc[0] == 1.5 and np.isnan(back["v"].iloc[1]) and back["v"].iloc[2] == -2.25
    assert list(pd.to_datetime(back["ts"], utc=True).dt.day) == [1, 2, 3]


def test_schema_is_idempotent_and_has_the_design_tables(client):
    apply_schema(client)
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"era_features", "rolling_features", "eras", "feature_selection"} <= tables


def test_same_token_is_stored_once_and_nan_survives(client):
    writer = ClickHouseWriter(client)
    frame = _features([1.0, np.nan, 3.0])
    writer.write_features(frame, token="tok-a")
    writer.write_features(frame, token="tok-a")
    plain = client.query("SELECT count() FROM era_features WHERE era_id = 'e1'").result_rows[0][0]
    final = client.query("SELECT count() FROM era_features FINAL WHERE era_id = 'e1'").result_rows[0][0]
    assert plain == final == 3
    got = raw_features(client, "r1", "e1")
    assert np.isnan(got.loc[got["feature"] == "f1", "value"].iloc[0])


def test_era_row_merges_both_sources(client):
    writer = ClickHouseWriter(client)
    base = dict(compartment_id="gh1", era_id="e9", run_id="r1", feature_set="minimal",
                era_start=pd.Timestamp("2024-01-01"), era_end=pd.Timestamp("2024-01-02"), rows=1440, sensors=["a", "b"])
    writer.upsert_era(EraRecord(**base, tsfresh_features=20, tsfresh_at=pd.Timestamp("2024-02-01 10:00", tz="UTC")))
    writer.upsert_era(EraRecord(**base, rolling_features=64, rolling_at=pd.Timestamp("2024-02-01 10:01", tz="UTC")))
    row = era_status(client, "r1").set_index("era_id").loc["e9"]
    assert row["tsfresh_features"] == 20 and row["rolling_features"] == 64
    assert not pd.isna(row["tsfresh_at"]) and not pd.isna(row["rolling_at"])


def test_bad_url_is_a_clear_error(tmp_path):
    with pytest.raises(ClickHouseError, match="http:// or https://"):
        connect("tcp://localhost:9000", tmp_path)


def test_embedded_clickhouse_held_by_another_process_is_a_clear_error(tmp_path):
    import subprocess
    import sys
    import time

    path = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from stages.clickhouse import connect; c = connect(None, {str(path)!r}); "
         "c.command('SELECT 1'); print('open', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ClickHouseError, match="in use by another process"):
            connect(None, path)
    finally:
        holder.kill()
        holder.wait()
