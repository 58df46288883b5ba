"""An era that never completes is dead-lettered after ERA_STALL_TIMEOUT and stops holding its partition back.

Real broker, a real preprocess process: a first chunk whose other chunks never come (as when they were
dead-lettered upstream, or a follower stopped with the era open).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from schemas.codec import EraChunk, encode_era_chunk
from streams import kafka
from streams.status import StageSpec, collect_status
from streams.topic_reader import committed_offsets
from streams.topics import ERAS_RAW, create_topics, dlq
from streams.workers import spawn_stage, stop_processes
from tests.test_dead_letters import _ends, _read_from, _start_group_at_end

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_stalled_era_is_dead_lettered_and_the_offset_moves_on(settings, tmp_path, unique):
    cfg = settings.model_copy(update={"era_stall_timeout_s": 4.0, "run_id": f"stall-{unique}"})
    create_topics(kafka.admin_client(cfg), cfg.topic_partitions)
    group = f"erastream.preprocess.stall-{unique}"
    _start_group_at_end(cfg, group, [ERAS_RAW])
    dlq_start = _ends(cfg, [dlq(ERAS_RAW)])
    key = f"gh_stall:{unique}"
    first = EraChunk(era_key=key, compartment_id="gh_stall", era_id=unique, run_id=cfg.run_id, feature_set="minimal",
                     stage="ingest", chunk_index=0, last=False, row_start=0, row_end=0, sensors=["x"], payload=b"")
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    where: dict = {}
    producer.produce(ERAS_RAW, key=key, value=encode_era_chunk(first), timestamp=int(time.time() * 1000) - 120_000,
                     on_delivery=lambda err, msg: where.update(at=(msg.partition(), msg.offset()), err=err))
    producer.flush(30)
    assert where["err"] is None
    partition, offset = where["at"]

    # before the stage runs, status shows the era as stalled (its only chunk is two minutes old)
    (shown,) = collect_status(cfg, [StageSpec("preprocess", group, (ERAS_RAW,), "era_chunk")], clickhouse=False).stages
    assert shown.eras_in_flight == 1 and list(shown.eras_stalled) == [key] and shown.eras_stalled[key] >= 119

    procs = spawn_stage(cfg, "preprocess", 1, log_dir=tmp_path / "logs", group_id=group)
    try:
        admin = kafka.admin_client(cfg)
        deadline = time.monotonic() + 90
        committed = None
        while time.monotonic() < deadline:
            committed = committed_offsets(admin, group, [(ERAS_RAW, partition)])[(ERAS_RAW, partition)]
            if committed is not None and committed > offset:
                break
            time.sleep(0.5)
        assert committed is not None and committed > offset, f"offset held at {committed}"
    finally:
        stop_processes(procs)
    letters = [m for m in _read_from(cfg, dlq_start) if m[3] == key.encode()]
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0][5]}
    assert headers["erastream.error_type"] == "EraStalled"
    assert "stalled" in headers["erastream.error"] and "last chunk never came" in headers["erastream.error"]
    assert headers["erastream.source_offset"] == str(offset)
    log = (tmp_path / "logs" / "preprocess-0.log").read_text()
    assert "stalled" in log
