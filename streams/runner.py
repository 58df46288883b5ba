"""The consume-process-produce loop of the Kafka-to-Kafka stages.

Each batch: consume, decode, reassemble eras, compute finished eras with no
transaction open (eras can take minutes), then in one short Kafka transaction
produce the outputs and dead letters and commit the commit-safe offsets. A
failed transaction is aborted and a new consumer reads again from the committed
offsets, so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Callable, Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.codec import MessageDecodeError, decode_era_chunk, encode_era_chunk
from streams import failpoints, kafka, metrics
from streams.assembler import CompleteEra, EraAssembler, StalledEra
from streams.attempts import AttemptLedger
from streams.commit import Output, TransactionAborted, in_daemon_thread, transactions_for
from streams.fetch_watch import FetchWatch, positions_of
from streams.slots import transactional_id
from streams.settings import Settings
from streams.topics import dlq, stage_group

log = logging.getLogger(__name__)

StopFlag = Callable[[], bool]

#: Eras abandoned at their timeout by earlier images of this process (carried through the exec
#: that replaces it), so erastream_eras_timed_out_total does not start again at 0.
TIMED_OUT_ENV = "ERASTREAM_ERAS_TIMED_OUT"


class EraStalled(RuntimeError):
    """An era received no chunk for ERA_STALL_TIMEOUT_S and cannot complete (the dead letters' error type)."""


class EraCrashedWorker(RuntimeError):
    """An era whose compute ended its worker ERA_MAX_ATTEMPTS times (the dead letters' error type)."""


class EraComputeTimedOut(RuntimeError):
    """An era whose compute passed ERA_COMPUTE_TIMEOUT_S (the dead letters' error type)."""


class ComputeAbandoned(RuntimeError):
    """Raised by run() after an era's compute was abandoned at its timeout and the era's dead
    letters were committed. The compute thread cannot be stopped from outside, so the caller
    replaces this process (streams.workers.replace_process) instead of computing beside it."""


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
    return Output(dlq(msg.topic()), msg.key(), msg.value() or b"", headers, source_partition=msg.partition())


def worker_name(stage: str) -> str:
    return f"{stage}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TransactionalStageRunner:
    """Runs one EraProcessor as a member of the stage's consumer group."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        source_topic: str,
        processor: EraProcessor,
        group_id: str | None = None,
        run_id: str | None = None,
    ):
        self.settings = settings
        self.stage = stage
        self.source_topic = source_topic
        self.processor = processor
        self.group_id = group_id or stage_group(stage)
        self.run_id = run_id  # set: outputs are re-stamped with this run id (replays)
        self.assembler = EraAssembler()
        self.name = worker_name(stage)
        self._assigned: set[int] = set()
        self._held: list[Message] = []
        self._revoked_in_batch: set[int] = set()  # partitions revoked since this batch began
        self.attempts = AttemptLedger(settings.data_dir / "attempts", self.group_id)
        self._attempted: list[str] = []  # eras whose compute this batch started
        self._abandoned: str | None = None  # the attempt whose compute passed its timeout
        metrics.TIMED_OUT.labels(stage).inc(int(os.environ.get(TIMED_OUT_ENV, "0") or 0))

    # ------------------------------------------------------------------ loop
    def run(self, should_stop: StopFlag) -> None:
        metrics.serve(self.settings.metrics_port)
        self._should_stop = should_stop
        txn_id = transactional_id(self.settings.data_dir / "slots", self.group_id)
        self.transactions = transactions_for(self.settings, txn_id, self.name, should_stop, failpoint=self.stage)
        self.transactions.producer  # fences a dead predecessor with this id and aborts its open transaction
        consumer = self._subscribe()
        watch = FetchWatch(self.settings, self.name)
        log.info("%s consuming %s as group %s (transactional.id %s)", self.name, self.source_topic, self.group_id, txn_id)
        try:
            while not should_stop():
                messages, self._held = self._held, []
                self._revoked_in_batch = set()
                if not messages:
                    messages = consumer.consume(num_messages=64, timeout=self.settings.consumer_poll_timeout_s)
                if messages:
                    watch.active()
                elif watch.quiet(lambda: positions_of(consumer, self.settings, self.group_id), consumer, self.group_id):
                    consumer = self._replace(consumer)
                    continue
                outputs = self._handle(consumer, messages) if messages else []
                outputs += self._stalled()
                if (messages or outputs) and not self._commit(consumer, outputs):
                    consumer = self._replace(consumer)  # aborted: read again from the committed offsets
                if self._abandoned:
                    raise ComputeAbandoned(f"{self.name} abandoned the compute of {self._abandoned} at "
                                           f"ERA_COMPUTE_TIMEOUT_S={self.settings.era_compute_timeout_s:g}")
        finally:
            consumer.close()
            self.transactions.close()
            log.info("%s stopped", self.name)

    def _subscribe(self) -> Consumer:
        consumer = kafka.consumer(
            self.settings, self.group_id,
            **{"client.id": self.name, "statistics.interval.ms": 10_000,
               "stats_cb": lambda s: metrics.record_lag(self.stage, _json(s))},
        )
        consumer.subscribe([self.source_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        return consumer

    def _handle(self, consumer: Consumer, messages: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        for msg in messages:
            if self._abandoned:
                break  # the rest of the batch is read again by the process that replaces this one
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s consume error: %s", self.name, err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition not in self._assigned or partition in self._revoked_in_batch:
                continue  # revoked while this batch was in hand: its new owner reads it again
            metrics.MESSAGES.labels(self.stage).inc()
            try:
                chunk = decode_era_chunk(msg.value(), topic=msg.topic(), partition=partition, offset=offset)
            except MessageDecodeError as exc:
                log.error("%s: %s -> %s", self.stage, exc, dlq(msg.topic()))
                outputs.append(dead_letter(msg, self.stage, exc))
                metrics.DEAD_LETTERS.labels(self.stage).inc()
                self.assembler.note_consumed(partition, offset)
                continue
            if self.run_id:
                chunk.run_id = self.run_id
            era = self.assembler.add(chunk, partition, offset, now=time.monotonic())
            if era is None:
                continue
            attempt = self.attempts.era_id(era.key, era.partition, era.offsets[0])
            self._attempted.append(attempt)
            crashes = self.attempts.start(attempt)
            if crashes >= self.settings.era_max_attempts:
                reason = (f"era {era.key} was started {crashes} time(s) without finishing: each attempt ended its worker "
                          f"(killed, out of memory, crashed); ERA_MAX_ATTEMPTS={self.settings.era_max_attempts}")
                log.error("%s: %s; its chunks go to %s", self.name, reason, dlq(self.source_topic))
                metrics.POISON.labels(self.stage).inc()
                outputs.extend(self._era_dead_letters(era, EraCrashedWorker(reason)))
                continue
            outputs.extend(self._compute_paused(consumer, era, attempt))
        metrics.IN_FLIGHT.labels(self.stage).set(self.assembler.in_flight())
        return outputs

    def _stalled(self) -> list[Output]:
        """Dead letters for the chunks of eras that stopped receiving chunks; their offsets move on."""
        outputs: list[Output] = []
        for era in self.assembler.stalled(time.monotonic(), self.settings.era_stall_timeout_s):
            if era.partition not in self._assigned:
                continue
            log.error("%s: %s; its %d chunk(s) go to %s", self.name, era.reason, len(era.chunks), dlq(self.source_topic))
            metrics.STALLED.labels(self.stage).inc()
            outputs += self._era_dead_letters(era, EraStalled(era.reason))
        return outputs

    def _era_dead_letters(self, era: CompleteEra | StalledEra, error: BaseException) -> list[Output]:
        """Every chunk of an era, as it came, to the source topic's dead-letter twin."""
        metrics.DEAD_LETTERS.labels(self.stage).inc(len(era.chunks))
        return [
            Output(dlq(self.source_topic), era.key, encode_era_chunk(chunk),
                   error_headers(self.stage, error, self.source_topic, era.partition, offset), source_partition=era.partition)
            for chunk, offset in zip(era.chunks, era.offsets)
        ]

    def _compute_paused(self, consumer: Consumer, era: CompleteEra, attempt: str) -> list[Output]:
        """Compute in a thread while this one keeps polling with every partition paused.

        Polling keeps the worker in its group however long the era takes (no
        max.poll.interval.ms to tune) and serves rebalances; messages of partitions
        assigned meanwhile are held for the next batch. An era whose partition was
        revoked meanwhile is dropped: its new owner computes it again. An era still
        computing after ERA_COMPUTE_TIMEOUT_S is abandoned (see :meth:`_abandon`).
        """
        future = in_daemon_thread(lambda: self._process(era), f"{self.stage}-compute-{era.key}")
        timeout = self.settings.era_compute_timeout_s
        deadline = time.monotonic() + timeout if timeout else None
        paused = consumer.assignment()
        consumer.pause(paused)
        try:
            while True:
                try:
                    return_value = future.result(timeout=0.2)
                    break
                except FuturesTimeout:
                    if deadline is not None and time.monotonic() > deadline:
                        return_value = self._abandon(era, attempt, timeout)
                        break
                    msg = consumer.poll(0.3)
                    if msg is not None:
                        self._held.append(msg)
        finally:
            consumer.resume(consumer.assignment())
        if era.partition not in self._assigned or era.partition in self._revoked_in_batch:
            log.info("%s: partition %d was revoked while computing era %s; dropped", self.name, era.partition, era.key)
            return []
        for out in return_value:
            out.source_partition = era.partition
        return return_value

    def _abandon(self, era: CompleteEra, attempt: str, timeout: float) -> list[Output]:
        """The era's dead letters, once its compute passed the timeout.

        The worker processes of this process's pools are killed (a frozen or runaway pool
        worker is the usual hang); the compute thread itself cannot be stopped, so run()
        commits this batch up to the era and raises ComputeAbandoned for the process to be
        replaced. The rest of the batch is left to that new process.
        """
        from stages.worker_pool import kill_worker_processes

        killed = kill_worker_processes()
        reason = (f"era {era.key} was still computing after ERA_COMPUTE_TIMEOUT_S={timeout:g} s; abandoned"
                  + (f" ({killed} pool worker process(es) killed)" if killed else ""))
        log.error("%s: %s; its chunks go to %s and this worker process is replaced", self.name, reason,
                  dlq(self.source_topic))
        metrics.TIMED_OUT.labels(self.stage).inc()
        os.environ[TIMED_OUT_ENV] = str(int(os.environ.get(TIMED_OUT_ENV, "0") or 0) + 1)
        self._abandoned = attempt
        return self._era_dead_letters(era, EraComputeTimedOut(reason))

    def _process(self, era: CompleteEra) -> list[Output]:
        started = time.perf_counter()
        try:
            failpoints.hit(f"{self.stage}.in_era")
            outputs = self.processor(era)
        except Exception as exc:  # a bad era must not stop the stage
            log.exception("%s failed on era %s; its chunks go to %s", self.stage, era.key, dlq(self.source_topic))
            return self._era_dead_letters(era, exc)
        seconds = time.perf_counter() - started
        metrics.ERA_SECONDS.labels(self.stage).observe(seconds)
        metrics.ERAS.labels(self.stage).inc()
        log.info("%s: era %s (%d chunks) in %.2f s -> %d messages", self.stage, era.key, len(era.chunks), seconds, len(outputs))
        return outputs

    def _commit(self, consumer: Consumer, outputs: list[Output]) -> bool:
        """Outputs and commit-safe offsets in one transaction; False when it was aborted.

        A partition revoked while the batch was in hand (even if assigned again since) has
        neither its outputs nor its offsets in the commit: its owner reads it again from the
        committed offset and computes those eras again.
        """
        def ours(partition: int | None) -> bool:
            return partition is None or (partition in self._assigned and partition not in self._revoked_in_batch)

        offsets = []
        for partition in self.assembler.partitions():
            safe = self.assembler.safe_offset(partition)
            if safe is not None and ours(partition):
                offsets.append(TopicPartition(self.source_topic, partition, safe))
        kept = [o for o in outputs if ours(o.source_partition)]
        if len(kept) < len(outputs):
            log.info("%s: %d output(s) of revoked partitions left out of the commit", self.name, len(outputs) - len(kept))
        committed = False
        try:
            self.transactions.commit(kept, offsets, consumer)
            committed = True
        except TransactionAborted as exc:
            log.warning("%s; a new consumer reads again from the committed offsets", exc)
        finally:  # the attempts ended without killing this worker; an abandoned one counts unless committed
            self.attempts.forget([a for a in self._attempted if committed or a != self._abandoned])
            self._attempted = []
        return committed

    def _replace(self, consumer: Consumer) -> Consumer:
        """Close the consumer and subscribe a new one: it starts from the group's committed offsets.

        After an aborted batch (and for a consumer that stopped fetching, streams/fetch_watch.py).
        Seeking the old consumer back is not enough: one whose partitions were lost in the abort's
        cause (a broker freeze) and assigned back resumed at its in-memory positions, past the
        aborted records, with nothing committed for them (see docs/architecture.md).
        """
        self.assembler.clear()
        self._held.clear()
        consumer.close()  # leaves the group: the partitions come back from their committed offsets
        return self._subscribe()

    # ------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        self.assembler.drop([tp.partition for tp in partitions])  # start clean from the committed offset
        log.info("%s assigned %s", self.name, sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [tp.partition for tp in partitions]
        self._assigned.difference_update(gone)
        self._revoked_in_batch.update(gone)
        self._held = [m for m in self._held if m.partition() not in gone]
        self.assembler.drop(gone)
        log.info("%s revoked %s", self.name, sorted(gone))


def produce(producer, out: Output) -> None:
    """Produce one Output, waiting for room when the local queue is full."""
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
