"""Bounded reads of topics: partitions, watermarks, committed offsets, and reading a span to its end.

"To the end" is always the high watermark captured before reading starts, so a
command that inspects a topic finishes even while producers keep writing. The
read_committed consumers never see transaction markers or aborted messages, so a
partition is finished when a message at or past its end arrives, when the consumer
reports the partition's end (partition EOF), or when the per-partition budget is
spent (the partition is then reported as cut).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Message, TopicPartition

from streams import kafka
from streams.settings import Settings

TP = tuple[str, int]  # (topic, partition)


def reader(settings: Settings, **extra) -> Consumer:
    """A consumer for assign()-only reads: a throwaway group id, never commits, never joins a group."""
    config = {"enable.partition.eof": True, "client.id": "erastream-reader", **extra}
    return Consumer(kafka.consumer_config(settings, f"erastream.reader.{uuid.uuid4().hex[:8]}", **config))


def partitions(consumer: Consumer, topics: Iterable[str], timeout: float = 10.0) -> dict[str, list[int]]:
    """Topic -> its partition ids, for the topics that exist (missing ones are left out)."""
    meta = consumer.list_topics(timeout=timeout).topics
    out: dict[str, list[int]] = {}
    for topic in topics:
        info = meta.get(topic)
        if info is not None and info.error is None and info.partitions:
            out[topic] = sorted(info.partitions)
    return out


_RETRIABLE = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
              KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)


def watermarks(consumer: Consumer, tps: Iterable[TP], timeout: float = 10.0) -> dict[TP, tuple[int, int]]:
    """(low, high) per partition, asked of the broker now (not cached).

    A partition whose leader is still settling (a topic created a moment ago) is asked
    again until `timeout`.
    """
    out: dict[TP, tuple[int, int]] = {}
    for t, p in tps:
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout, cached=False)
                break
            except KafkaException as exc:
                if exc.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        out[(t, p)] = (low, high)
    return out


def committed_offsets(admin, group_id: str, tps: Iterable[TP], timeout: float = 10.0) -> dict[TP, int | None]:
    """The group's committed offset per partition; None where it has committed nothing."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    out: dict[TP, int | None] = {(tp.topic, tp.partition): None for tp in wanted}
    if not wanted:
        return out
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id, wanted)], request_timeout=timeout)
    try:
        result = futures[group_id].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() in (KafkaError.GROUP_ID_NOT_FOUND, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return out
        raise
    for tp in result.topic_partitions or []:
        if tp.error is None and tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


@dataclass
class BoundedRead:
    """Iterates the messages of each partition's [start, end) span, then stops.

    `max_messages` / `max_bytes` bound what is read per partition; partitions stopped by
    them land in `cut`, those the timeout left unfinished in `unfinished`.
    """

    consumer: Consumer
    spans: dict[TP, tuple[int, int]]
    max_messages: int | None = None
    max_bytes: int | None = None
    timeout: float = 60.0
    cut: set[TP] = field(default_factory=set)
    unfinished: set[TP] = field(default_factory=set)
    counts: dict[TP, int] = field(default_factory=lambda: defaultdict(int))

    def __iter__(self) -> Iterator[Message]:
        todo = {tp: span for tp, span in self.spans.items() if span[0] < span[1]}
        if not todo:
            return
        assigned = [TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()]
        self.consumer.assign(assigned)
        sizes: dict[TP, int] = defaultdict(int)
        deadline = time.monotonic() + self.timeout

        def finish(tp: TP) -> None:
            todo.pop(tp, None)
            self.consumer.pause([TopicPartition(*tp)])

        try:
            while todo and time.monotonic() < deadline:
                for msg in self.consumer.consume(num_messages=500, timeout=0.5):
                    tp = (msg.topic(), msg.partition())
                    if tp not in todo:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            finish(tp)  # caught up with the partition's current end, past the captured one
                            continue
                        raise KafkaException(err)
                    end = todo[tp][1]
                    if msg.offset() >= end:
                        finish(tp)
                        continue
                    self.counts[tp] += 1
                    sizes[tp] += len(msg.value() or b"")
                    yield msg
                    if msg.offset() + 1 >= end:
                        finish(tp)
                    elif (self.max_messages is not None and self.counts[tp] >= self.max_messages) or (
                        self.max_bytes is not None and sizes[tp] >= self.max_bytes
                    ):
                        self.cut.add(tp)
                        finish(tp)
            self.unfinished.update(todo)
        finally:
            # librdkafka keeps a partition paused across unassign(): resume first, or the next
            # read of it on this consumer gets nothing and runs into its timeout
            self.consumer.resume(assigned)
            self.consumer.unassign()
