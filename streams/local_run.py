"""`erastream run`: the whole pipeline on one machine, from files to ClickHouse.

Starts the local broker when none is configured, creates topics, starts every
stage as its own process, ingests, waits until the sink reports every era of the
input stored (through the eras.done topic, since the sink owns embedded chDB while
it runs), stops the stages and summarises from ClickHouse.

The run also reads the dead-letter topics: an era that a stage or the sink dead-letters
will never be stored, so the run ends once every era is stored or dead-lettered and
reports the dead-lettered ones with their errors. SIGINT/SIGTERM stop the stages and a
broker the run started before the process exits.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams import kafka
from streams.ingest import IngestReport, publish
from streams.fetch_watch import FetchWatch
from streams.settings import Settings
from streams.topic_reader import partitions, watermarks
from streams.topics import ERAS_DONE, PIPELINE_TOPICS, create_topics, dlq
from streams.workers import STAGES, spawn_stage, stop_processes

log = logging.getLogger(__name__)

SOURCES = ("tsfresh", "rolling")


#: Seconds a stage gets to leave its group after SIGTERM when the run itself was interrupted.
INTERRUPT_STOP_S = 10.0


class RunFailed(RuntimeError):
    """A stage died or the run timed out; the message has the stage's log tail."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the run; `signum` says which (exit code 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into RunInterrupted, so the run's cleanup runs for both.

    Python's default SIGTERM ends the process at once, leaving stages and the broker behind.
    Only the first signal interrupts: one that comes while the run is cleaning up is ignored
    (the cleanup is bounded by INTERRUPT_STOP_S per stage and the broker's own stop timeout).
    """
    hit = False

    def handler(signum, frame):  # noqa: ARG001
        nonlocal hit
        if hit:
            log.warning("%s while stopping; still stopping", signal.Signals(signum).name)
            return
        hit = True
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class DeadEra:
    """An era that a stage dead-lettered: where and why (from the dead letter's headers)."""

    era_key: str
    stage: str
    error: str
    topic: str  # the .dlq topic it went to


@dataclass
class RunSummary:
    ingest: IngestReport
    eras: pd.DataFrame
    stage_seconds: dict[str, float]
    selection: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    failed: dict[str, DeadEra] = field(default_factory=dict)  # era key -> its dead letter
    first_stored_seconds: float | None = None  # from the start of the run to the first era stored


class DoneWatcher:
    """Reads the sink's notices, and the dead letters, from the current end of their topics onwards.

    A dead letter is keyed by its era key (stages dead-letter a failed era's chunks under it,
    the sink a feature batch it cannot store), so the era it names is marked failed with the
    error from its headers.
    """

    #: Seconds without a notice after which the watcher checks whether it is stalled.
    STALL_CHECK_S = 5.0

    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer = self._consumer()
        topics = [ERAS_DONE, *(dlq(t) for t in PIPELINE_TOPICS)]
        found = partitions(self.consumer, topics, timeout=30)
        tps = [(t, p) for t in topics for p in found.get(t, [])]
        ends = watermarks(self.consumer, tps, timeout=30)  # only notices and dead letters from now on
        self.next_offsets: dict[tuple[str, int], int] = {tp: high for tp, (_, high) in ends.items()}
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.next_offsets.items()])
        self._watch = FetchWatch(settings, "eras.done watcher", check_every_s=self.STALL_CHECK_S, slack=0)
        self.done_by_run: dict[str, dict[str, set[str]]] = {}  # run id -> era key -> sources stored
        self.stage_seconds: dict[str, dict[str, float]] = {}
        self.selections: list[dict] = []
        self.failed: dict[str, DeadEra] = {}  # era key -> its first dead letter seen
        self.last_era_ts = 0

    def _consumer(self) -> Consumer:
        # partition EOF comes at the last stable offset, past the marker that ends a transaction:
        # it moves next_offsets there, so a trailing marker never reads as a stall
        return Consumer(kafka.consumer_config(self.settings, f"erastream.run.{uuid.uuid4().hex[:8]}",
                                              **{"enable.partition.eof": True}))

    def poll(self, timeout: float = 0.5) -> None:
        messages = self.consumer.consume(num_messages=500, timeout=timeout)
        if messages:
            self._watch.active()
        else:
            self._restart_if_stalled()
        for msg in messages:
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF and msg.offset() >= 0:
                    tp = (msg.topic(), msg.partition())
                    self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), msg.offset())
                continue
            self.next_offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            if msg.topic() != ERAS_DONE:
                self._dead_letter(msg)
                continue
            notice = json.loads(msg.value())
            notice["_ts"] = msg.timestamp()[1]
            if notice.get("kind") == "era":
                self.last_era_ts = max(self.last_era_ts, notice["_ts"])
                self.done_by_run.setdefault(notice["run_id"], defaultdict(set))[notice["era_key"]].add(notice["source"])
                self.stage_seconds.setdefault(notice["era_key"], {}).update(notice.get("stage_seconds", {}))
            elif notice.get("kind") == "selection":
                self.selections.append(notice)

    def _dead_letter(self, msg) -> None:
        key = (msg.key() or b"").decode(errors="replace")
        if not key or key in self.failed:
            return
        headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
        self.failed[key] = DeadEra(key, headers.get("erastream.stage", "?"), headers.get("erastream.error", "(no error header)"),
                                   msg.topic())

    def stored(self, keys: list[str]) -> set[str]:
        """Those of these eras that have every source stored (in any run)."""
        return {k for k in keys if set().union(*(run.get(k, ()) for run in self.done_by_run.values())) >= set(SOURCES)}

    def stored_by_source(self, keys: list[str]) -> dict[str, int]:
        """Per feature source, how many of these eras have it stored (in any run)."""
        merged: dict[str, set[str]] = defaultdict(set)
        for run in self.done_by_run.values():
            for key, sources in run.items():
                merged[key] |= sources
        return {source: sum(1 for k in keys if source in merged.get(k, ())) for source in SOURCES}

    def selection_covers(self, notice: dict, run_id: str, eras: int) -> bool:
        """A selection of this run that ran after the last era of ours was stored."""
        return notice["run_id"] == run_id and notice.get("complete_eras", 0) >= eras and notice["_ts"] >= self.last_era_ts

    def finished(self, keys: list[str]) -> int:
        """How many of these eras have every source stored (in any run)."""
        return len(self.stored(keys))

    def _restart_if_stalled(self) -> None:
        """Start a fresh consumer where this one stopped if it sits behind notices it never gets
        (streams/fetch_watch.py: an assign()-ed librdkafka consumer can stop fetching for good
        after a broker restart). Partition EOF moves next_offsets past a trailing transaction
        marker, so no slack is needed."""
        if not self._watch.quiet(lambda: dict(self.next_offsets)):
            return
        self.consumer.close()
        self.consumer = self._consumer()
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.next_offsets.items()])

    def close(self) -> None:
        self.consumer.close()


def run_local(
    settings: Settings,
    input_path: Path,
    eras_file: Path | None = None,
    era_length: str = "1D",
    timeout: float | None = None,
    on_progress: Callable[..., None] | None = None,
    workers: dict[str, int] | None = None,
) -> RunSummary:
    """workers: processes per stage (default 1 each; the embedded-chDB sink allows only 1).

    Returns once every era of the input is stored or dead-lettered (summary.failed); raises
    RunFailed when a stage dies or the timeout passes. A KeyboardInterrupt (RunInterrupted
    under interruptible()) stops the stages within INTERRUPT_STOP_S and the broker this run
    started, then propagates.
    """
    started = time.monotonic()
    broker = None
    if not settings.kafka_bootstrap_servers:
        from infra.kafka.broker import LocalBroker

        local = LocalBroker(settings.broker_state_dir, log=log.info)
        state = local.status()
        if state is None:
            log.info("starting the local Kafka broker")
            broker = local  # before start(): an interrupt during start still stops it
            state = local.start()
        else:
            log.info("reusing the local Kafka broker already running (pid %d)", state.pid)
        settings = settings.model_copy(update={"kafka_bootstrap_servers": state.bootstrap})
    procs: dict[str, list[subprocess.Popen]] = {}
    log_dir = settings.data_dir / "logs"
    stop_timeout = 30.0
    watcher: DoneWatcher | None = None
    first_stored: float | None = None
    try:
        create_topics(kafka.admin_client(settings), settings.topic_partitions)
        watcher = DoneWatcher(settings)
        for stage in STAGES:
            procs[stage] = spawn_stage(settings, stage, (workers or {}).get(stage, 1), log_dir=log_dir)
        report = publish(settings, input_path, eras_file, era_length, progress=on_progress)
        keys = list(dict.fromkeys(report.eras))
        deadline = None if timeout is None else time.monotonic() + timeout
        selection_seen = False
        while keys:
            watcher.poll()
            stored = watcher.stored(keys)
            if stored and first_stored is None:
                first_stored = time.monotonic() - started
                log.info("first era stored %.1f s after the start", first_stored)
            failed = [k for k in keys if k in watcher.failed and k not in stored]
            if on_progress:
                for source, count in watcher.stored_by_source(keys).items():
                    on_progress(source, count, len(keys))
                on_progress("stored", len(stored), len(keys), f"{len(failed)} dead-lettered" if failed else "")
            if len(stored) + len(failed) == len(keys):
                if not stored or any(watcher.selection_covers(s, settings.run_id, len(stored)) for s in watcher.selections):
                    selection_seen = bool(stored)
                    break
            _check_alive(procs, log_dir)
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"timed out after {timeout:.0f} s with {len(stored)} of {len(keys)} eras stored"
                                + (f" and {len(failed)} dead-lettered" if failed else ""))
        stored = watcher.stored(keys) if keys else set()
        failed_eras = {k: watcher.failed[k] for k in keys if k in watcher.failed and k not in stored}
        stage_seconds: dict[str, float] = defaultdict(float)
        for key in keys:
            for stage, secs in watcher.stage_seconds.get(key, {}).items():
                stage_seconds[stage] += secs
        covering = [s for s in watcher.selections if watcher.selection_covers(s, settings.run_id, len(stored))]
        selection = covering[-1] if selection_seen and covering else {}
    except KeyboardInterrupt:
        stop_timeout = INTERRUPT_STOP_S
        raise
    finally:
        if watcher is not None:
            watcher.close()
        stop_processes([p for group in procs.values() for p in group], timeout=stop_timeout)
        if broker is not None:
            broker.stop()
    eras = _era_table(settings, keys)
    return RunSummary(report, eras, dict(stage_seconds), selection, time.monotonic() - started, failed_eras, first_stored)


def _check_alive(procs: dict[str, list[subprocess.Popen]], log_dir: Path) -> None:
    for stage, group in procs.items():
        for i, proc in enumerate(group):
            if proc.poll() is not None:
                tail = ""
                try:
                    tail = (log_dir / f"{stage}-{i}.log").read_text(errors="replace")[-3000:]
                except OSError:
                    pass
                raise RunFailed(f"stage {stage} exited with code {proc.returncode}; log tail:\n{tail}")


def _era_table(settings: Settings, keys: list[str]) -> pd.DataFrame:
    from stages.clickhouse import connect, era_status

    client = connect(settings.clickhouse_url, settings.clickhouse_path)
    try:
        table = era_status(client, settings.run_id)
    finally:
        client.close()
    wanted = set(keys)
    mask = (table["compartment_id"].astype(str) + ":" + table["era_id"].astype(str)).isin(wanted)
    return table[mask].reset_index(drop=True)
