"""The pipeline's topics and their creation through the AdminClient."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

ERAS_RAW = "eras.raw"
ERAS_CLEAN = "eras.clean"
FEATURES_TSFRESH = "features.tsfresh"
FEATURES_ROLLING = "features.rolling"
ERAS_DONE = "eras.done"  # the sink's notices: an era's features are in ClickHouse

PIPELINE_TOPICS: tuple[str, ...] = (ERAS_RAW, ERAS_CLEAN, FEATURES_TSFRESH, FEATURES_ROLLING)

#: Each stage's input topics, stages in pipeline order: the one table that workers, status and
#: replay read, so a new stage or topic is added in one place.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "preprocess": (ERAS_RAW,),
    "tsfresh": (ERAS_CLEAN,),
    "rolling": (ERAS_CLEAN,),
    "sink": (FEATURES_TSFRESH, FEATURES_ROLLING),
}


def stage_group(stage: str) -> str:
    """A stage's own consumer group (a replay under a new run id uses a group of its own)."""
    return f"erastream.{stage}"


def dlq(topic: str) -> str:
    """The dead-letter twin of a topic."""
    return f"{topic}.dlq"


def all_topics() -> list[str]:
    """Every topic the pipeline uses, dead-letter twins included."""
    return [*PIPELINE_TOPICS, *(dlq(t) for t in PIPELINE_TOPICS), ERAS_DONE]


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    created: bool  # False: it existed already


def create_topics(admin: AdminClient, partitions: int, replication: int = 1, timeout: float = 30.0) -> list[TopicInfo]:
    """Create every missing topic; existing ones are left as they are (idempotent)."""
    existing = admin.list_topics(timeout=timeout).topics
    wanted = all_topics()
    missing = [t for t in wanted if t not in existing]
    results: dict[str, bool] = {}
    if missing:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                results[name] = True
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                results[name] = False
    metadata = wait_for_leaders(admin, wanted, timeout)
    return [
        TopicInfo(t, len(metadata[t].partitions) if t in metadata else 0, results.get(t, False))
        for t in wanted
    ]


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float = 30.0) -> dict:
    """New topics answer NOT_LEADER until each partition has a leader: wait for that."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout).topics
        ready = all(
            t in metadata and metadata[t].partitions and all(p.leader >= 0 for p in metadata[t].partitions.values())
            for t in topics
        )
        if ready or time.monotonic() > deadline:
            return metadata
        time.sleep(0.1)


def list_topics(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, internal topics left out."""
    meta = admin.list_topics(timeout=timeout).topics
    return {name: len(t.partitions) for name, t in sorted(meta.items()) if not name.startswith("__")}
