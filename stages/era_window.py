"""Open and closed eras of a continuous ingest (``erastream ingest --follow``): pure bookkeeping.

Files arrive one by one; an era may get rows from several of them. This module decides,
from the eras seen so far, the rows of one poll and a clock, what to publish for each era
and which eras close. It knows nothing of Kafka or files on disk (streams/follow.py does).

Rules (see docs/architecture.md, "Follow mode"):

* An era opens with the first rows that fall in it and stays open: each later batch of
  rows continues its chunk numbering (``next_chunk``) and row count (``rows``).
* An era closes when data *past its end* arrives for its compartment (the compartment's
  watermark, the latest timestamp ever seen in it, reaches the era's end), or when the wall
  clock passes its end plus a grace period (``grace``; ``None`` = never by the clock, only by
  data). The closing batch marks its last chunk ``last=True``; when the era gets no rows in
  that poll, the closing chunk carries no rows.
* Rows for an era that is already closed are *late*: counted and reported, never
  published (downstream has computed that era already).
* An era seen for the first time whose end the watermark has already passed (a file of an
  old day arriving after newer ones) opens and closes in the same poll: it is published
  whole, since it was never closed before.
* An era's sensors are the union of the sensor columns of every file that gave it rows, in
  order of first appearance. Chunks published before a sensor appeared lack its column;
  preprocess (streams/processors.py) reads those cells as NaN and imputes them within the
  era, so nothing is dropped. Every chunk carries the era's sensor list as known when it was
  published; the last chunk's list is the whole era's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pandas as pd

from stages.durations import fixed_duration
from stages.ingest import COMPARTMENT, TIMESTAMP, EraSpec, assign_eras

CLOSED_BY_DATA = "data past its end"
CLOSED_BY_CLOCK = "grace period passed"


def parse_grace(text: str) -> pd.Timedelta | None:
    """``10min``, ``2h``, ``1D``, ``90`` (seconds), ``0`` (close at once), ``never`` -> None."""
    t = str(text).strip().lower()
    if t in ("never", "none", "inf"):
        return None
    try:
        seconds = float(t)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"grace {text!r} must not be negative")
        return pd.Timedelta(seconds=seconds)
    if t in ("0s", "0min", "0h", "0d"):
        return pd.Timedelta(0)
    return fixed_duration(str(text).strip(), "grace")


def _ts(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


@dataclass
class OpenEra:
    """An era with chunks published and no ``last`` chunk yet."""

    compartment_id: str
    era_id: str
    start: pd.Timestamp  # inclusive, tz-naive UTC
    end: pd.Timestamp  # exclusive
    next_chunk: int = 0  # chunk_index of the next chunk to publish
    rows: int = 0  # rows published so far (row_start of the next chunk)
    sensors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return EraSpec(self.compartment_id, self.era_id, self.start, self.end).key

    def to_json(self) -> dict:
        return {
            "compartment_id": self.compartment_id, "era_id": self.era_id,
            "start": self.start.isoformat(), "end": self.end.isoformat(),
            "next_chunk": self.next_chunk, "rows": self.rows, "sensors": list(self.sensors),
        }

    @classmethod
    def from_json(cls, data: dict) -> OpenEra:
        return cls(
            compartment_id=data["compartment_id"], era_id=data["era_id"], start=_ts(data["start"]),
            end=_ts(data["end"]), next_chunk=int(data["next_chunk"]), rows=int(data["rows"]),
            sensors=list(data["sensors"]),
        )


@dataclass
class EraWindow:
    """What a follower remembers about eras between polls (and across restarts)."""

    open: dict[str, OpenEra] = field(default_factory=dict)
    closed: dict[str, pd.Timestamp] = field(default_factory=dict)  # era key -> its end
    watermarks: dict[str, pd.Timestamp] = field(default_factory=dict)  # compartment -> latest timestamp seen

    def to_json(self) -> dict:
        return {
            "open": {k: e.to_json() for k, e in self.open.items()},
            "closed": {k: v.isoformat() for k, v in self.closed.items()},
            "watermarks": {k: v.isoformat() for k, v in self.watermarks.items()},
        }

    @classmethod
    def from_json(cls, data: dict | None) -> EraWindow:
        data = data or {}
        return cls(
            open={k: OpenEra.from_json(v) for k, v in data.get("open", {}).items()},
            closed={k: _ts(v) for k, v in data.get("closed", {}).items()},
            watermarks={k: _ts(v) for k, v in data.get("watermarks", {}).items()},
        )


@dataclass
class SourceRows:
    """One validated file's rows: ``timestamp``, ``compartment_id``, one float column per sensor."""

    name: str
    frame: pd.DataFrame
    sensors: list[str]


@dataclass
class FileEras:
    """Where one file's rows went."""

    name: str
    rows: int
    eras: list[str] = field(default_factory=list)  # era keys that got rows from this file
    opened: list[str] = field(default_factory=list)  # of those, eras this file opened
    late_rows: int = 0  # rows for eras already closed (not published)
    unassigned_rows: int = 0  # rows in no labelled era (not published)


@dataclass
class EraBatch:
    """What one poll publishes for one era."""

    era: OpenEra  # the era as it was before this batch: next_chunk is this batch's first index
    rows: pd.DataFrame  # timestamp + sensors (in ``sensors`` order), sorted by time; may be empty when closing
    sensors: list[str]  # the era's sensors including this batch
    opened: bool  # this batch is the era's first
    close: str | None  # why this batch closes the era, or None (it stays open)

    @property
    def key(self) -> str:
        return self.era.key


@dataclass
class PollPlan:
    batches: list[EraBatch]
    files: list[FileEras]
    watermarks: dict[str, pd.Timestamp]

    @property
    def late_rows(self) -> int:
        return sum(f.late_rows for f in self.files)

    @property
    def closing(self) -> dict[str, str]:
        return {b.key: b.close for b in self.batches if b.close}


def _close_reason(era: OpenEra, watermarks: dict[str, pd.Timestamp], now: pd.Timestamp, grace: pd.Timedelta | None) -> str | None:
    mark = watermarks.get(era.compartment_id)
    if mark is not None and mark >= era.end:
        return CLOSED_BY_DATA
    if grace is not None and now >= era.end + grace:
        return CLOSED_BY_CLOCK
    return None


def plan_poll(
    window: EraWindow,
    sources: list[SourceRows],
    *,
    now: pd.Timestamp,
    grace: pd.Timedelta | None,
    labels: list[EraSpec] | None = None,
    era_length: str = "1D",
) -> PollPlan:
    """The batches of one poll: new rows per era (in file order), and which eras close.

    ``now`` is the wall clock as tz-naive UTC. Nothing in ``window`` is changed; after the
    batches are published, :func:`apply_plan` gives the next window.
    """
    now = _ts(now)
    watermarks = dict(window.watermarks)
    parts: dict[str, list[pd.DataFrame]] = {}
    specs: dict[str, EraSpec] = {}
    added: dict[str, list[str]] = {}
    files: list[FileEras] = []
    for src in sources:
        stats = FileEras(src.name, rows=len(src.frame))
        files.append(stats)
        if len(src.frame) == 0:
            continue
        for comp, latest in src.frame.groupby(COMPARTMENT, sort=True)[TIMESTAMP].max().items():
            latest = _ts(latest)
            watermarks[str(comp)] = max(watermarks.get(str(comp), latest), latest)
        assigned = assign_eras(src.frame, labels, era_length)
        stats.unassigned_rows = len(src.frame) - sum(len(rows) for _, rows in assigned)
        for spec, rows in assigned:
            key = spec.key
            if key in window.closed:
                stats.late_rows += len(rows)
                continue
            if key not in window.open and key not in parts:
                stats.opened.append(key)
            stats.eras.append(key)
            specs[key] = spec
            parts.setdefault(key, []).append(rows)
            names = added.setdefault(key, [])
            names += [s for s in src.sensors if s not in names]

    batches: list[EraBatch] = []
    for key in sorted(set(parts) | set(window.open), key=lambda k: _order(k, window, specs)):
        if key in window.open:
            era = copy.deepcopy(window.open[key])
        else:
            spec = specs[key]
            era = OpenEra(spec.compartment_id, spec.era_id, spec.start, spec.end)
        sensors = list(era.sensors) + [s for s in added.get(key, []) if s not in era.sensors]
        columns = [TIMESTAMP, *sensors]
        if key in parts:
            rows = pd.concat(parts[key], ignore_index=True) if len(parts[key]) > 1 else parts[key][0]
            rows = rows.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
        else:
            rows = pd.DataFrame({TIMESTAMP: pd.Series([], dtype="datetime64[ns]")})
        rows = rows.reindex(columns=columns)
        for s in sensors:
            rows[s] = rows[s].astype("float64")
        close = _close_reason(era, watermarks, now, grace)
        if len(rows) == 0 and close is None:
            continue
        batches.append(EraBatch(era=era, rows=rows, sensors=sensors, opened=key not in window.open, close=close))
    return PollPlan(batches=batches, files=files, watermarks=watermarks)


def _order(key: str, window: EraWindow, specs: dict[str, EraSpec]) -> tuple:
    era = window.open.get(key)
    if era is not None:
        return (era.compartment_id, era.start, key)
    spec = specs[key]
    return (spec.compartment_id, spec.start, key)


def apply_plan(window: EraWindow, plan: PollPlan, chunks: dict[str, int]) -> EraWindow:
    """The window after ``plan`` was published; ``chunks`` = era key -> chunks published."""
    out = copy.deepcopy(window)
    out.watermarks = dict(plan.watermarks)
    for batch in plan.batches:
        era = copy.deepcopy(batch.era)
        era.next_chunk += chunks[batch.key]
        era.rows += len(batch.rows)
        era.sensors = list(batch.sensors)
        if batch.close:
            out.open.pop(batch.key, None)
            out.closed[batch.key] = era.end
        else:
            out.open[batch.key] = era
    return out
