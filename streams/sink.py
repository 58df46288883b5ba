"""The select-sink: feature batches into ClickHouse; unsupervised selection beside it (streams/selector.py).

The sink works in batches: everything one consume() round returns (up to MAX_BATCH
messages or BATCH_WINDOW_S of polling) is decoded once and stored with ONE insert per
table, whose deduplication token is derived from the messages' content digests and the
(topic, partition, offset range) the batch covers, so a retried batch is stored once.
The eras table gets one insert per batch and nothing is read back (it folds rows, see
infra/clickhouse/003_eras.sql). Only after ClickHouse accepted the batch do its era
notices and dead letters go to Kafka, in one transaction with the batch's offsets
(streams/commit.py); after an aborted transaction a new consumer reads again from the
committed offsets.

While ClickHouse is unavailable the sink pauses its partitions, keeps polling so it stays
in its group (anything still returned is held for the next batch, never dropped), and
retries the same batch with backoff. A batch insert that fails for its rows (a type
mismatch) is stored message by message so only the bad message is dead-lettered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.codec import FeatureBatch, decode_feature_batch
from schemas.payload import frame_from_ipc
from stages.clickhouse import (
    ClickHouseError, ClickHouseUnavailable, ClickHouseWriter, EraRecord, apply_schema, classify_error, connect,
)
from streams import failpoints, kafka, metrics
from streams.commit import Output, TransactionAborted, transactions_for
from streams.fetch_watch import FetchWatch, positions_of
from streams.runner import StopFlag, dead_letter, worker_name
from streams.selector import SelectionWorker, run_selection, shared_lock
from streams.settings import Settings
from streams.slots import transactional_id
from streams.topics import ERAS_DONE, STAGE_INPUTS, stage_group

log = logging.getLogger(__name__)
STAGE = "sink"
MAX_BATCH = 100_000  # messages per batch
BATCH_WINDOW_S = 1.0  # seconds of polling per batch
REPLAY_WAIT_S = 60.0  # how long a journaled batch may take to be read again


def content_token(batch: FeatureBatch) -> str:
    """Same era, source, chunk and payload -> same token, whatever the offset or compute time."""
    digest = hashlib.sha256(batch.payload).hexdigest()[:32]
    return f"{batch.run_id}|{batch.era_key}|{batch.source}|{batch.kind}|{batch.chunk_index}|{digest}"


def _version(batch: FeatureBatch) -> np.uint64:
    """Deterministic row version: the producing stage's computed_at in ms."""
    return np.uint64(int(batch.computed_at.timestamp() * 1000))


def feature_rows(batch: FeatureBatch, frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form (sensor, feature, value) from a batch, as era_features rows."""
    version = _version(batch)
    return pd.DataFrame(
        {
            "compartment_id": batch.compartment_id,
            "era_id": batch.era_id,
            "sensor": frame["sensor"].astype(str).to_numpy(),
            "feature": frame["feature"].astype(str).to_numpy(),
            "value": frame["value"].astype("float64").to_numpy(),
            "source": batch.source,
            "feature_set": batch.feature_set,
            "run_id": batch.run_id,
            "version": np.full(len(frame), version, dtype="uint64"),
            "computed_at": pd.Timestamp(batch.computed_at).tz_convert("UTC"),
        }
    )


def rolling_rows(batch: FeatureBatch, frame: pd.DataFrame) -> pd.DataFrame:
    version = _version(batch)
    out = frame[["sensor", "window", "timestamp", "mean", "std", "min", "max"]].copy()
    out["sensor"] = out["sensor"].astype(str)
    out["window"] = out["window"].astype(str)
    out.insert(0, "era_id", batch.era_id)
    out.insert(0, "compartment_id", batch.compartment_id)
    out["run_id"] = batch.run_id
    out["version"] = np.full(len(out), version, dtype="uint64")
    out["computed_at"] = pd.Timestamp(batch.computed_at).tz_convert("UTC")
    return out


@dataclass
class Decoded:
    """One message of a batch, decoded once: its rows and its content token."""

    msg: Message
    batch: FeatureBatch
    rows: pd.DataFrame
    token: str

    @property
    def table(self) -> str:
        return "rolling_features" if self.batch.kind == "series" else "era_features"


def decode(msg: Message, run_id: str | None) -> Decoded:
    """Raises on a message that cannot be read (MessageDecodeError, or a payload Arrow cannot read)."""
    batch = decode_feature_batch(msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
    frame = frame_from_ipc(batch.payload)
    if run_id:
        batch.run_id = run_id
    rows = rolling_rows(batch, frame) if batch.kind == "series" else feature_rows(batch, frame)
    return Decoded(msg, batch, rows, content_token(batch))


def batch_token(table: str, items: list[Decoded]) -> str:
    """Content digests plus the (topic, partition, offset range) covered: same batch -> same token."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for d in items:
        r = ranges.setdefault((d.msg.topic(), d.msg.partition()), [d.msg.offset(), d.msg.offset()])
        r[0], r[1] = min(r[0], d.msg.offset()), max(r[1], d.msg.offset())
    h = hashlib.sha256(table.encode())
    for (topic, part), (lo, hi) in sorted(ranges.items()):
        h.update(f"|{topic}[{part}]{lo}-{hi}".encode())
    for d in items:
        h.update(d.token.encode())
    return f"{table}|batch|{h.hexdigest()[:40]}"


def era_records(items: list[Decoded]) -> list[EraRecord]:
    """One record per (era, run, source) in the batch: its chunks' feature-row counts, done-time if last came."""
    records: dict[tuple[str, str, str, str], EraRecord] = {}
    for d in items:
        b = d.batch
        key = (b.compartment_id, b.era_id, b.run_id, b.source)
        at = pd.Timestamp(b.computed_at)
        rec = records.get(key)
        if rec is None:
            rec = records[key] = EraRecord(
                compartment_id=b.compartment_id, era_id=b.era_id, run_id=b.run_id, feature_set=b.feature_set,
                era_start=pd.Timestamp(b.era_start) if b.era_start else at,
                era_end=pd.Timestamp(b.era_end) if b.era_end else at, rows=b.era_rows, sensors=b.sensors,
                tsfresh_chunks={} if b.source == "tsfresh" else None, rolling_chunks={} if b.source != "tsfresh" else None,
            )
        chunks = rec.tsfresh_chunks if b.source == "tsfresh" else rec.rolling_chunks
        assert chunks is not None
        chunks[b.chunk_index] = chunks.get(b.chunk_index, 0) + (len(d.rows) if d.table == "era_features" else 0)
        rec.rows = max(rec.rows, b.era_rows)
        if b.last:
            if b.source == "tsfresh":
                rec.tsfresh_at = at
            else:
                rec.rolling_at = at
    return list(records.values())


@dataclass
class Prepared:
    """A batch ready to store: its decoded messages, and the dead letters of the undecodable ones."""

    messages: list[Message]
    decoded: list[Decoded] = field(default_factory=list)
    dead: list[Output] = field(default_factory=list)

    def offsets(self) -> list[TopicPartition]:
        out: dict[tuple[str, int], int] = {}
        for msg in self.messages:
            key = (msg.topic(), msg.partition())
            out[key] = max(out.get(key, 0), msg.offset() + 1)
        return [TopicPartition(t, p, o) for (t, p), o in sorted(out.items())]


def store_batch(writer: ClickHouseWriter, items: list[Decoded]) -> list[tuple[Decoded, ClickHouseError]]:
    """Store the messages the ledger does not have; returns those whose rows ClickHouse refused.

    One insert per table plus one eras insert, then the stored messages' content tokens go to
    the ledger (`stored_messages`): a message sent again later, by a replay of any size, is
    left out here. Raises ClickHouseUnavailable (retry the same batch: its inserts repeat their
    dedup tokens). A batch refused for its rows is stored message by message (each with its own
    content token) to single out the bad ones.
    """
    known = writer.stored({d.token: d.batch.run_id for d in items})
    fresh = []
    for d in items:  # a message sent twice within one batch is stored once too
        if d.token not in known:
            known.add(d.token)
            fresh.append(d)
    if not fresh:
        return []
    try:
        _insert_all(writer, fresh, batch_token)
        bad: list[tuple[Decoded, ClickHouseError]] = []
    except ClickHouseUnavailable:
        raise
    except ClickHouseError:
        bad = []
        for d in fresh:
            try:
                _insert_all(writer, [d], lambda table, one: f"{table}|{one[0].token}")
            except ClickHouseUnavailable:
                raise
            except ClickHouseError as exc:
                bad.append((d, exc))
    refused = {id(d) for d, _ in bad}
    stored = [d for d in fresh if id(d) not in refused]
    if stored:
        writer.write_stored({d.token: d.batch.run_id for d in stored}, batch_token("stored_messages", stored))
    return bad


def _insert_all(writer: ClickHouseWriter, items: list[Decoded], token) -> None:
    for table, write in (("era_features", writer.write_features), ("rolling_features", writer.write_rolling)):
        part = [d for d in items if d.table == table and len(d.rows)]
        if part:
            frame = part[0].rows if len(part) == 1 else pd.concat([d.rows for d in part], ignore_index=True)
            write(frame, token(table, part))
    writer.write_eras(era_records(items), token("eras", items))


TP = tuple[str, int]


class BatchJournal:
    """The offset ranges of the batch being stored, on disk until its offsets are committed.

    A batch's dedup tokens derive from exactly the messages it holds. A sink that dies (or whose
    Kafka commit aborts) after ClickHouse took a batch re-reads from the committed offsets, where
    more messages may have arrived by then: a batch cut anew would get new tokens and store the
    rows twice (FINAL would hide it, counts would not). So the ranges are written before the
    insert and the next batch after a restart or an aborted commit is that same batch again, whose inserts
    ClickHouse then drops as duplicates. One file per sink group on this host (the embedded
    ClickHouse allows one sink per data directory; with a server and sinks on several hosts, a
    partition that moves host after a crash can store such a batch twice until the merge).
    """

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[TP, tuple[int, int]]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {(t, int(p)): (int(a), int(b)) for t, p, a, b in raw}

    def write(self, spans: dict[TP, tuple[int, int]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump([[t, p, a, b] for (t, p), (a, b) in sorted(spans.items())], fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spans_of(messages: list[Message]) -> dict[TP, tuple[int, int]]:
    """(first offset, last offset + 1) per partition of a batch."""
    spans: dict[TP, tuple[int, int]] = {}
    for m in messages:
        tp = (m.topic(), m.partition())
        a, b = spans.get(tp, (m.offset(), m.offset() + 1))
        spans[tp] = (min(a, m.offset()), max(b, m.offset() + 1))
    return spans


@dataclass
class BatchReplay:
    """Re-forms a journaled batch from messages read again: the pure rule behind BatchJournal.

    A partition whose first message read again is not the journaled first one was committed
    already (or cannot be re-formed): it is left out. The batch is whole once every remaining
    partition's last journaled offset was seen.
    """

    spans: dict[TP, tuple[int, int]]
    batch: list[Message] = field(default_factory=list)
    rest: list[Message] = field(default_factory=list)
    _first: set[TP] = field(default_factory=set)
    _done: set[TP] = field(default_factory=set)

    def add(self, messages: list[Message]) -> None:
        for m in messages:
            tp = (m.topic(), m.partition())
            span = self.spans.get(tp)
            if span is not None and tp not in self._first:
                self._first.add(tp)
                if m.offset() != span[0]:
                    del self.spans[tp]
                    span = None
            if span is None or m.offset() >= span[1]:
                self.rest.append(m)
                continue
            self.batch.append(m)
            if m.offset() >= span[1] - 1:
                self._done.add(tp)

    def whole(self) -> bool:
        return set(self.spans) <= self._done


class SinkRunner:
    def __init__(self, settings: Settings, group_id: str | None = None, client: Any = None, run_id: str | None = None,
                 select: Callable[[str], dict | None] | None = None):
        self.settings = settings
        self.group_id = group_id or stage_group(STAGE)
        self.run_id = run_id  # set: rows are stored under this run id (replays)
        self.name = worker_name(STAGE)
        self._client = client
        self._select = select  # run id -> selection notice body; default: run_selection on this sink's ClickHouse
        self._paused: list[TopicPartition] = []
        self._held: list[Message] = []  # polled while backing off: the next batch starts with them
        self.journal = BatchJournal(settings.data_dir / "sink" / f"{self.group_id}.journal.json")
        self._replay = self.journal.load()  # a batch a previous attempt may have inserted

    def run(self, should_stop: StopFlag) -> None:
        metrics.serve(self.settings.metrics_port)
        self._should_stop = should_stop
        client = self._open_clickhouse(should_stop)
        if client is None:
            return  # stopped while waiting for ClickHouse
        self.writer = ClickHouseWriter(client)
        self._lock = shared_lock(embedded=not self.settings.clickhouse_url)
        txn_id = transactional_id(self.settings.data_dir / "slots", self.group_id)
        self.transactions = transactions_for(self.settings, txn_id, self.name, should_stop)
        self.selection = self._selection_worker(should_stop)
        consumer = self._subscribe()
        watch = FetchWatch(self.settings, self.name)
        self.selection.start()
        log.info("%s consuming %s", self.name, ", ".join(STAGE_INPUTS[STAGE]))
        try:
            while not should_stop():
                messages = self._poll_batch(consumer)
                if messages:
                    watch.active()
                    if not self._store(consumer, messages, should_stop):
                        consumer = self._replace(consumer)  # aborted: the journaled batch is read again
                elif watch.quiet(lambda: positions_of(consumer, self.settings, self.group_id), consumer, self.group_id):
                    consumer = self._replace(consumer)  # stalled (streams/fetch_watch.py)
        finally:
            consumer.close()
            self.transactions.close()
            self.selection.stop()
            log.info("%s stopped", self.name)

    def _subscribe(self) -> Consumer:
        consumer = kafka.consumer(self.settings, self.group_id, **{"client.id": self.name})
        consumer.subscribe(list(STAGE_INPUTS[STAGE]), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        return consumer

    def _replace(self, consumer: Consumer) -> Consumer:
        """Close the consumer and subscribe a new one, which starts from the committed offsets
        (the old one's positions cannot be trusted: see TransactionalStageRunner._replace)."""
        self._paused = []
        consumer.close()
        return self._subscribe()

    def _open_clickhouse(self, should_stop: StopFlag) -> Any | None:
        """Connect and apply the schema, waiting (with backoff) while ClickHouse is unavailable.

        Before subscribing: a sink that cannot store holds no partitions meanwhile. Errors that
        waiting cannot fix (the embedded directory locked by another sink) end the sink.
        """
        backoff = 0.5
        while not should_stop():
            try:
                client = self._client or connect(self.settings.clickhouse_url, self.settings.clickhouse_path)
                apply_schema(client)
                return client
            except Exception as exc:
                problem = classify_error(exc)
                if not isinstance(problem, ClickHouseUnavailable):
                    raise problem from None
                log.warning("%s: ClickHouse unavailable at start (%s); retry in %.1f s", self.name, problem, backoff)
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not should_stop():
                    time.sleep(0.1)
                backoff = min(backoff * 2, 30.0)
        return None

    def _selection_worker(self, should_stop: StopFlag) -> SelectionWorker:
        """Selection in its own thread: with a server it gets its own client, with chDB it shares ours (locked)."""
        select = self._select
        if select is None:
            if self.settings.clickhouse_url:
                writer = ClickHouseWriter(connect(self.settings.clickhouse_url, self.settings.clickhouse_path))
            else:
                writer = self.writer
            settings, lock = self.settings, self._lock
            select = lambda run: run_selection(writer, lock, run, settings)  # noqa: E731
        txn_id = transactional_id(self.settings.data_dir / "slots", f"{self.group_id}.selection")
        return SelectionWorker(self.name, transactions_for(self.settings, txn_id, f"{self.name}-selection", should_stop),
                               _notice, select)

    def _poll_batch(self, consumer: Consumer) -> list[Message]:
        """Held messages, then whatever arrives within BATCH_WINDOW_S, up to MAX_BATCH messages."""
        messages, self._held = self._held, []
        if self._replay:
            return self._replay_batch(consumer, messages)
        deadline = time.monotonic() + BATCH_WINDOW_S
        timeout = self.settings.consumer_poll_timeout_s
        while len(messages) < MAX_BATCH:
            got = [m for m in consumer.consume(num_messages=min(10_000, MAX_BATCH - len(messages)), timeout=timeout)
                   if not _skip(m)]
            messages += got
            timeout = deadline - time.monotonic()
            if not got or timeout <= 0:
                break
        return messages

    def _replay_batch(self, consumer: Consumer, messages: list[Message]) -> list[Message]:
        """The journaled batch again, exactly (see BatchJournal); other messages wait for the next."""
        replay = BatchReplay(dict(self._replay))
        replay.add(messages)
        deadline = time.monotonic() + REPLAY_WAIT_S
        while not replay.whole() and time.monotonic() < deadline and not self._should_stop():
            replay.add([m for m in consumer.consume(num_messages=10_000, timeout=0.5) if not _skip(m)])
        if not replay.whole():
            log.warning("%s: the journaled batch %s could not be read again whole in %.0f s (partitions moved?); "
                        "storing what came", self.name, replay.spans, REPLAY_WAIT_S)
        self._replay = {}
        self._held = replay.rest + self._held
        log.info("%s: re-storing the batch of a previous attempt (%d messages)", self.name, len(replay.batch))
        return replay.batch

    # --------------------------------------------------------------- storing
    def _prepare(self, messages: list[Message]) -> Prepared:
        prepared = Prepared(messages)
        for msg in messages:
            metrics.MESSAGES.labels(STAGE).inc()
            try:
                prepared.decoded.append(decode(msg, self.run_id))
            except Exception as exc:  # MessageDecodeError, or a payload Arrow cannot read
                log.error("%s: %s -> dead letter", STAGE, exc)
                prepared.dead.append(dead_letter(msg, STAGE, exc))
        return prepared

    def _store(self, consumer: Consumer, messages: list[Message], should_stop: StopFlag) -> bool:
        """Insert the batch, then commit its notices, dead letters and offsets in one transaction;
        False when that transaction was aborted (the caller replaces its consumer)."""
        # partition order, not arrival order: a batch read again (BatchJournal) must give the same tokens
        messages = sorted(messages, key=lambda m: (m.topic(), m.partition(), m.offset()))
        prepared = self._prepare(messages)
        self.journal.write(spans_of(messages))
        backoff = 0.5
        while True:
            try:
                with self._lock:
                    bad = store_batch(self.writer, prepared.decoded)
                break
            except ClickHouseUnavailable as exc:
                if should_stop():
                    raise
                log.warning("%s: ClickHouse unavailable (%s); pausing, retry in %.1f s", self.name, exc, backoff)
                self._pause(consumer)
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline:
                    msg = consumer.poll(0.2)  # stay in the group; paused partitions return nothing
                    if msg is not None and not _skip(msg):
                        self._held.append(msg)  # a partition assigned meanwhile: keep it for the next batch
                backoff = min(backoff * 2, 30.0)
        self._resume(consumer)
        failpoints.hit("sink.after_insert")  # tests: die between the ClickHouse insert and the offset commit
        refused = {id(d.msg) for d, _ in bad}
        dead = list(prepared.dead)
        for d, exc in bad:
            log.error("%s: cannot store %s[%d]@%d: %s -> dead letter", STAGE, d.msg.topic(), d.msg.partition(), d.msg.offset(), exc)
            dead.append(dead_letter(d.msg, STAGE, exc))
        notices = [_era_notice(d.batch) for d in prepared.decoded if d.batch.last and id(d.msg) not in refused]
        try:
            self.transactions.commit(dead + notices, prepared.offsets(), consumer)
        except TransactionAborted as exc:
            log.warning("%s; a new consumer reads again from the committed offsets", exc)
            self._held = []
            self._replay = self.journal.load()  # the rows are in ClickHouse: the next batch is this one again
            return False
        self.journal.clear()
        metrics.DEAD_LETTERS.labels(STAGE).inc(len(dead))
        metrics.ERAS.labels(STAGE).inc(len(notices))
        self.selection.mark({d.batch.run_id for d in prepared.decoded if d.batch.last})
        return True

    # ------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s assigned %s", self.name, _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s revoked %s", self.name, _names(partitions))

    # ---------------------------------------------------------------- pausing
    def _pause(self, consumer: Consumer) -> None:
        if not self._paused:
            self._paused = consumer.assignment()
            consumer.pause(self._paused)

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            consumer.resume(self._paused)
            self._paused = []


def _era_notice(batch: FeatureBatch) -> Output:
    """eras.done: this source of this era is stored (its feature count is in era_status())."""
    return _notice(batch.era_key, {"kind": "era", "era_key": batch.era_key, "run_id": batch.run_id, "source": batch.source,
                                   "stage_seconds": batch.stage_seconds})


def _notice(key: str, body: dict) -> Output:
    return Output(ERAS_DONE, key, json.dumps(body).encode())


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _skip(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return False
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("sink consume error: %s", err)
    return True
