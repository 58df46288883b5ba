"""A replay of the sink larger than ClickHouse's insert dedup window stores nothing twice.

The insert deduplication window is set to 1 insert after the first run, so it cannot cover the
replayed batches (which are also cut differently from the first run's); the sink's ledger of
stored messages (stored_messages) must. Real broker, real stage processes, real chDB.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from streams.replay import CaughtUp, plan_replay
from tests.harness import PipelineUnderTest
from tests.test_delivery import _assert_stored_once, _expected, _input

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TABLES = ("era_features", "rolling_features", "eras", "stored_messages")


def test_a_sink_replay_larger_than_the_dedup_window_stores_every_era_once(settings, unique, tmp_path):
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    try:
        since = datetime.now(timezone.utc) - timedelta(seconds=1)
        path = _input(tmp_path, "in", days=5)
        pipe.start_all()
        report = pipe.ingest(path)
        pipe.wait_stored(report.eras)
        pipe.stop("sink")
        client = pipe.clickhouse()
        try:
            for table in TABLES:
                client.command(f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 1")
        finally:
            client.close()

        plan = plan_replay(cfg, "sink", since)
        assert plan.messages > 2, plan  # more messages than the window's one insert can cover
        pipe.start("sink")
        caught_up = CaughtUp(cfg, plan)
        deadline = time.monotonic() + 120
        while not caught_up() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert caught_up(), pipe.logs()
        pipe.stop()
        _assert_stored_once(pipe, _expected(path))
    finally:
        pipe.close()
