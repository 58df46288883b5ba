"""The whole pipeline on the real broker and embedded ClickHouse, checked against tsfresh itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tsfresh
from tsfresh.feature_extraction import EfficientFCParameters, MinimalFCParameters

from stages.clickhouse import connect
from stages.ingest import assign_eras, read_sensor_file
from stages.preprocess import preprocess_era
from stages.sample_data import generate_sample
from streams.local_run import run_local

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FC = {"minimal": MinimalFCParameters, "efficient": EfficientFCParameters}


def _run(settings, tmp_path, frame: pd.DataFrame, feature_set: str, run_id: str, engine: str):
    path = tmp_path / "input.csv"
    frame.to_csv(path, index=False)
    cfg = settings.model_copy(update={"feature_set": feature_set, "run_id": run_id, "batch_size": 100, "feature_engine": engine})
    summary = run_local(cfg, path, era_length="1D", timeout=400)
    client = connect(None, cfg.clickhouse_path)
    return path, summary, client


def _clean_eras(path) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Each era as preprocessing leaves it, computed here from the input file."""
    table = read_sensor_file(path)
    return {
        spec.key: (preprocess_era(rows, table.sensors), table.sensors)
        for spec, rows in assign_eras(table.frame, None, "1D")
    }


def _tsfresh_reference(clean: pd.DataFrame, sensors: list[str], feature_set: str) -> pd.Series:
    long = clean.melt(id_vars="timestamp", value_vars=sensors, var_name="sensor", value_name="value")
    wide = tsfresh.extract_features(long, column_id="sensor", column_sort="timestamp", column_value="value",
                                    default_fc_parameters=FC[feature_set](), disable_progressbar=True, n_jobs=0)
    out = {}
    for sensor in wide.index:
        for column in wide.columns:
            out[(str(sensor), column.removeprefix("value__"))] = float(wide.loc[sensor, column])
    return pd.Series(out)


def _assert_parity(client, run_id: str, clean_eras, feature_set: str) -> None:
    stored = client.query_df(
        "SELECT compartment_id, era_id, sensor, feature, value FROM era_features FINAL "
        "WHERE run_id = {r:String} AND source = 'tsfresh'", parameters={"r": run_id})
    stored["key"] = stored["compartment_id"] + ":" + stored["era_id"]
    assert set(stored["key"]) == set(clean_eras)
    for key, (clean, sensors) in clean_eras.items():
        ours = stored[stored["key"] == key].set_index(["sensor", "feature"])["value"].sort_index()
        ref = _tsfresh_reference(clean, sensors, feature_set).sort_index()
        assert list(ours.index) == list(ref.index), f"feature names differ for era {key}"
        a, b = ours.to_numpy(), ref.to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"NaN pattern differs for era {key}"
        finite = ~np.isnan(a)
        # 1e-9 relative; 1e-12 absolute for values that are zero up to rounding (e.g. 2.8e-17 vs 0.0)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-9, atol=1e-12, err_msg=f"era {key}")


def _assert_once(client, run_id: str, eras: int) -> None:
    for table in ("era_features", "rolling_features"):
        plain = client.query(f"SELECT count() FROM {table} WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
        final = client.query(f"SELECT count() FROM {table} FINAL WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
        assert plain == final > 0, f"{table}: {plain} rows, {final} after FINAL"
    assert client.query("SELECT count() FROM eras FINAL WHERE run_id = {r:String}", parameters={"r": run_id}).result_rows[0][0] == eras


def test_minimal_set_with_tsfresh_engine_multi_compartment_matches_tsfresh_and_pandas(settings, tmp_path, unique):
    frame = generate_sample(days=3, freq="5min", seed=11, compartments=("gh_a", "gh_b"))
    run_id = f"min-{unique}"
    path, summary, client = _run(settings, tmp_path, frame, "minimal", run_id, engine="tsfresh")
    try:
        clean_eras = _clean_eras(path)
        assert len(clean_eras) == 6 and len(summary.eras) == 6
        _assert_parity(client, run_id, clean_eras, "minimal")
        _assert_once(client, run_id, eras=6)

        # rolling values equal pandas' own rolling on the preprocessed era
        key = sorted(clean_eras)[1]
        clean, _ = clean_eras[key]
        compartment, era_id = key.split(":", 1)
        for sensor, window in (("air_temp_c", "60min"), ("rain_status", "5min"), ("co2_measured_ppm", "240min")):
            got = client.query_df(
                "SELECT timestamp, mean, std, min, max FROM rolling_features FINAL WHERE run_id = {r:String} "
                "AND compartment_id = {c:String} AND era_id = {e:String} AND sensor = {s:String} AND window = {w:String} "
                "ORDER BY timestamp", parameters={"r": run_id, "c": compartment, "e": era_id, "s": sensor, "w": window})
            series = clean.set_index("timestamp")[sensor].rolling(window)
            assert len(got) == len(clean)
            for stat in ("mean", "std", "min", "max"):
                np.testing.assert_allclose(got[stat].to_numpy(), getattr(series, stat)().to_numpy(), rtol=1e-9, equal_nan=True)

        # selection ran over all eras and is stored
        sel = client.query_df("SELECT feature, kept, reason FROM feature_selection WHERE run_id = {r:String}", parameters={"r": run_id})
        assert len(sel) > 0 and sel["kept"].any() and (~sel["kept"]).any()
        assert summary.selection.get("eras") == 6
    finally:
        client.close()


def test_efficient_set_with_the_fast_engine_matches_tsfresh(settings, tmp_path, unique):
    frame = generate_sample(days=2, freq="15min", seed=5, compartments=("gh_c",))
    run_id = f"eff-{unique}"
    path, summary, client = _run(settings, tmp_path, frame, "efficient", run_id, engine="fast")
    try:
        clean_eras = _clean_eras(path)
        assert len(clean_eras) == 2
        _assert_parity(client, run_id, clean_eras, "efficient")
        _assert_once(client, run_id, eras=2)
        assert set(summary.stage_seconds) >= {"preprocess", "tsfresh", "rolling"}
    finally:
        client.close()
