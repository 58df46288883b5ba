"""The run's eras.done watcher keeps up even when its consumer stops fetching."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import TopicPartition

from streams import kafka
from streams.local_run import DoneWatcher
from streams.topics import ERAS_DONE, create_topics

pytestmark = pytest.mark.kafka


def _send_notice(settings, era_key: str) -> None:
    producer = kafka.producer(settings)
    for source in ("tsfresh", "rolling"):
        body = {"kind": "era", "era_key": era_key, "run_id": "r", "source": source, "stage_seconds": {}}
        producer.produce(ERAS_DONE, key=era_key, value=json.dumps(body).encode())
    assert producer.flush(30) == 0


def _wait_finished(watcher: DoneWatcher, key: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watcher.poll(0.2)
        if watcher.finished([key]) == 1:
            return True
    return False


def test_a_stalled_watcher_restarts_its_consumer_and_sees_the_notices(settings, unique):
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    watcher = DoneWatcher(settings)
    watcher._watch.check_every_s = 0.5
    try:
        stuck = watcher.consumer
        # A consumer that fetches nothing more: what librdkafka#5153 leaves after a broker restart.
        stuck.pause([TopicPartition(t, p) for t, p in watcher.next_offsets])
        key = f"era-{unique}"
        _send_notice(settings, key)
        assert _wait_finished(watcher, key, 30)
        assert watcher.consumer is not stuck
    finally:
        watcher.close()


def test_a_quiet_watcher_keeps_its_consumer(settings, unique):
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    watcher = DoneWatcher(settings)
    watcher._watch.check_every_s = 0.5
    try:
        first = watcher.consumer
        key = f"era-{unique}"
        _send_notice(settings, key)
        assert _wait_finished(watcher, key, 30)
        for _ in range(10):  # nothing new: lag checks find nothing behind
            watcher.poll(0.2)
        assert watcher.consumer is first
    finally:
        watcher.close()
