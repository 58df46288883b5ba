"""Replay on the real broker: a group is never moved forward past records it has not processed
(unless forced), and a backfill from a time starts at the first chunk of an era spanning it."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.codec import EraChunk, decode_era_chunk, encode_era_chunk
from schemas.payload import frame_to_ipc
from streams.kafka import admin_client, consumer_config
from streams.replay import CaughtUp, ReplayError, plan_replay, replay_group
from streams.topic_reader import BoundedRead, partitions, reader, watermarks
from streams.topics import ERAS_CLEAN, ERAS_RAW, create_topics
from streams.workers import run_stage

pytestmark = pytest.mark.kafka


def _ends(settings, topic: str) -> dict:
    c = reader(settings)
    try:
        tps = [(topic, p) for p in partitions(c, [topic])[topic]]
        return {tp: high for tp, (_, high) in watermarks(c, tps).items()}
    finally:
        c.close()


def _commit(settings, group: str, offsets: dict) -> None:
    c = Consumer(consumer_config(settings, group))
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    c.close()


def _chunk(key: str, index: int, last: bool, day: str, run_id: str) -> EraChunk:
    compartment, era_id = key.split(":", 1)
    ts = pd.date_range(day, periods=4, freq="1h") + pd.Timedelta(hours=4 * index)
    frame = pd.DataFrame({"timestamp": ts.astype("datetime64[ns]"), "air_temp_c": [20.0 + index, 21.0, 22.0, 23.0]})
    return EraChunk(era_key=key, compartment_id=compartment, era_id=era_id, run_id=run_id, feature_set="minimal",
                    stage="ingest", chunk_index=index, last=last, row_start=4 * index, row_end=4 * index + 4,
                    sensors=["air_temp_c"], payload=frame_to_ipc(frame), chunk_count=index + 1 if last else None)


def _send(settings, partition: int, chunks: list[EraChunk]) -> list[int]:
    """Produce chunks to one partition of eras.raw, in order, in one transaction; their offsets."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": f"test-replay-{time.monotonic_ns()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    offsets: list[int] = []
    for chunk in chunks:
        producer.produce(ERAS_RAW, key=chunk.era_key, value=encode_era_chunk(chunk), partition=partition,
                         on_delivery=lambda err, msg: offsets.append(msg.offset()))
    producer.commit_transaction(30)
    assert len(offsets) == len(chunks)
    return offsets


def _pause_clock() -> datetime:
    time.sleep(1.2)
    at = datetime.now(timezone.utc)
    time.sleep(1.2)
    return at


def test_a_group_behind_the_start_is_not_moved_past_unprocessed_records(settings, unique):
    create_topics(admin_client(settings), settings.topic_partitions)
    run_id = f"guard-{unique}"
    group = replay_group("preprocess", run_id)
    # an era abandoned after its chunk 0, all before the time: it must not pull the start back
    _send(settings, 1, [_chunk(f"gh_{unique}:abandoned", 0, False, "2024-04-30", "r")])
    before = _ends(settings, ERAS_RAW)
    _commit(settings, group, before)  # the group stands before the early era: it has not processed it
    early = _send(settings, 1, [_chunk(f"gh_{unique}:early", 0, True, "2024-05-01", "r")])
    middle = _pause_clock()
    _send(settings, 1, [_chunk(f"gh_{unique}:late", 0, True, "2024-05-02", "r")])

    with pytest.raises(ReplayError) as caught:
        plan_replay(settings, "preprocess", middle, run_id)
    text = str(caught.value)
    assert "would skip 1 unprocessed message(s)" in text and f"{ERAS_RAW}[1] (1)" in text and "--force" in text
    c = Consumer(consumer_config(settings, group))
    try:  # refused: the group's offsets did not move
        committed = c.committed([TopicPartition(ERAS_RAW, 1)], timeout=30)[0].offset
    finally:
        c.close()
    assert committed == before[(ERAS_RAW, 1)]

    plan = plan_replay(settings, "preprocess", middle, run_id, force=True)
    assert {tp.partition: tp.offset for tp in plan.start}[1] == early[0] + 2  # past the early era and its marker

    # a group that processed everything: its committed offset sits on the last transaction's marker
    # (one short of the high watermark); a start at the end skips nothing and is allowed
    ends = _ends(settings, ERAS_RAW)
    _commit(settings, group, {tp: high - 1 if tp == (ERAS_RAW, 1) else high for tp, high in ends.items()})
    plan = plan_replay(settings, "preprocess", datetime.now(timezone.utc), run_id)
    assert plan.messages == 0


def test_a_backfill_from_a_time_starts_at_the_first_chunk_of_an_era_spanning_it(settings, unique):
    create_topics(admin_client(settings), settings.topic_partitions)
    run_id = f"span-{unique}"
    clean_before = _ends(settings, ERAS_CLEAN)
    abandoned, done, spanning, later = (f"gh_{unique}:{n}" for n in ("abandoned", "done", "spanning", "later"))
    # abandoned: chunk 0 before the time and never another; done: wholly before the time;
    # spanning: chunks 0 and 1 before it, 2 after; later: wholly after
    first = _send(settings, 2, [_chunk(abandoned, 0, False, "2024-05-31", "orig"),
                                _chunk(done, 0, False, "2024-06-01", "orig"), _chunk(spanning, 0, False, "2024-06-02", "orig"),
                                _chunk(done, 1, True, "2024-06-01", "orig"), _chunk(spanning, 1, False, "2024-06-02", "orig")])
    at = _pause_clock()
    second = _send(settings, 2, [_chunk(spanning, 2, True, "2024-06-02", "orig"), _chunk(later, 0, True, "2024-06-03", "orig")])

    plan = plan_replay(settings, "preprocess", at, run_id)
    starts = {tp.partition: tp.offset for tp in plan.start}
    assert starts[2] == first[2], (f"expected the spanning era's chunk 0 at {first[2]}: not the time's offset "
                                   f"{second[0]}, nor the abandoned era's chunk at {first[0]}")

    # the stage replays both eras that have data after the time, the spanning one whole; not the finished one
    run_stage(settings, "preprocess", group_id=plan.group_id, run_id=run_id, until=CaughtUp(settings, plan))
    c = reader(settings)
    try:
        ends = _ends(settings, ERAS_CLEAN)
        clean = [decode_era_chunk(m.value()) for m in BoundedRead(c, {tp: (clean_before.get(tp, 0), e) for tp, e in ends.items()})]
    finally:
        c.close()
    ours = [ch for ch in clean if ch.run_id == run_id]
    assert {ch.era_key for ch in ours} == {spanning, later}
    assert sum(ch.row_end - ch.row_start for ch in ours if ch.era_key == spanning) == 12  # all three chunks' hours
