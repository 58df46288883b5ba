"""Dead letters on the real broker: a poison message lands in eras.raw.dlq with its error headers,
`dlq list` shows it, `dlq replay` sends it back to eras.raw exactly once, also across a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from typer.testing import CliRunner

from schemas.codec import decode_era_chunk
from stages.sample_data import generate_sample
from streams.cli import app
from streams.dead_letters import REPLAYED_FROM, dlq_topics, list_dead_letters, replay_dead_letters, to_tsv
from streams.ingest import publish
from streams.kafka import admin_client, consumer_config
from streams.processors import PreprocessProcessor
from streams.runner import TransactionalStageRunner, error_headers
from streams.topic_reader import BoundedRead, partitions, reader, watermarks
from streams.topics import ERAS_CLEAN, ERAS_RAW, create_topics, dlq, wait_for_leaders

pytestmark = pytest.mark.kafka


def _ends(settings, topics) -> dict:
    c = reader(settings)
    try:
        tps = [(t, p) for t, ps in partitions(c, topics).items() for p in ps]
        return {tp: high for tp, (_, high) in watermarks(c, tps).items()}
    finally:
        c.close()


def _read_from(settings, starts: dict) -> list:
    """Every committed message from `starts` up to the current end, as (topic, partition, offset, key, value, headers)."""
    c = reader(settings)
    try:
        ends = _ends(settings, sorted({t for t, _ in starts}))
        spans = {tp: (starts.get(tp, 0), end) for tp, end in ends.items()}
        return [(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers() or [])
                for m in BoundedRead(c, spans, timeout=30)]
    finally:
        c.close()


def _start_group_at_end(settings, group: str, topics) -> None:
    """Commit `group` at the topics' current ends: it ignores what earlier tests of the session left."""
    c = Consumer(consumer_config(settings, group))
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in _ends(settings, topics).items()], asynchronous=False)
    c.close()


def _produce(settings, topic, key, value, headers=None) -> tuple[int, int]:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    where = {}
    producer.produce(topic, key=key, value=value, headers=headers,
                     on_delivery=lambda err, msg: where.update(at=(msg.partition(), msg.offset()), err=err))
    producer.flush(30)
    assert where["err"] is None
    return where["at"]


def test_poison_goes_to_the_dlq_and_replays_once(settings, tmp_path, unique):
    create_topics(admin_client(settings), settings.topic_partitions)
    raw_dlq = dlq(ERAS_RAW)
    stage_group, replay_group = f"test.preprocess.{unique}", f"test.dlq-replay.{unique}"
    _start_group_at_end(settings, stage_group, [ERAS_RAW])
    _start_group_at_end(settings, replay_group, [raw_dlq])
    starts = _ends(settings, [ERAS_RAW, ERAS_CLEAN, raw_dlq])

    # a good era (through the real ingest path) and a poison message with a header of its own
    compartment = f"gh_{unique}"
    csv = tmp_path / "good.csv"
    generate_sample(days=1, freq="30min", seed=3, compartments=(compartment,)).to_csv(csv, index=False)
    report = publish(settings, csv, era_length="1D")
    assert len(report.eras) == 1
    good_key = report.eras[0]
    poison_key = f"poison-{unique}".encode()
    poison = b"\x00not an envelope " + unique.encode()
    poison_at = _produce(settings, ERAS_RAW, poison_key, poison, [("trace-id", b"abc-123")])

    # the preprocess stage: the poison goes to eras.raw.dlq, the good era on to eras.clean
    stop = threading.Event()
    runner = TransactionalStageRunner(settings, "preprocess", ERAS_RAW, PreprocessProcessor(settings), group_id=stage_group)
    thread = threading.Thread(target=runner.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 90
        dead, clean = [], []
        while time.monotonic() < deadline and not (dead and any(decode_era_chunk(m[4]).last for m in clean)):
            time.sleep(0.5)
            dead = [m for m in _read_from(settings, {tp: o for tp, o in starts.items() if tp[0] == raw_dlq}) if m[3] == poison_key]
            clean = [m for m in _read_from(settings, {tp: o for tp, o in starts.items() if tp[0] == ERAS_CLEAN}) if m[3] == good_key.encode()]
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert len(dead) == 1, "the poison is dead-lettered exactly once"
    chunks = [decode_era_chunk(m[4]) for m in clean]
    assert chunks and chunks[-1].last and {c.compartment_id for c in chunks} == {compartment}
    assert all(c.stage == "preprocess" for c in chunks)

    _, dlq_partition, dlq_offset, _, value, headers = dead[0]
    assert value == poison
    h = dict(headers)
    assert h["erastream.stage"] == b"preprocess"
    assert h["erastream.source_topic"] == ERAS_RAW.encode()
    assert (int(h["erastream.source_partition"]), int(h["erastream.source_offset"])) == poison_at
    assert h["erastream.error_type"] == b"MessageDecodeError" and b"bad magic byte" in h["erastream.error"]
    assert h["trace-id"] == b"abc-123"

    # dlq list: module function and CLI (JSON, and tab-separated when not on a terminal)
    letters = [d for d in list_dead_letters(settings, [ERAS_RAW], replay_group=replay_group) if d.key == poison_key]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.topic, letter.partition, letter.offset) == (raw_dlq, dlq_partition, dlq_offset)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (ERAS_RAW, *poison_at)
    assert letter.stage == "preprocess" and letter.error_type == "MessageDecodeError" and not letter.replayed
    assert f"{raw_dlq}\t{dlq_partition}\t{dlq_offset}\tpoison-{unique}\t{ERAS_RAW}\t{poison_at[0]}\t{poison_at[1]}\tpreprocess\tMessageDecodeError" in to_tsv(letters)

    cli = CliRunner()
    base = ["--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir", str(settings.data_dir)]
    result = cli.invoke(app, [*base, "dlq", "list", "--topic", raw_dlq, "--json"])
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.stdout) if r["key"] == f"poison-{unique}"]
    assert len(rows) == 1 and rows[0]["source_offset"] == poison_at[1] and rows[0]["stage"] == "preprocess"
    assert rows[0]["error_type"] == "MessageDecodeError" and "bad magic byte" in rows[0]["error"]
    result = cli.invoke(app, [*base, "dlq", "list", "--topic", ERAS_RAW])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("dlq_topic\tpartition\toffset\tkey")
    assert any(f"poison-{unique}" in line for line in result.stdout.splitlines())
    result = cli.invoke(app, [*base, "dlq", "list", "--limit", "1", "--json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 1

    # a dry run sends nothing; a replay sends the poison back once; a second replay sends nothing
    raw_starts = {tp: o for tp, o in starts.items() if tp[0] == ERAS_RAW}
    dry = replay_dead_letters(settings, [ERAS_RAW], dry_run=True, group_id=replay_group)
    assert [d.key for d in dry.letters] == [poison_key]
    assert len([m for m in _read_from(settings, raw_starts) if m[3] == poison_key]) == 1

    first = replay_dead_letters(settings, [raw_dlq], group_id=replay_group, timeout=60)
    assert first.complete and [d.key for d in first.letters] == [poison_key] and first.by_target == {ERAS_RAW: 1}
    back = [m for m in _read_from(settings, raw_starts) if m[3] == poison_key]
    assert len(back) == 2  # the original and its replay
    replayed = back[1]
    assert replayed[4] == poison
    assert replayed[5] == [("trace-id", b"abc-123"), (REPLAYED_FROM, f"{raw_dlq}:{dlq_partition}:{dlq_offset}".encode())]

    second = replay_dead_letters(settings, [ERAS_RAW], group_id=replay_group, timeout=60)
    assert second.complete and second.letters == []
    assert len([m for m in _read_from(settings, raw_starts) if m[3] == poison_key]) == 2
    assert [d.replayed for d in list_dead_letters(settings, [ERAS_RAW], replay_group=replay_group) if d.key == poison_key] == [True]


def test_replay_killed_mid_way_neither_loses_nor_repeats(settings, unique):
    """Kill -9 inside the second transaction; the next replay fences it and sends the rest, each once."""
    create_topics(admin_client(settings), settings.topic_partitions)
    raw_dlq = dlq(ERAS_RAW)
    replay_group = f"test.dlq-crash.{unique}"
    source = f"dlq-source-{unique}"  # the dead letters say they came from here: replays are easy to count
    admin = admin_client(settings)
    admin.create_topics([NewTopic(source, 1, 1)])[source].result()
    wait_for_leaders(admin, [source])
    _start_group_at_end(settings, replay_group, [raw_dlq])
    values = [f"letter-{i}-{unique}".encode() for i in range(4)]
    for i, value in enumerate(values):
        _produce(settings, raw_dlq, b"same-key-" + unique.encode(), value,
                 [("own", str(i).encode()), *error_headers("preprocess", ValueError("boom"), source, 0, i)])

    script = (
        "from streams.dead_letters import replay_dead_letters; from streams.settings import load_settings; "
        f"replay_dead_letters(load_settings(), ['{raw_dlq}'], group_id='{replay_group}', batch_size=1, timeout=60)"
    )
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "DATA_DIR": str(settings.data_dir),
           "SESSION_TIMEOUT_MS": "6000", "ERASTREAM_FAILPOINTS": "dlq-replay.in_transaction=2"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]

    got = _read_from(settings, {(source, 0): 0})
    assert [m[4] for m in got] == values[:1]  # the first batch committed; the second died inside its transaction

    report = replay_dead_letters(settings, [raw_dlq], group_id=replay_group, timeout=90)
    assert report.complete and [d.value for d in report.letters] == values[1:]
    got = _read_from(settings, {(source, 0): 0})
    assert [m[4] for m in got] == values  # each once, in order, the aborted attempt invisible
    assert [dict(m[5])["own"] for m in got] == [b"0", b"1", b"2", b"3"]
    assert all(not k.startswith("erastream.") or k == REPLAYED_FROM for m in got for k, _ in m[5])
    assert replay_dead_letters(settings, [raw_dlq], group_id=replay_group, timeout=60).letters == []


def test_dlq_topic_names_normalise():
    assert dlq_topics(None) == ["eras.raw.dlq", "eras.clean.dlq", "features.tsfresh.dlq", "features.rolling.dlq"]
    assert dlq_topics(["eras.raw", "eras.raw.dlq", "features.rolling"]) == ["eras.raw.dlq", "features.rolling.dlq"]
