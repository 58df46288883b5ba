"""The consume-process-produce loop of the Kafka-to-Kafka stages.

Each batch: consume, decode, reassemble eras, compute finished eras with no
transaction open (eras can take minutes), then in one short Kafka transaction
produce the outputs and dead letters and commit the commit-safe offsets. A
failed transaction is aborted and the consumer rewinds to its committed offsets,
so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas.codec import MessageDecodeError, decode_era_chunk, encode_era_chunk
from streams import kafka, metrics
from streams.assembler import CompleteEra, EraAssembler
from streams.settings import Settings
from streams.topics import dlq

log = logging.getLogger(__name__)

StopFlag = Callable[[], bool]


@dataclass
class Output:
    topic: str
    key: str | bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class EraProcessor(Protocol):
    """Turns one whole era into output messages. Raising sends the era to the dead-letter topic."""

    def __call__(self, era: CompleteEra) -> list[Output]: ...


def error_headers(stage: str, error: BaseException | str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: what failed, where, and in which stage."""
    error_type = type(error).__name__ if isinstance(error, BaseException) else "Error"
    return [
        ("erastream.error", str(error)[:4000].encode()),
        ("erastream.error_type", error_type.encode()),
        ("erastream.stage", stage.encode()),
        ("erastream.source_topic", topic.encode()),
        ("erastream.source_partition", str(partition).encode()),
        ("erastream.source_offset", str(offset).encode()),
        ("erastream.failed_at", str(int(time.time() * 1000)).encode()),
    ]


def dead_letter(msg: Message, stage: str, error: BaseException | str) -> Output:
    """The message as it came, to `<topic>.dlq`, with the error in its headers."""
    headers = list(msg.headers() or []) + error_headers(stage, error, msg.topic(), msg.partition(), msg.offset())
    return Output(dlq(msg.topic()), msg.key(), msg.value() or b"", headers)


def worker_name(stage: str) -> str:
    return f"{stage}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TransactionalStageRunner:
    """Runs one EraProcessor as a member of the stage's consumer group."""

    def __init__(self, settings: Settings, stage: str, source_topic: str, processor: EraProcessor, group_id: str | None = None):
        self.settings = settings
        self.stage = stage
        self.source_topic = source_topic
        self.processor = processor
        self.group_id = group_id or f"erastream.{stage}"
        self.assembler = EraAssembler()
        self.name = worker_name(stage)
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()

    # ------------------------------------------------------------------ loop
    def run(self, should_stop: StopFlag) -> None:
        metrics.serve(self.settings.metrics_port)
        consumer = kafka.consumer(
            self.settings, self.group_id,
            **{"client.id": self.name, "statistics.interval.ms": 10_000,
               "stats_cb": lambda s: metrics.record_lag(self.stage, _json(s))},
        )
        producer = kafka.producer(self.settings, transactional_id=f"erastream-{self.name}")
        producer.init_transactions(60)
        self._consumer = consumer
        consumer.subscribe([self.source_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("%s consuming %s as group %s", self.name, self.source_topic, self.group_id)
        try:
            while not should_stop():
                messages = consumer.consume(num_messages=64, timeout=self.settings.consumer_poll_timeout_s)
                if not messages:
                    continue
                outputs = self._handle(messages)
                self._commit(producer, consumer, outputs)
        finally:
            consumer.close()
            producer.flush(10)
            log.info("%s stopped", self.name)

    def _handle(self, messages: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s consume error: %s", self.name, err)
                continue
            metrics.MESSAGES.labels(self.stage).inc()
            partition, offset = msg.partition(), msg.offset()
            try:
                chunk = decode_era_chunk(msg.value(), topic=msg.topic(), partition=partition, offset=offset)
            except MessageDecodeError as exc:
                log.error("%s: %s -> %s", self.stage, exc, dlq(msg.topic()))
                outputs.append(dead_letter(msg, self.stage, exc))
                metrics.DEAD_LETTERS.labels(self.stage).inc()
                self.assembler.note_consumed(partition, offset)
                continue
            era = self.assembler.add(chunk, partition, offset)
            if era is not None:
                outputs.extend(self._process(era))
        metrics.IN_FLIGHT.labels(self.stage).set(self.assembler.in_flight())
        return outputs

    def _process(self, era: CompleteEra) -> list[Output]:
        started = time.perf_counter()
        try:
            outputs = self.processor(era)
        except Exception as exc:  # a bad era must not stop the stage
            log.exception("%s failed on era %s; its chunks go to %s", self.stage, era.key, dlq(self.source_topic))
            metrics.DEAD_LETTERS.labels(self.stage).inc(len(era.chunks))
            return [
                Output(dlq(self.source_topic), era.key, encode_era_chunk(chunk),
                       error_headers(self.stage, exc, self.source_topic, era.partition, offset))
                for chunk, offset in zip(era.chunks, era.offsets)
            ]
        seconds = time.perf_counter() - started
        metrics.ERA_SECONDS.labels(self.stage).observe(seconds)
        metrics.ERAS.labels(self.stage).inc()
        log.info("%s: era %s (%d chunks) in %.2f s -> %d messages", self.stage, era.key, len(era.chunks), seconds, len(outputs))
        return outputs

    def _commit(self, producer, consumer: Consumer, outputs: list[Output]) -> None:
        offsets = []
        for partition in self.assembler.partitions():
            safe = self.assembler.safe_offset(partition)
            if safe is not None and partition in self._assigned:
                offsets.append(TopicPartition(self.source_topic, partition, safe))
        try:
            producer.begin_transaction()
            for out in outputs:
                _produce(producer, out)
            if offsets:
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 60)
            producer.commit_transaction(120)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise
            log.warning("%s: transaction failed (%s); aborting and rewinding", self.name, error)
            try:
                producer.abort_transaction(60)
            except KafkaException as abort_exc:
                log.warning("%s: abort failed: %s", self.name, abort_exc)
            self._rewind(consumer)

    def _rewind(self, consumer: Consumer) -> None:
        """Back to the committed offsets: the aborted batch is read and computed again."""
        self.assembler.clear()
        partitions = [TopicPartition(self.source_topic, p) for p in sorted(self._assigned)]
        if not partitions:
            return
        for tp in consumer.committed(partitions, timeout=30):
            if tp.offset >= 0:
                consumer.seek(tp)
            else:
                consumer.seek(TopicPartition(tp.topic, tp.partition, 0))

    # ------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        log.info("%s assigned %s", self.name, sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [tp.partition for tp in partitions]
        self._assigned.difference_update(gone)
        self.assembler.drop(gone)
        log.info("%s revoked %s", self.name, sorted(gone))


def _produce(producer, out: Output) -> None:
    while True:
        try:
            producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers or None)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.5)


def _json(text: str) -> dict:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return {}
