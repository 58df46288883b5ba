"""Dead letters: list what landed in the `.dlq` topics, and replay it to its source topic after a fix.

A dead letter is the failed message as it came (key, value, its own headers) plus the
`erastream.*` error headers of `streams.runner.error_headers`. Replaying sends key,
value and the non-erastream headers back to the topic named by
`erastream.source_topic`, with `erastream.replayed_from` = "<dlq topic>:<partition>:<offset>".

Each dead letter is replayed once: the consumer group `erastream.dlq-replay` tracks
what was replayed, and every batch is produced and its offsets committed in one Kafka
transaction (`send_offsets_to_transaction`), so a replay that dies half-way neither
loses nor repeats a message. A replay reads up to the high watermarks captured when
it starts; dead letters that arrive meanwhile wait for the next replay.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams import kafka
from streams.commit import BrokerUnavailable, Output, TransactionAborted, Transactions, transactions_for
from streams.settings import Settings
from streams.topic_reader import TP, BoundedRead, committed_offsets, partitions, reader, watermarks
from streams.topics import PIPELINE_TOPICS, dlq

log = logging.getLogger(__name__)

REPLAY_GROUP = "erastream.dlq-replay"
REPLAYED_FROM = "erastream.replayed_from"
HEADER_PREFIX = "erastream."
DLQ_SUFFIX = ".dlq"
DLQ_TOPICS: tuple[str, ...] = tuple(dlq(t) for t in PIPELINE_TOPICS)


class ReplayError(RuntimeError):
    """A replay could not go on (fenced by a newer replay, broker refused transactions)."""


def dlq_topics(topics: Iterable[str] | None = None) -> list[str]:
    """The dead-letter topics to look at: all four by default; `eras.raw` and `eras.raw.dlq` both mean the latter."""
    if not topics:
        return list(DLQ_TOPICS)
    out: list[str] = []
    for topic in topics:
        name = topic if topic.endswith(DLQ_SUFFIX) else dlq(topic)
        if name not in out:
            out.append(name)
    return out


@dataclass
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_ms: int | None = None
    replayed: bool = False  # the replay group's committed offset is past it

    @classmethod
    def from_message(cls, msg: Message, replayed: bool = False) -> "DeadLetter":
        ts_type, ts = msg.timestamp()
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value() or b"",
                   [(k, v or b"") for k, v in (msg.headers() or [])], ts if ts_type else None, replayed)

    def header(self, name: str) -> str | None:
        """The last value of a header, as text."""
        value = None
        for k, v in self.headers:
            if k == name:
                value = v
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def error(self) -> str:
        return self.header("erastream.error") or ""

    @property
    def error_type(self) -> str:
        return self.header("erastream.error_type") or ""

    @property
    def stage(self) -> str:
        return self.header("erastream.stage") or ""

    @property
    def source_topic(self) -> str:
        """From the header; a dead letter without one goes back to the topic its dlq twins."""
        return self.header("erastream.source_topic") or self.topic.removesuffix(DLQ_SUFFIX)

    @property
    def source_partition(self) -> int | None:
        return _int(self.header("erastream.source_partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.header("erastream.source_offset"))

    @property
    def failed_at(self) -> datetime | None:
        ms = _int(self.header("erastream.failed_at"))
        return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    @property
    def key_text(self) -> str:
        if self.key is None:
            return ""
        try:
            return self.key.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + self.key.hex()

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The message's own headers: everything but erastream's."""
        return [(k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)]

    def replay_output(self) -> Output:
        """What a replay sends: key, value and own headers to the source topic, marked as replayed."""
        origin = f"{self.topic}:{self.partition}:{self.offset}".encode()
        return Output(self.source_topic, self.key, self.value, [*self.original_headers(), (REPLAYED_FROM, origin)])

    def to_dict(self) -> dict:
        failed = self.failed_at
        return {
            "dlq_topic": self.topic, "partition": self.partition, "offset": self.offset, "key": self.key_text,
            "source_topic": self.source_topic, "source_partition": self.source_partition,
            "source_offset": self.source_offset, "stage": self.stage, "error_type": self.error_type,
            "error": self.error, "failed_at": failed.isoformat() if failed else None, "value_bytes": len(self.value),
            "replayed": self.replayed,
        }


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------ list
def list_dead_letters(
    settings: Settings,
    topics: Iterable[str] | None = None,
    limit: int | None = None,
    replay_group: str = REPLAY_GROUP,
    timeout: float = 60.0,
) -> list[DeadLetter]:
    """Every dead letter in the topics (oldest first, per topic and partition), at most `limit` of them.

    `replayed` says whether `replay_group` has already replayed it.
    """
    consumer = reader(settings)
    try:
        spans, committed = _spans(settings, consumer, dlq_topics(topics), replay_group)
        read = BoundedRead(consumer, {tp: spans[tp] for tp in sorted(spans)}, timeout=timeout)
        letters: list[DeadLetter] = []
        with closing(iter(read)) as messages:
            for msg in messages:
                tp = (msg.topic(), msg.partition())
                done = committed.get(tp)
                letters.append(DeadLetter.from_message(msg, replayed=done is not None and msg.offset() < done))
                if limit is not None and len(letters) >= limit:
                    break
        if read.unfinished:
            log.warning("dead letters: timed out reading %s", sorted(read.unfinished))
        return sorted(letters, key=lambda d: (d.topic, d.partition, d.offset))
    finally:
        consumer.close()


def _spans(settings: Settings, consumer, topics: list[str], group_id: str) -> tuple[dict[TP, tuple[int, int]], dict[TP, int | None]]:
    """(low, high) per partition of the existing topics, and the group's committed offsets."""
    tps = [(t, p) for t, parts in partitions(consumer, topics).items() for p in parts]
    marks = watermarks(consumer, tps)
    committed = committed_offsets(kafka.admin_client(settings), group_id, tps)
    return {tp: marks[tp] for tp in tps}, committed


# ---------------------------------------------------------------- replay
@dataclass
class ReplayReport:
    dry_run: bool
    letters: list[DeadLetter] = field(default_factory=list)  # replayed (or, dry run, to be replayed)
    complete: bool = True  # False: the timeout came before every partition reached its captured end
    transactions: int = 0

    @property
    def by_target(self) -> dict[str, int]:
        return dict(sorted(Counter(d.source_topic for d in self.letters).items()))

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "complete": self.complete, "replayed": len(self.letters),
                "by_target": self.by_target, "letters": [d.to_dict() for d in self.letters]}


def replay_dead_letters(
    settings: Settings,
    topics: Iterable[str] | None = None,
    dry_run: bool = False,
    group_id: str = REPLAY_GROUP,
    timeout: float = 120.0,
    batch_size: int = 200,
    on_batch: Callable[[list[DeadLetter]], None] | None = None,
) -> ReplayReport:
    """Send every dead letter not yet replayed by `group_id` back to its source topic, once.

    Reads from the group's committed offsets up to the high watermarks captured at the
    start. Each batch is one transaction: the replayed messages and the group's new
    offsets commit together or not at all. `dry_run` reads the same messages and sends
    nothing (the group is neither joined nor moved).
    """
    report = ReplayReport(dry_run=dry_run)
    probe = reader(settings)
    try:
        spans, committed = _spans(settings, probe, dlq_topics(topics), group_id)
        pending = {tp: (max(committed[tp] if committed[tp] is not None else low, low), high)
                   for tp, (low, high) in spans.items()}
        pending = {tp: span for tp, span in pending.items() if span[0] < span[1]}
        if not pending:
            return report
        if dry_run:
            read = BoundedRead(probe, pending, timeout=timeout)
            report.letters = [DeadLetter.from_message(m) for m in read]
            report.complete = not read.unfinished
            return report
    finally:
        probe.close()
    ends = {tp: high for tp, (_, high) in spans.items()}
    _Replayer(settings, group_id, ends, report, batch_size, on_batch).run(sorted({t for t, _ in pending}), timeout)
    return report


class _Replayer:
    """The transactional consume-produce loop of a replay, as a member of the replay group."""

    def __init__(self, settings: Settings, group_id: str, ends: dict[TP, int], report: ReplayReport,
                 batch_size: int, on_batch: Callable[[list[DeadLetter]], None] | None):
        self.settings = settings
        self.group_id = group_id
        self.ends = ends
        self.report = report
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.assigned: set[TP] = set()
        self.done: set[TP] = set()

    def run(self, topics: list[str], timeout: float) -> None:
        name = f"dlq-replay-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

        def subscribed() -> Consumer:
            c = kafka.consumer(self.settings, self.group_id, **{"client.id": name, "enable.partition.eof": True})
            c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
            return c

        # one transactional.id per replay group: a replay fences any earlier one and aborts the
        # transaction a crashed one left open, so read_committed readers never wait for it
        deadline = time.monotonic() + timeout
        transactions = transactions_for(self.settings, f"erastream-{self.group_id}", "dlq replay",
                                        should_stop=lambda: time.monotonic() > deadline, failpoint="dlq-replay")
        try:
            transactions.producer
        except BrokerUnavailable as exc:
            raise ReplayError(f"dlq replay cannot start its transactions: {exc}") from exc
        consumer = subscribed()
        try:
            while time.monotonic() < deadline:
                if self.assigned and self.assigned <= self.done:
                    return
                messages = consumer.consume(num_messages=self.batch_size, timeout=0.5)
                letters, offsets = self._take(messages)
                if offsets and not self._commit(transactions, consumer, letters, offsets):
                    consumer.close()  # a new consumer reads again from the committed offsets (see runner._replace)
                    consumer = subscribed()
            self.report.complete = False
            log.warning("dlq replay: timed out after %.0f s; partitions left: %s", timeout, sorted(self.assigned - self.done))
        finally:
            consumer.close()
            transactions.close()

    def _take(self, messages: list[Message]) -> tuple[list[DeadLetter], dict[TP, int]]:
        letters: list[DeadLetter] = []
        offsets: dict[TP, int] = {}
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            if tp not in self.assigned or tp in self.done:
                continue  # revoked meanwhile, or already at its captured end
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.done.add(tp)
                else:
                    log.warning("dlq replay: consume error: %s", err)
                continue
            end = self.ends.get(tp, 0)
            if msg.offset() >= end:
                self.done.add(tp)  # arrived after the replay started: left for the next one
                continue
            letters.append(DeadLetter.from_message(msg))
            offsets[tp] = msg.offset() + 1
            if msg.offset() + 1 >= end:
                self.done.add(tp)
        return letters, offsets

    def _commit(self, transactions: Transactions, consumer, letters: list[DeadLetter], offsets: dict[TP, int]) -> bool:
        """One batch sent back with its offsets; False when the transaction was aborted."""
        try:
            transactions.commit([letter.replay_output() for letter in letters],
                                [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], consumer)
        except TransactionAborted as exc:
            log.warning("dlq replay: %s; rereading from the committed offsets", exc)
            return False
        self.report.letters.extend(letters)
        self.report.transactions += 1
        if self.on_batch is not None:
            self.on_batch(letters)
        log.info("dlq replay: %d message(s) sent back", len(letters))
        return True

    def _on_assign(self, consumer, tps: list[TopicPartition]) -> None:
        for tp in tps:
            key = (tp.topic, tp.partition)
            self.assigned.add(key)
            if self.ends.get(key, 0) <= 0:
                self.done.add(key)

    def _on_revoke(self, consumer, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.assigned.discard((tp.topic, tp.partition))
            self.done.discard((tp.topic, tp.partition))


# ------------------------------------------------------------- rendering
COLUMNS = ("dlq_topic", "partition", "offset", "key", "source_topic", "source_partition", "source_offset",
           "stage", "error_type", "error", "replayed")


def to_tsv(letters: list[DeadLetter]) -> str:
    """Tab-separated, one dead letter a line, header first; tabs and newlines in values become spaces."""
    lines = ["\t".join(COLUMNS)]
    for d in letters:
        row = d.to_dict()
        lines.append("\t".join(_cell(row[c]) for c in COLUMNS))
    return "\n".join(lines)


def to_json(letters: list[DeadLetter]) -> str:
    return json.dumps([d.to_dict() for d in letters], indent=2)


def rich_table(letters: list[DeadLetter], error_width: int = 120):
    from rich.table import Table

    table = Table(title=f"{len(letters)} dead letter(s)")
    for col, justify in (("dlq topic", "left"), ("p", "right"), ("offset", "right"), ("key", "left"),
                         ("source", "left"), ("stage", "left"), ("error", "left"), ("replayed", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for d in letters:
        source = f"{d.source_topic}[{_cell(d.source_partition)}]@{_cell(d.source_offset)}"
        error = f"{d.error_type}: {d.error}" if d.error_type else d.error
        if len(error) > error_width:
            error = error[: error_width - 1] + "…"
        table.add_row(d.topic, str(d.partition), str(d.offset), d.key_text, source, d.stage, error, "yes" if d.replayed else "")
    return table


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())
