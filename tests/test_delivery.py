"""Nothing lost, nothing doubled: crashes, a broker restart, a ClickHouse outage, scaling, replay.

Every test runs real stage processes on the session's real Kafka broker and stores into
embedded ClickHouse; crashes are real SIGKILLs at chosen lines (streams/failpoints.py).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from stages.ingest import assign_eras, read_sensor_file
from stages.preprocess import preprocess_era
from stages.sample_data import generate_sample
from stages.tsfresh_features import extract_era_features
from streams import kafka
from streams.replay import CaughtUp, plan_replay
from streams.workers import run_stage
from tests.harness import PipelineUnderTest, count_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def pipeline(settings, unique):
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    yield pipe
    pipe.close()


def _input(tmp_path, name: str, days: int = 4, seed: int = 3, start: str | None = None) -> tuple:
    frame = generate_sample(days=days, freq="10min", seed=seed, compartments=("gh_x",))
    if start is not None:
        frame["timestamp"] = frame["timestamp"] - frame["timestamp"].min() + pd.Timestamp(start)
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _expected(path) -> dict[str, pd.Series]:
    """What an undisturbed run stores: the stage functions applied directly to the input."""
    table = read_sensor_file(path)
    out = {}
    for spec, rows in assign_eras(table.frame, None, "1D"):
        feats = extract_era_features(preprocess_era(rows, table.sensors), table.sensors, "minimal")
        out[spec.key] = feats.set_index(["sensor", "feature"])["value"].sort_index()
    return out


def _assert_stored_once(pipe: PipelineUnderTest, expected: dict[str, pd.Series]) -> None:
    run_id = pipe.settings.run_id
    client = pipe.clickhouse()
    try:
        for table in ("era_features", "rolling_features"):
            plain, final = count_rows(client, table, run_id)
            assert plain == final > 0, f"{table}: {plain} rows but {final} after FINAL"
        stored = client.query_df(
            "SELECT compartment_id, era_id, sensor, feature, value FROM era_features WHERE run_id = {r:String} "
            "AND source = 'tsfresh'", parameters={"r": run_id})
        stored["key"] = stored["compartment_id"] + ":" + stored["era_id"]
        assert set(stored["key"]) == set(expected)
        for key, want in expected.items():
            got = stored[stored["key"] == key].set_index(["sensor", "feature"])["value"].sort_index()
            assert list(got.index) == list(want.index)
            np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, equal_nan=True, err_msg=key)
        eras = client.query("SELECT count() FROM eras FINAL WHERE run_id = {r:String}", parameters={"r": run_id}).result_rows[0][0]
        assert eras == len(expected)
    finally:
        client.close()


@pytest.mark.parametrize("failpoint", ["tsfresh.in_era=2", "tsfresh.in_transaction=1"])
def test_tsfresh_worker_killed_mid_era_then_restarted(pipeline, tmp_path, failpoint):
    path = _input(tmp_path, "in")
    for stage in ("preprocess", "rolling", "sink"):
        pipeline.start(stage)
    (doomed,) = pipeline.start("tsfresh", ERASTREAM_FAILPOINTS=failpoint)
    report = pipeline.ingest(path)
    assert pipeline.wait_exit(doomed) == -9  # SIGKILL at the failpoint
    pipeline.start("tsfresh")
    pipeline.wait_stored(report.eras)
    pipeline.stop()
    _assert_stored_once(pipeline, _expected(path))


def test_sink_killed_between_insert_and_commit(pipeline, tmp_path):
    path = _input(tmp_path, "in")
    for stage in ("preprocess", "tsfresh", "rolling"):
        pipeline.start(stage)
    (doomed,) = pipeline.start("sink", ERASTREAM_FAILPOINTS="sink.after_insert=1")
    report = pipeline.ingest(path)
    assert pipeline.wait_exit(doomed) == -9
    pipeline.start("sink")  # re-reads what was inserted but not committed
    pipeline.wait_stored(report.eras)
    pipeline.stop()
    _assert_stored_once(pipeline, _expected(path))


def _freeze(broker, seconds: float) -> None:
    """SIGSTOP the broker process (it answers nothing, keeps its sockets open), then SIGCONT it."""
    pid = broker.status().pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("fault", ["stop", "kill", "freeze"])
def test_broker_fault_mid_run(settings, tmp_path, unique, kafka_broker, fault):
    """The broker stopped, SIGKILLed, or frozen with SIGSTOP for longer than the session (6 s) and
    transaction (10 s) timeouts, while eras are on their way: every era stored once, clean values."""
    cfg = settings.model_copy(update={
        "run_id": f"run-{unique}", "batch_size": 60, "session_timeout_ms": 6_000, "kafka_transaction_timeout_ms": 10_000,
    })
    pipe = PipelineUnderTest(cfg)
    try:
        path = _input(tmp_path, "in", days=5)
        pipe.start_all()
        report = pipe.ingest(path)
        time.sleep(1.0)
        if fault == "freeze":
            _freeze(kafka_broker, 15.0)
        else:
            kafka_broker.stop() if fault == "stop" else kafka_broker.kill()
            time.sleep(2.0)
            kafka_broker.start()
        pipe.wait_stored(report.eras, timeout=240)
        pipe.stop()
        _assert_stored_once(pipe, _expected(path))
    finally:
        pipe.close()


def _members(settings, group: str) -> dict[str, set[int]]:
    admin = kafka.admin_client(settings)  # keep a reference: a collected client never completes its futures
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}


def _wait_members(settings, group: str, count: int, timeout: float = 60) -> dict[str, set[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = _members(settings, group)
        if len(members) == count and all(members.values()):
            return members
        time.sleep(0.5)
    raise AssertionError(f"group {group} never had {count} members with partitions: {_members(settings, group)}")


def test_two_then_three_tsfresh_workers_split_partitions(pipeline, tmp_path):
    first = _input(tmp_path, "first", days=4, seed=1, start="2024-05-01")
    second = _input(tmp_path, "second", days=4, seed=2, start="2024-06-01")
    for stage in ("preprocess", "rolling", "sink"):
        pipeline.start(stage)
    pipeline.start("tsfresh", workers=2)
    members = _wait_members(pipeline.settings, "erastream.tsfresh", 2)
    parts = list(members.values())
    assert parts[0].isdisjoint(parts[1]) and len(parts[0] | parts[1]) == pipeline.settings.topic_partitions
    report_1 = pipeline.ingest(first)
    pipeline.wait_stored(report_1.eras)

    pipeline.start("tsfresh")  # a third worker joins; cooperative rebalance moves partitions to it
    members = _wait_members(pipeline.settings, "erastream.tsfresh", 3)
    sets = list(members.values())
    assert sum(len(s) for s in sets) == pipeline.settings.topic_partitions
    assert all(a.isdisjoint(b) for i, a in enumerate(sets) for b in sets[i + 1:])
    report_2 = pipeline.ingest(second)
    pipeline.wait_stored(report_2.eras)
    pipeline.stop()
    _assert_stored_once(pipeline, _expected(first) | _expected(second))


def test_replay_from_a_timestamp_reprocesses_exactly_the_later_eras(pipeline, tmp_path):
    early = _input(tmp_path, "early", days=2, seed=4, start="2024-07-01")
    late = _input(tmp_path, "late", days=2, seed=5, start="2024-08-01")
    pipeline.start_all()
    report_early = pipeline.ingest(early)
    pipeline.wait_stored(report_early.eras)
    time.sleep(1.5)
    middle = datetime.now(timezone.utc)
    time.sleep(1.5)
    report_late = pipeline.ingest(late)
    pipeline.wait_stored(report_late.eras)

    new_run = f"{pipeline.settings.run_id}-replay"
    plan = plan_replay(pipeline.settings, "preprocess", middle, new_run)
    assert plan.messages > 0
    caught_up = CaughtUp(pipeline.settings, plan)
    run_stage(pipeline.settings, "preprocess", group_id=plan.group_id, run_id=new_run, until=caught_up)
    replayed = [key for key in report_late.eras]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pipeline.watcher.poll()
        if _replayed_keys(pipeline, new_run) >= set(replayed):
            break
    pipeline.stop()
    client = pipeline.clickhouse()
    try:
        got = client.query_df("SELECT DISTINCT compartment_id, era_id FROM eras FINAL WHERE run_id = {r:String}",
                              parameters={"r": new_run})
        plain, final = count_rows(client, "era_features", new_run)
    finally:
        client.close()
    assert set(got["compartment_id"] + ":" + got["era_id"]) == set(report_late.eras)
    assert plain == final > 0


def _replayed_keys(pipe: PipelineUnderTest, run_id: str) -> set[str]:
    """Era keys with both sources stored under run_id, from the sink's notices."""
    pipe.watcher.poll()
    return {k for k, s in pipe.watcher.done_by_run.get(run_id, {}).items() if s >= {"tsfresh", "rolling"}}


def test_an_era_longer_than_the_poll_interval_keeps_its_worker_in_the_group(settings, tmp_path, unique):
    """Computing with partitions paused while polling: no max.poll.interval.ms to outgrow."""
    cfg = settings.model_copy(update={
        "run_id": f"long-{unique}", "feature_set": "comprehensive", "feature_engine": "tsfresh",
        "max_poll_interval_ms": 10_000, "session_timeout_ms": 6_000, "batch_size": 2000,
    })
    pipe = PipelineUnderTest(cfg)
    try:
        frame = generate_sample(days=1, freq="1min", seed=9, compartments=("gh_long",))
        path = tmp_path / "long.csv"
        frame.to_csv(path, index=False)
        pipe.start_all()
        report = pipe.ingest(path)
        pipe.wait_stored(report.eras, timeout=400)
        tsfresh_log = "".join(p.read_text() for p in pipe.log_dir.glob("tsfresh-*.log"))
        computed = [line for line in tsfresh_log.splitlines() if "tsfresh: era" in line]
        assert computed and float(computed[0].split(" in ")[1].split(" s")[0]) > 10.0  # longer than the interval
        assert "revoked" not in tsfresh_log and "poll interval" not in tsfresh_log
        pipe.stop()
        client = pipe.clickhouse()
        try:
            plain, final = count_rows(client, "era_features", cfg.run_id)
        finally:
            client.close()
        assert plain == final > 0
    finally:
        pipe.close()


def test_an_era_that_kills_its_worker_repeatedly_is_dead_lettered(pipeline, tmp_path):
    """Each tsfresh worker is SIGKILLed inside the era's compute; after ERA_MAX_ATTEMPTS (3) deaths the next
    worker dead-letters the era instead of crash-looping, and the stage goes on."""
    from tests.test_dead_letters import _ends, _read_from

    path = _input(tmp_path, "in", days=1)
    dlq_start = _ends(pipeline.settings, ["eras.clean.dlq"])
    for stage in ("preprocess", "rolling", "sink"):
        pipeline.start(stage)
    report = pipeline.ingest(path)
    for _ in range(3):
        (doomed,) = pipeline.start("tsfresh", ERASTREAM_FAILPOINTS="tsfresh.in_era=1")
        assert pipeline.wait_exit(doomed) == -9
    (survivor,) = pipeline.start("tsfresh")
    (key,) = report.eras
    deadline = time.monotonic() + 120
    letters = []
    while time.monotonic() < deadline and not letters:
        letters = [m for m in _read_from(pipeline.settings, dlq_start) if m[3] == key.encode()]
        time.sleep(0.5)
    assert letters, pipeline.logs()
    headers = {k: v.decode() for k, v in letters[0][5]}
    assert headers["erastream.error_type"] == "EraCrashedWorker" and "started 3 time(s)" in headers["erastream.error"]
    assert survivor.poll() is None  # the stage goes on
    pipeline.watcher.poll()
    stored = set().union(*(run.get(key, set()) for run in pipeline.watcher.done_by_run.values()))
    assert "tsfresh" not in stored
