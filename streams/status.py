"""`erastream status`: what each stage's consumer group is doing, what waits for it, what failed.

Per stage: the group's state and members (client id, host, assigned partitions), the
lag per partition of its input topics, and the eras in flight: distinct eras whose
first chunk (chunk_index 0) lies between the committed offset and the high watermark.
The runner commits, per partition, the first offset an unfinished era still needs,
so those are exactly the eras the stage has not finished (or not started). Reading is
bounded: at most `scan_limit` messages (and `scan_bytes` bytes) per partition, and the
counts say "at least" when cut. Then the dead letters per dlq topic, and the eras each
stage completed according to ClickHouse's `eras` table, per run id.

Lag is reported twice: `offset_lag` (high watermark - committed offset, what Kafka's
own tools show) and `lag` (the committed messages actually waiting, counted by the
read_committed scan): transaction markers occupy offsets, so a transactional topic
that is fully consumed shows an offset lag of 1 but a lag of 0.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from schemas.codec import MessageDecodeError, decode_era_chunk, decode_feature_batch
from stages.clickhouse import chdb_locked
from streams import kafka
from streams.dead_letters import REPLAY_GROUP, dlq_topics
from streams.settings import Settings
from streams.topic_reader import TP, BoundedRead, committed_offsets, partitions, reader, watermarks
from streams.topics import STAGE_INPUTS, stage_group

SCAN_LIMIT = 10_000
SCAN_BYTES = 256 * 1024 * 1024

DECODERS: dict[str, Callable[..., Any]] = {"era_chunk": decode_era_chunk, "feature_batch": decode_feature_batch}


@dataclass(frozen=True)
class StageSpec:
    """A stage as status sees it: its consumer group and input topics, and how its inputs decode."""

    name: str
    group_id: str
    topics: tuple[str, ...]
    envelope: str  # era_chunk | feature_batch


STALLED_AFTER_S = 60.0  # an unfinished era whose newest chunk is older than this is shown as stalled


def default_stages() -> list[StageSpec]:
    return [
        StageSpec(name, stage_group(name), topics, "feature_batch" if name == "sink" else "era_chunk")
        for name, topics in STAGE_INPUTS.items()
    ]


@dataclass
class MemberStatus:
    client_id: str
    host: str
    member_id: str
    partitions: list[str]  # "topic[partition]"


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here (it starts at the low watermark)
    low: int
    high: int
    offset_lag: int
    lag: int  # messages waiting, counted (a lower bound when cut)
    cut: bool = False


@dataclass
class StageStatus:
    name: str
    group_id: str
    topics: list[str]
    state: str  # stable, empty, preparing_rebalancing, ..., or "none" when the group does not exist
    members: list[MemberStatus] = field(default_factory=list)
    partitions: list[PartitionStatus] = field(default_factory=list)
    eras_in_flight: int = 0
    in_flight_cut: bool = False
    #: eras in flight without their last chunk whose newest chunk is older than STALLED_AFTER_S:
    #: key -> seconds since that chunk (the stage dead-letters them after ERA_STALL_TIMEOUT)
    eras_stalled: dict[str, float] = field(default_factory=dict)
    undecodable: int = 0  # waiting messages that are not envelopes (dead letters to be)
    eras_completed: dict[str, int] | None = None  # run id -> eras; None: not recorded in ClickHouse
    missing_topics: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def lag_cut(self) -> bool:
        return any(p.cut for p in self.partitions)


@dataclass
class DeadLetterCount:
    topic: str
    messages: int  # counted (a lower bound when cut)
    not_replayed: int  # past the replay group's committed offset
    offsets: int  # high - low watermark summed over partitions (markers included)
    cut: bool = False
    exists: bool = True


@dataclass
class StatusReport:
    bootstrap: str
    stages: list[StageStatus]
    dead_letters: list[DeadLetterCount]
    clickhouse: str  # where eras_completed came from
    clickhouse_note: str | None = None  # why eras_completed is missing (locked chDB, no data, unreachable)
    generated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def to_dict(self) -> dict:
        out = asdict(self)
        for stage, raw in zip(self.stages, out["stages"]):
            raw["lag"] = stage.lag
            raw["lag_cut"] = stage.lag_cut
        return out


def collect_status(
    settings: Settings,
    stages: list[StageSpec] | None = None,
    dead_letter_topics: Iterable[str] | None = None,
    replay_group: str = REPLAY_GROUP,
    scan_limit: int = SCAN_LIMIT,
    scan_bytes: int = SCAN_BYTES,
    timeout: float = 30.0,
    clickhouse: bool = True,
) -> StatusReport:
    """Everything `erastream status` shows, from the broker and ClickHouse."""
    stages = stages if stages is not None else default_stages()
    admin = kafka.admin_client(settings)
    consumer = reader(settings)
    try:
        states = _describe_groups(admin, [s.group_id for s in stages], timeout)
        result = []
        for spec in stages:
            status = StageStatus(spec.name, spec.group_id, list(spec.topics), **states.get(spec.group_id, {"state": "none"}))
            _fill_lag(status, spec, admin, consumer, scan_limit, scan_bytes, timeout)
            result.append(status)
        dead = _dead_letters(admin, consumer, dlq_topics(dead_letter_topics), replay_group, scan_limit, scan_bytes, timeout)
    finally:
        consumer.close()
    where, note = "", None
    if clickhouse:
        where, note, completed = completed_eras(settings)
        for status in result:
            status.eras_completed = completed.get(status.name) if completed is not None else None
    return StatusReport(kafka.bootstrap_servers(settings), result, dead, where, note)


def _describe_groups(admin, group_ids: list[str], timeout: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    futures = admin.describe_consumer_groups(list(dict.fromkeys(group_ids)), request_timeout=timeout)
    for group_id, future in futures.items():
        try:
            desc = future.result(timeout=timeout)
        except Exception:  # GROUP_ID_NOT_FOUND and friends: no such group yet
            out[group_id] = {"state": "none"}
            continue
        members = [
            MemberStatus(
                m.client_id, m.host, m.member_id,
                sorted(f"{tp.topic}[{tp.partition}]" for tp in (m.assignment.topic_partitions if m.assignment else [])),
            )
            for m in desc.members
        ]
        state = desc.state.name.lower() if desc.state is not None else "unknown"
        if state == "dead":
            state = "none"
        out[group_id] = {"state": state, "members": sorted(members, key=lambda m: m.client_id)}
    return out


def _fill_lag(status: StageStatus, spec: StageSpec, admin, consumer, scan_limit: int, scan_bytes: int, timeout: float) -> None:
    parts = partitions(consumer, spec.topics)
    status.missing_topics = [t for t in spec.topics if t not in parts]
    tps = [(t, p) for t, ps in parts.items() for p in ps]
    marks = watermarks(consumer, tps)
    committed = committed_offsets(admin, spec.group_id, tps)
    spans: dict[TP, tuple[int, int]] = {}
    for tp in tps:
        low, high = marks[tp]
        start = committed[tp] if committed[tp] is not None else low
        spans[tp] = (max(start, low), high)
    decode = DECODERS[spec.envelope]
    eras: set[tuple[str, str]] = set()
    newest: dict[tuple[str, str], int] = {}  # era -> newest chunk's timestamp (ms)
    finished: set[tuple[str, str]] = set()
    read = BoundedRead(consumer, spans, max_messages=scan_limit, max_bytes=scan_bytes, timeout=timeout)
    for msg in read:
        try:
            envelope = decode(msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
        except MessageDecodeError:
            status.undecodable += 1
            continue
        era = (envelope.run_id, envelope.era_key)
        if envelope.chunk_index == 0:
            eras.add(era)
        newest[era] = max(newest.get(era, 0), msg.timestamp()[1])
        if envelope.last:
            finished.add(era)
    for tp in tps:
        low, high = marks[tp]
        start = spans[tp][0]
        status.partitions.append(PartitionStatus(
            tp[0], tp[1], committed[tp], low, high, offset_lag=max(high - start, 0), lag=read.counts.get(tp, 0),
            cut=tp in read.cut or tp in read.unfinished,
        ))
    status.eras_in_flight = len(eras)
    now_ms = time.time() * 1000
    status.eras_stalled = {
        key: round((now_ms - newest[(run, key)]) / 1000, 1) for run, key in sorted(eras - finished)
        if now_ms - newest[(run, key)] > STALLED_AFTER_S * 1000
    }
    status.in_flight_cut = bool(read.cut or read.unfinished)


def _dead_letters(admin, consumer, topics: list[str], replay_group: str, scan_limit: int, scan_bytes: int, timeout: float) -> list[DeadLetterCount]:
    parts = partitions(consumer, topics)
    tps = [(t, p) for t, ps in parts.items() for p in ps]
    marks = watermarks(consumer, tps)
    replayed = committed_offsets(admin, replay_group, tps)
    read = BoundedRead(consumer, dict(marks), max_messages=scan_limit, max_bytes=scan_bytes, timeout=timeout)
    not_replayed: dict[TP, int] = defaultdict(int)
    for msg in read:
        tp = (msg.topic(), msg.partition())
        if replayed.get(tp) is None or msg.offset() >= replayed[tp]:
            not_replayed[tp] += 1
    out = []
    for topic in topics:
        mine = [tp for tp in tps if tp[0] == topic]
        out.append(DeadLetterCount(
            topic,
            messages=sum(read.counts.get(tp, 0) for tp in mine),
            not_replayed=sum(not_replayed[tp] for tp in mine),
            offsets=sum(marks[tp][1] - marks[tp][0] for tp in mine),
            cut=any(tp in read.cut or tp in read.unfinished for tp in mine),
            exists=topic in parts,
        ))
    return out


# ------------------------------------------------------------- ClickHouse
COMPLETED_SQL = (
    "SELECT run_id, countIf(tsfresh_at IS NOT NULL) AS tsfresh, countIf(rolling_at IS NOT NULL) AS rolling, "
    "countIf(tsfresh_at IS NOT NULL AND rolling_at IS NOT NULL) AS sink FROM eras FINAL GROUP BY run_id ORDER BY run_id"
)


def completed_eras(settings: Settings) -> tuple[str, str | None, dict[str, dict[str, int]] | None]:
    """(where, note, stage -> run id -> eras) from the `eras` table.

    tsfresh / rolling: eras whose features of that source are stored; sink: eras with both.
    preprocess leaves no trace in ClickHouse. With embedded chDB held by a running sink the
    note says so and the counts are None; nothing fails.
    """
    from stages.clickhouse import ClickHouseError, connect, redact_url

    url, path = settings.clickhouse_url, Path(settings.clickhouse_path)
    where = redact_url(url) if url else f"embedded chDB {path}"
    if not url:
        if not path.exists():
            return where, f"no embedded ClickHouse data in {path} yet", _no_eras()
        if chdb_locked(path):
            return where, (f"the embedded ClickHouse in {path} is in use by another process (a running sink?); "
                           "eras completed are not shown: stop the sink or set CLICKHOUSE_URL to a server"), None
    try:
        client = connect(url, path)
    except ClickHouseError as exc:
        return where, str(exc), None
    try:
        tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
        if "eras" not in tables:
            return where, "no eras table yet (no sink has run against this ClickHouse)", _no_eras()
        rows = client.query(COMPLETED_SQL).result_rows
    except Exception as exc:  # a server that answers but fails the query
        return where, f"cannot read the eras table: {exc}", None
    finally:
        client.close()
    completed = _no_eras()
    for run_id, tsfresh, rolling, sink in rows:
        completed["tsfresh"][run_id] = int(tsfresh)
        completed["rolling"][run_id] = int(rolling)
        completed["sink"][run_id] = int(sink)
    return where, None, completed


def _no_eras() -> dict[str, dict[str, int]]:
    return {"tsfresh": {}, "rolling": {}, "sink": {}}


# ------------------------------------------------------------- rendering
def _n(value: int, cut: bool) -> str:
    return f"≥{value:,}" if cut else f"{value:,}"


def render(report: StatusReport, console) -> None:
    """The report as rich tables: stages, members, partitions with lag, dead letters, ClickHouse."""
    from rich.table import Table

    stages = Table(title=f"stages (Kafka {report.bootstrap})")
    for col in ("stage", "group", "state", "members", "lag", "eras in flight", "eras completed"):
        stages.add_column(col, justify="right" if col in ("members", "lag", "eras in flight") else "left")
    for s in report.stages:
        if s.eras_completed is None:
            completed = "-" if s.name == "preprocess" else "?"
        else:
            completed = ", ".join(f"{run}: {n}" for run, n in s.eras_completed.items()) or "0"
        lag = _n(s.lag, s.lag_cut) + (f" ({s.undecodable} undecodable)" if s.undecodable else "")
        in_flight = _n(s.eras_in_flight, s.in_flight_cut) + (f" ({len(s.eras_stalled)} stalled)" if s.eras_stalled else "")
        stages.add_row(s.name, s.group_id, s.state, str(len(s.members)), lag, in_flight, completed)
    console.print(stages)
    for s in report.stages:
        for key, age in s.eras_stalled.items():
            console.print(f"[yellow]{s.name}: era {key} stalled: no new chunk for {age:,.0f} s "
                          f"(dead-lettered after ERA_STALL_TIMEOUT_S)[/yellow]")

    members = Table(title="group members")
    for col in ("stage", "client id", "host", "partitions"):
        members.add_column(col, overflow="fold")
    for s in report.stages:
        for m in s.members:
            members.add_row(s.name, m.client_id, m.host, ", ".join(m.partitions) or "(none)")
    if members.row_count:
        console.print(members)

    parts = Table(title="lag per partition")
    for col in ("stage", "topic", "partition", "committed", "high watermark", "lag", "offset lag"):
        parts.add_column(col, justify="left" if col in ("stage", "topic") else "right")
    for s in report.stages:
        for p in s.partitions:
            parts.add_row(s.name, p.topic, str(p.partition), "-" if p.committed is None else f"{p.committed:,}",
                          f"{p.high:,}", _n(p.lag, p.cut), f"{p.offset_lag:,}")
        for t in s.missing_topics:
            parts.add_row(s.name, t, "-", "-", "-", "topic missing", "-")
    console.print(parts)

    dead = Table(title="dead letters")
    for col in ("topic", "messages", "not replayed"):
        dead.add_column(col, justify="left" if col == "topic" else "right")
    for d in report.dead_letters:
        if not d.exists:
            dead.add_row(d.topic, "topic missing", "-")
        else:
            dead.add_row(d.topic, _n(d.messages, d.cut), _n(d.not_replayed, d.cut))
    console.print(dead)
    if report.clickhouse_note:
        console.print(f"[yellow]ClickHouse ({report.clickhouse}):[/yellow] {report.clickhouse_note}")
    else:
        console.print(f"eras completed from {report.clickhouse}")
