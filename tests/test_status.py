"""`erastream status` on the real broker and embedded ClickHouse: group state and members, lag,
eras in flight, dead letters, eras completed, and a clear word when a sink holds chDB."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from typer.testing import CliRunner

from schemas.codec import EraChunk, FeatureBatch, encode_era_chunk, encode_feature_batch
from stages.clickhouse import ClickHouseWriter, EraRecord, apply_schema, connect
from streams.cli import app
from streams.kafka import admin_client, consumer_config
from streams.status import StageSpec, chdb_locked, collect_status, completed_eras, render
from streams.topics import wait_for_leaders

pytestmark = pytest.mark.kafka


def _chunk(key: str, index: int, last: bool, run_id: str = "r1") -> bytes:
    compartment, era = key.split(":")
    return encode_era_chunk(EraChunk(
        era_key=key, compartment_id=compartment, era_id=era, run_id=run_id, feature_set="minimal", stage="ingest",
        chunk_index=index, last=last, row_start=0, row_end=1, sensors=["a"], payload=b"x"))


def _batch(key: str, index: int, last: bool) -> bytes:
    compartment, era = key.split(":")
    return encode_feature_batch(FeatureBatch(
        era_key=key, compartment_id=compartment, era_id=era, run_id="r1", feature_set="minimal", source="tsfresh",
        kind="features", chunk_index=index, last=last, era_rows=1, sensors=["a"],
        computed_at=datetime.now(timezone.utc), payload=b"x"))


def _topics(settings, **topics: int) -> None:
    admin = admin_client(settings)
    for name, n in topics.items():
        admin.create_topics([NewTopic(name, n, 1)])[name].result()
    wait_for_leaders(admin, list(topics))


def _commit(settings, group: str, offsets: dict) -> None:
    c = Consumer(consumer_config(settings, group))
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    c.close()


def _send(producer: Producer, topic: str, partition: int, key: str, value: bytes) -> None:
    producer.produce(topic, key=key.encode(), value=value, partition=partition)


def test_lag_members_eras_in_flight_and_dead_letters(settings, unique):
    raw, feats, dead = f"st-raw-{unique}", f"st-feat-{unique}", f"st-raw-{unique}.dlq"
    _topics(settings, **{raw: 2, feats: 1, dead: 1})
    plain = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    # partition 0: era A (3 chunks), era B (2 chunks); partition 1: era C, a poison message, era D (2 chunks)
    for i, last in enumerate((False, False, True)):
        _send(plain, raw, 0, "gh:A", _chunk("gh:A", i, last))
    _send(plain, raw, 0, "gh:B", _chunk("gh:B", 0, False))
    _send(plain, raw, 0, "gh:B", _chunk("gh:B", 1, True))
    _send(plain, raw, 1, "gh:C", _chunk("gh:C", 0, True))
    _send(plain, raw, 1, "junk", b"garbage")
    _send(plain, raw, 1, "gh:D", _chunk("gh:D", 0, False, run_id="r2"))
    _send(plain, raw, 1, "gh:D", _chunk("gh:D", 1, True, run_id="r2"))
    plain.flush(30)

    # features topic written in transactions, as the stages do: markers take offsets
    txn = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": f"st-{unique}"})
    txn.init_transactions(30)
    for values, topic in (([_batch("gh:E", 0, False), _batch("gh:E", 1, True)], feats), ([b"dead one"], dead), ([b"dead two"], dead)):
        txn.begin_transaction()
        for v in values:
            _send(txn, topic, 0, "k", v)
        txn.commit_transaction(30)

    pre, sink, replay = f"st.pre.{unique}", f"st.sink.{unique}", f"st.replay.{unique}"
    _commit(settings, pre, {(raw, 0): 3})  # era A done; B waits; nothing committed on partition 1
    _commit(settings, sink, {(feats, 0): 2})  # E fully consumed: high is 3 (the commit marker)
    _commit(settings, replay, {(dead, 0): 2})  # the first dead letter (and its marker) replayed

    member = Consumer(consumer_config(settings, pre, **{"client.id": f"status-test-{unique}"}))
    member.subscribe([raw])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    stages = [StageSpec("preprocess", pre, (raw,), "era_chunk"), StageSpec("sink", sink, (feats,), "feature_batch")]
    try:
        report = collect_status(settings, stages=stages, dead_letter_topics=[dead], replay_group=replay)
    finally:
        member.close()

    p, s = report.stages
    assert p.state == "stable" and len(p.members) == 1
    assert p.members[0].client_id == f"status-test-{unique}"
    assert p.members[0].partitions == [f"{raw}[0]", f"{raw}[1]"] and p.members[0].host
    lag = {(x.topic, x.partition): (x.committed, x.high, x.lag, x.offset_lag, x.cut) for x in p.partitions}
    assert lag == {(raw, 0): (3, 5, 2, 2, False), (raw, 1): (None, 4, 4, 4, False)}
    assert p.lag == 6 and p.eras_in_flight == 3 and not p.in_flight_cut  # B, C, D (D under another run id)
    assert p.undecodable == 1

    assert s.state in ("empty", "none") and s.members == []  # a group that only committed offsets has no members
    (feat_part,) = s.partitions
    assert (feat_part.committed, feat_part.high, feat_part.offset_lag, feat_part.lag) == (2, 3, 1, 0)
    assert s.eras_in_flight == 0

    (d,) = report.dead_letters
    assert (d.topic, d.messages, d.not_replayed, d.offsets, d.cut, d.exists) == (dead, 2, 1, 4, False, True)
    assert report.clickhouse_note and "no embedded ClickHouse data" in report.clickhouse_note
    assert p.eras_completed is None and s.eras_completed == {}  # preprocess leaves no trace; nothing stored yet

    # one more era on the features topic; the preprocess group moves past B's first chunk
    txn.begin_transaction()
    _send(txn, feats, 0, "gh:F", _batch("gh:F", 0, True))
    txn.commit_transaction(30)
    _commit(settings, pre, {(raw, 0): 4, (raw, 1): 2})
    report = collect_status(settings, stages=stages, dead_letter_topics=[dead], replay_group=replay, clickhouse=False)
    p, s = report.stages
    assert p.state in ("empty", "none") and p.members == []
    assert [(x.lag, x.offset_lag) for x in p.partitions] == [(1, 1), (2, 2)]
    assert p.eras_in_flight == 1  # D only: B's first chunk is behind the committed offset, so B is finished
    assert (s.partitions[0].lag, s.eras_in_flight) == (1, 1)

    # bounded reading: at most one message per partition, counts become "at least"
    cut = collect_status(settings, stages=stages[:1], dead_letter_topics=[dead], replay_group=replay, scan_limit=1, clickhouse=False)
    assert cut.stages[0].lag_cut and cut.stages[0].in_flight_cut and cut.stages[0].lag == 2
    assert cut.dead_letters[0].cut and cut.dead_letters[0].messages == 1

    # a topic that does not exist is reported, not an error
    missing = collect_status(settings, stages=[StageSpec("x", f"st.none.{unique}", (f"nope-{unique}",), "era_chunk")],
                             dead_letter_topics=[f"nope-{unique}.dlq"], clickhouse=False)
    assert missing.stages[0].missing_topics == [f"nope-{unique}"] and missing.stages[0].state == "none"
    assert not missing.dead_letters[0].exists

    from rich.console import Console

    console = Console(record=True, width=160)
    render(report, console)
    text = console.export_text()
    assert "preprocess" in text and raw in text and dead in text


def _era(writer: ClickHouseWriter, run_id: str, era_id: str, tsfresh: bool, rolling: bool) -> None:
    at = pd.Timestamp("2024-03-01 12:00", tz="UTC")
    writer.upsert_era(EraRecord(
        compartment_id="gh", era_id=era_id, run_id=run_id, feature_set="minimal", era_start=pd.Timestamp("2024-01-01"),
        era_end=pd.Timestamp("2024-01-02"), rows=10, sensors=["a"], tsfresh_features=5 if tsfresh else 0,
        rolling_features=8 if rolling else 0, tsfresh_at=at if tsfresh else None, rolling_at=at if rolling else None))


def test_eras_completed_per_stage_from_clickhouse(settings):
    client = connect(None, settings.clickhouse_path)
    apply_schema(client)
    writer = ClickHouseWriter(client)
    _era(writer, "r1", "e1", tsfresh=True, rolling=True)
    _era(writer, "r1", "e2", tsfresh=True, rolling=False)
    _era(writer, "r2", "e3", tsfresh=False, rolling=True)
    _era(writer, "r1", "e2", tsfresh=False, rolling=True)  # the rolling result of e2 arrives later
    client.close()

    where, note, completed = completed_eras(settings)
    assert note is None and "embedded chDB" in where
    assert completed == {"tsfresh": {"r1": 2, "r2": 0}, "rolling": {"r1": 2, "r2": 1}, "sink": {"r1": 2, "r2": 0}}

    report = collect_status(settings)  # the pipeline's own groups and topics, whatever state they are in
    by_stage = {s.name: s.eras_completed for s in report.stages}
    assert by_stage == {"preprocess": None, "tsfresh": {"r1": 2, "r2": 0}, "rolling": {"r1": 2, "r2": 1}, "sink": {"r1": 2, "r2": 0}}
    assert report.clickhouse_note is None


def test_status_says_when_a_running_sink_holds_embedded_clickhouse(settings):
    path = settings.clickhouse_path
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from stages.clickhouse import connect; c = connect(None, {str(path)!r}); print('held', flush=True); "
                               "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert chdb_locked(path)
        _, note, completed = completed_eras(settings)
        assert completed is None and "in use by another process" in note and "running sink" in note

        base = ["--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir", str(settings.data_dir)]
        result = CliRunner().invoke(app, [*base, "status", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert [s["name"] for s in data["stages"]] == ["preprocess", "tsfresh", "rolling", "sink"]
        assert [s["group_id"] for s in data["stages"]] == ["erastream.preprocess", "erastream.tsfresh", "erastream.rolling", "erastream.sink"]
        assert "in use by another process" in data["clickhouse_note"]
        assert [d["topic"] for d in data["dead_letters"]] == ["eras.raw.dlq", "eras.clean.dlq", "features.tsfresh.dlq", "features.rolling.dlq"]

        result = CliRunner().invoke(app, [*base, "status"])
        assert result.exit_code == 0, result.output
        assert "in use by another process" in " ".join(result.stdout.split())
        assert "eras in flight" in result.stdout
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert not chdb_locked(path)
