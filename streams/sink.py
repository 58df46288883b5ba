"""The select-sink: feature batches into ClickHouse, then unsupervised selection.

Offsets are committed only after ClickHouse accepted the rows. Each message is one
insert whose deduplication token is derived from its content, so a message read
twice (after a crash between insert and commit, or an era recomputed upstream with
the same values) is stored once. While ClickHouse is unreachable the sink pauses
its partitions, keeps polling so it stays in its group, and retries with backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
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
from streams.runner import StopFlag, dead_letter, worker_name, produce
from streams.settings import Settings
from streams.topics import ERAS_DONE, STAGE_INPUTS, stage_group

log = logging.getLogger(__name__)
STAGE = "sink"


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
class SelectionPolicy:
    """Re-run selection when new eras arrived and the sink is idle, at most every `min_interval_s`."""

    min_interval_s: float = 2.0
    dirty_runs: set[str] = field(default_factory=set)
    last_run: float = 0.0

    def due(self, idle: bool) -> bool:
        return bool(self.dirty_runs) and idle and time.monotonic() - self.last_run >= self.min_interval_s


class SinkRunner:
    def __init__(self, settings: Settings, group_id: str | None = None, client: Any = None, run_id: str | None = None):
        self.settings = settings
        self.group_id = group_id or stage_group(STAGE)
        self.run_id = run_id  # set: rows are stored under this run id (replays)
        self.name = worker_name(STAGE)
        self._client = client
        self.selection = SelectionPolicy()
        self._paused: list[TopicPartition] = []

    def run(self, should_stop: StopFlag) -> None:
        metrics.serve(self.settings.metrics_port)
        client = self._client or connect(self.settings.clickhouse_url, self.settings.clickhouse_path)
        apply_schema(client)
        self.writer = ClickHouseWriter(client)
        consumer = kafka.consumer(self.settings, self.group_id, **{"client.id": self.name})
        self.producer = kafka.producer(self.settings)
        consumer.subscribe(list(STAGE_INPUTS[STAGE]))
        log.info("%s consuming %s", self.name, ", ".join(STAGE_INPUTS[STAGE]))
        try:
            while not should_stop():
                messages = consumer.consume(num_messages=200, timeout=self.settings.consumer_poll_timeout_s)
                messages = [m for m in messages if not _skip(m)]
                if messages:
                    self._store(consumer, messages, should_stop)
                elif self.selection.due(idle=True):
                    self._select()
        finally:
            consumer.close()
            self.producer.flush(10)
            log.info("%s stopped", self.name)

    # --------------------------------------------------------------- storing
    def _store(self, consumer: Consumer, messages: list[Message], should_stop: StopFlag) -> None:
        backoff = 0.5
        while True:
            try:
                self._write(messages)
                break
            except ClickHouseUnavailable as exc:
                if should_stop():
                    raise
                log.warning("%s: ClickHouse unavailable (%s); pausing, retry in %.1f s", self.name, exc, backoff)
                self._pause(consumer)
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline:
                    consumer.poll(0.2)  # stay in the group; paused partitions return nothing
                backoff = min(backoff * 2, 30.0)
        self._resume(consumer)
        self.producer.flush(30)
        failpoints.hit("sink.after_insert")  # tests: die between the ClickHouse insert and the offset commit
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            offsets[key] = max(offsets.get(key, 0), msg.offset() + 1)
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)

    def _write(self, messages: list[Message]) -> None:
        for msg in messages:
            metrics.MESSAGES.labels(STAGE).inc()
            try:
                batch = decode_feature_batch(msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
                frame = frame_from_ipc(batch.payload)
                if self.run_id:
                    batch.run_id = self.run_id
            except Exception as exc:  # MessageDecodeError, or a payload Arrow cannot read
                log.error("%s: %s -> dead letter", STAGE, exc)
                self._dead_letter(msg, exc)
                continue
            token = content_token(batch)
            if failpoints.outage("clickhouse"):
                raise ClickHouseUnavailable("connection refused (simulated outage, ERASTREAM_OUTAGE_CLICKHOUSE)")
            try:
                if batch.kind == "series":
                    self.writer.write_rolling(rolling_rows(batch, frame), token)
                else:
                    self.writer.write_features(feature_rows(batch, frame), token)
                if batch.last:
                    self._era_finished(batch)
            except ClickHouseUnavailable:
                raise
            except Exception as exc:
                if not isinstance(exc, ClickHouseError):
                    exc = classify_error(exc)
                    if isinstance(exc, ClickHouseUnavailable):
                        raise exc from None
                log.error("%s: cannot store %s[%d]@%d: %s -> dead letter", STAGE, msg.topic(), msg.partition(), msg.offset(), exc)
                self._dead_letter(msg, exc)

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        produce(self.producer, dead_letter(msg, STAGE, exc))
        metrics.DEAD_LETTERS.labels(STAGE).inc()

    def _era_finished(self, batch: FeatureBatch) -> None:
        count = self.writer.client.query(
            "SELECT count() FROM era_features FINAL WHERE compartment_id = {c:String} AND era_id = {e:String} "
            "AND run_id = {r:String} AND source = {s:String}",
            parameters={"c": batch.compartment_id, "e": batch.era_id, "r": batch.run_id, "s": batch.source},
        ).result_rows[0][0]
        at = pd.Timestamp(batch.computed_at)
        record = EraRecord(
            compartment_id=batch.compartment_id, era_id=batch.era_id, run_id=batch.run_id,
            feature_set=batch.feature_set, era_start=pd.Timestamp(batch.era_start) if batch.era_start else at,
            era_end=pd.Timestamp(batch.era_end) if batch.era_end else at, rows=batch.era_rows, sensors=batch.sensors,
            tsfresh_features=count if batch.source == "tsfresh" else 0,
            rolling_features=count if batch.source == "rolling" else 0,
            tsfresh_at=at if batch.source == "tsfresh" else None,
            rolling_at=at if batch.source == "rolling" else None,
        )
        self.writer.upsert_era(record)
        metrics.ERAS.labels(STAGE).inc()
        self.selection.dirty_runs.add(batch.run_id)
        notice = {"kind": "era", "era_key": batch.era_key, "run_id": batch.run_id, "source": batch.source, "features": int(count), "stage_seconds": batch.stage_seconds}
        produce(self.producer, _notice(batch.era_key, notice))

    # -------------------------------------------------------------- selection
    def _select(self) -> None:
        from stages.clickhouse import feature_matrix
        from stages.selection import select_features

        for run_id in sorted(self.selection.dirty_runs):
            complete = self.writer.client.query(
                "SELECT count() FROM eras FINAL WHERE run_id = {r:String} AND tsfresh_at IS NOT NULL AND rolling_at IS NOT NULL",
                parameters={"r": run_id},
            ).result_rows[0][0]
            matrix = feature_matrix(self.writer.client, run_id)
            if matrix.empty:
                continue
            started = time.perf_counter()
            result = select_features(
                matrix.reset_index(drop=True), self.settings.variance_threshold,
                self.settings.correlation_threshold, self.settings.pca_components,
            )
            selection_id = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S.%fZ")
            self.writer.write_selection(result.table, selection_id, run_id, eras=len(matrix))
            log.info("%s: selection %s over %d eras kept %d of %d features in %.2f s", STAGE, selection_id, len(matrix),
                     len(result.selected), matrix.shape[1], time.perf_counter() - started)
            produce(self.producer, _notice(run_id, {"kind": "selection", "run_id": run_id, "eras": len(matrix), "complete_eras": int(complete),
                                                     "kept": len(result.selected), "features": int(matrix.shape[1])}))
        self.producer.flush(30)
        self.selection.dirty_runs.clear()
        self.selection.last_run = time.monotonic()

    # ---------------------------------------------------------------- pausing
    def _pause(self, consumer: Consumer) -> None:
        if not self._paused:
            self._paused = consumer.assignment()
            consumer.pause(self._paused)

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            consumer.resume(self._paused)
            self._paused = []


def _notice(key: str, body: dict) -> Any:
    from streams.runner import Output

    return Output(ERAS_DONE, key, json.dumps(body).encode())


def _skip(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return False
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("sink consume error: %s", err)
    return True
