"""Replays for backfills: move a stage's consumer group back and reprocess.

Without a new run id the stage's own group is moved (its workers must be stopped
first: Kafka only lets an empty group's offsets be changed) and the stage's next run
reprocesses; results overwrite the same run id in ClickHouse, never duplicating.
With a new run id a fresh group `erastream.<stage>.replay.<run id>` starts at the
chosen offsets and its outputs are re-stamped with the new run id, so downstream
stages and the sink store them beside the original run.

Two guards keep a replay from losing work. A group that already committed offsets is never
moved forward past records it has not processed yet unless forced (a --from-timestamp later
than where the group stands would skip them). And a start found by time is moved back, per
partition, to the first chunk of every era that spans it: stages skip an era's chunks when they
did not see its first one, so a replay starting mid-era would silently leave that era out.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.codec import MessageDecodeError, decode_era_chunk, decode_feature_batch
from streams import kafka
from streams.settings import Settings
from streams.topic_reader import TP, BoundedRead, committed_offsets, partitions, reader, watermarks
from streams.topics import ERAS_CLEAN, ERAS_RAW, STAGE_INPUTS, stage_group

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """The replay cannot start; the message says why and what to do."""


@dataclass
class ReplayPlan:
    stage: str
    group_id: str
    run_id: str | None
    start: list[TopicPartition]  # where the group now begins
    end: dict[tuple[str, int], int]  # high watermarks when the replay was planned

    @property
    def messages(self) -> int:
        return sum(max(self.end[(tp.topic, tp.partition)] - tp.offset, 0) for tp in self.start)


def replay_group(stage: str, run_id: str | None) -> str:
    return f"{stage_group(stage)}.replay.{run_id}" if run_id else stage_group(stage)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601; without an offset it is UTC."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReplayError(f"--from-timestamp {text!r} is not an ISO 8601 time such as 2024-03-02T12:00:00") from exc
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts


#: Offsets read per step when walking back from a time's offset to the first chunks of its eras.
WALK_BACK_WINDOW = 200


def plan_replay(
    settings: Settings, stage: str, from_timestamp: datetime | None = None, run_id: str | None = None,
    force: bool = False,
) -> ReplayPlan:
    """Commit the chosen start offsets for the replay's group; from the beginning when no timestamp.

    From a timestamp, each partition starts at the first chunk of any era whose chunks span
    it. Refuses (ReplayError) to move a group that has committed offsets forward past records
    it has not processed, unless `force`.
    """
    if stage not in STAGE_INPUTS:
        raise ReplayError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_INPUTS)}")
    group = replay_group(stage, run_id)
    _require_empty(settings, group)
    consumer = Consumer(kafka.consumer_config(settings, group))
    try:
        found_partitions = partitions(consumer, STAGE_INPUTS[stage], timeout=30)
        missing = [t for t in STAGE_INPUTS[stage] if t not in found_partitions]
        if missing:
            raise ReplayError(f"topic {missing[0]} does not exist; run `erastream topics create`")
        tps = [(t, p) for t in STAGE_INPUTS[stage] for p in found_partitions[t]]
        marks = watermarks(consumer, tps, timeout=30)
        end = {tp: high for tp, (_, high) in marks.items()}
        start = [TopicPartition(t, p, marks[(t, p)][0]) for t, p in tps]
        if from_timestamp is not None:
            ms = int(from_timestamp.timestamp() * 1000)
            found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, ms) for tp in start], timeout=30)
            start = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else end[(tp.topic, tp.partition)])
                for tp in found
            ]
            start = era_starts(settings, {(tp.topic, tp.partition): tp.offset for tp in start},
                               {tp: low for tp, (low, _) in marks.items()}, end)
        skipped = unprocessed_skipped(settings, group, start, {tp: low for tp, (low, _) in marks.items()})
        if skipped:
            where = ", ".join(f"{t}[{p}] ({n})" for (t, p), n in sorted(skipped.items()))
            message = (f"moving group {group} to the chosen start would skip {sum(skipped.values())} unprocessed "
                       f"message(s) on partitions {where}")
            if not force:
                raise ReplayError(f"{message}; let the stage catch up first, or --force to do it anyway")
            log.warning("%s (--force)", message)
        try:
            consumer.commit(offsets=start, asynchronous=False)
        except KafkaException as exc:
            raise ReplayError(f"cannot move group {group}: {exc.args[0]}; stop its workers and retry") from exc
    finally:
        consumer.close()
    plan = ReplayPlan(stage, group, run_id, start, end)
    log.info("replay %s: group %s moved to %s (%d messages to reprocess)", stage, group,
             {f"{tp.topic}[{tp.partition}]": tp.offset for tp in start}, plan.messages)
    return plan


def era_starts(settings: Settings, start: dict[TP, int], low: dict[TP, int], end: dict[TP, int]) -> list[TopicPartition]:
    """Move each start back to the first chunk (chunk_index 0) of every era that spans it.

    An era spans a start when it has chunks on both sides of it: walking back, the first chunk
    met of each era (per run id and era key) that is not `last` marks an era still open at the
    start (`OpenEras`), and reading on from the start shows which of those really go on. An
    open era that never goes on (abandoned mid-way, or dead-lettered as stalled) is not waited
    for: its chunks all lie before the time, so a backfill from the time leaves it out.
    """
    out: list[TopicPartition] = []
    consumer = reader(settings)
    try:
        for tp, offset in start.items():
            first = _first_chunk_of_spanning_eras(consumer, tp, offset, low.get(tp, 0), end.get(tp, offset))
            if first < offset:
                log.info("replay: %s[%d] starts at %d, the first chunk of an era spanning offset %d",
                         tp[0], tp[1], first, offset)
            out.append(TopicPartition(tp[0], tp[1], first))
    finally:
        consumer.close()
    return out


EraId = tuple[str, str]  # (run id, era key)


@dataclass
class OpenEras:
    """Walking back from a start: which eras were open there, and where each one's chunk 0 is.

    Fed chunks newest first. The first chunk seen of an era decides: `last` means it finished
    before the start; otherwise it is open and its chunk 0 is still looked for.
    """

    decided: set[EraId] = field(default_factory=set)
    first_chunk: dict[EraId, int | None] = field(default_factory=dict)  # open era -> offset of chunk 0

    def see(self, era: EraId, chunk_index: int, last: bool, offset: int) -> None:
        if era not in self.decided:
            self.decided.add(era)
            if not last:
                self.first_chunk[era] = None
        if era in self.first_chunk and chunk_index == 0 and self.first_chunk[era] is None:
            self.first_chunk[era] = offset

    @property
    def searching(self) -> bool:
        """True while an open era's chunk 0 is not found yet (or nothing was seen at all)."""
        return not self.decided or any(at is None for at in self.first_chunk.values())

    def start(self, start: int, continued: set[EraId]) -> int:
        """The offset to start at: chunk 0 of the earliest open era that has chunks after `start` too.

        An era whose chunk 0 is gone (retention) cannot be replayed whole, so it moves nothing.
        """
        firsts = [at for era, at in self.first_chunk.items() if era in continued and at is not None]
        return min([start, *firsts])


def _first_chunk_of_spanning_eras(consumer: Consumer, tp: TP, start: int, low: int, end: int) -> int:
    open_eras = OpenEras()
    pos = start
    while pos > low and open_eras.searching:
        window_start = max(low, pos - WALK_BACK_WINDOW)
        messages = list(BoundedRead(consumer, {tp: (window_start, pos)}, timeout=30))
        pos = window_start
        for msg in reversed(messages):
            head = _envelope(tp[0], msg.value())
            if head is not None:  # undecodable: the stage dead-letters it wherever it starts
                open_eras.see(*head, msg.offset())
    if not open_eras.first_chunk:
        return start
    return open_eras.start(start, _continued_after(consumer, tp, start, end, set(open_eras.first_chunk)))


def _continued_after(consumer: Consumer, tp: TP, start: int, end: int, eras: set[EraId]) -> set[EraId]:
    """Which of `eras` have a chunk in [start, end); reads only until every one has been seen.

    When the read cannot finish in time, the eras not seen yet count as continued: replaying an
    era too many is safe, leaving one out is not.
    """
    seen: set[EraId] = set()
    read = BoundedRead(consumer, {tp: (start, end)}, timeout=60)
    with closing(iter(read)) as messages:
        for msg in messages:
            head = _envelope(tp[0], msg.value())
            if head is not None and head[0] in eras:
                seen.add(head[0])
                if seen == eras:
                    return seen
    return seen | eras if read.unfinished else seen


def _envelope(topic: str, value: bytes | None) -> tuple[EraId, int, bool] | None:
    """((run id, era key), chunk index, last) of an era chunk or feature batch; None if undecodable."""
    decode = decode_era_chunk if topic in (ERAS_RAW, ERAS_CLEAN) else decode_feature_batch
    try:
        msg = decode(value)
    except MessageDecodeError:
        return None
    return (msg.run_id, msg.era_key), msg.chunk_index, msg.last


def unprocessed_skipped(settings: Settings, group: str, start: list[TopicPartition], low: dict[TP, int]) -> dict[TP, int]:
    """Per partition, the records between the group's committed offset and a later start.

    A group with no committed offset anywhere is new: it skips nothing it ever had. A partition
    it never committed reads from the low watermark (auto.offset.reset=earliest). Records are
    counted with a read_committed reader, so transaction markers between them do not count.
    """
    committed = committed_offsets(kafka.admin_client(settings), group, [(tp.topic, tp.partition) for tp in start], timeout=30)
    if all(o is None for o in committed.values()):
        return {}
    spans = {}
    for tp in start:
        key = (tp.topic, tp.partition)
        at = committed[key] if committed[key] is not None else low.get(key, 0)
        if tp.offset > at:
            spans[key] = (at, tp.offset)
    if not spans:
        return {}
    consumer = reader(settings)
    try:
        read = BoundedRead(consumer, spans, timeout=60)
        for _ in read:
            pass
    finally:
        consumer.close()
    return {tp: n for tp, n in read.counts.items() if n}


def _require_empty(settings: Settings, group: str) -> None:
    admin = kafka.admin_client(settings)
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    except KafkaException:
        return  # unknown group: nothing to stop
    if description.members:
        raise ReplayError(
            f"consumer group {group} has {len(description.members)} running member(s); stop the stage's workers first "
            "(or replay under a new --run-id, which uses a group of its own)"
        )


class CaughtUp:
    """A stop flag: true once the group's committed offsets reach the plan's end offsets."""

    def __init__(self, settings: Settings, plan: ReplayPlan, check_every_s: float = 1.0):
        self.plan = plan
        self.check_every_s = check_every_s
        self._consumer = Consumer(kafka.consumer_config(settings, plan.group_id, **{"enable.partition.eof": True}))
        self._last_check = 0.0
        self._done = plan.messages == 0

    def __call__(self) -> bool:
        if self._done or time.monotonic() - self._last_check < self.check_every_s:
            return self._done
        self._last_check = time.monotonic()
        committed = self._consumer.committed([TopicPartition(t, p) for (t, p) in self.plan.end], timeout=30)
        behind = [tp for tp in committed if tp.offset < self.plan.end[(tp.topic, tp.partition)]]
        self._done = not behind or not self._data_between(behind)
        if self._done:
            self._consumer.close()
        return self._done

    def _data_between(self, behind: list[TopicPartition]) -> bool:
        """Whether any committed data record lies between these offsets and the plan's end.

        A transactional producer ends each transaction with a control record that takes an
        offset but is never delivered, so a fully processed partition's committed offset can
        stay one short of the high watermark.
        """
        start = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in behind]
        self._consumer.assign(start)
        remaining = {(tp.topic, tp.partition) for tp in start}
        deadline = time.monotonic() + 10
        try:
            while remaining and time.monotonic() < deadline:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                key = (msg.topic(), msg.partition())
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(key)
                    continue
                if msg.offset() < self.plan.end[key]:
                    return True
                remaining.discard(key)
            return bool(remaining)  # undecided within the deadline: assume there is
        finally:
            self._consumer.unassign()
