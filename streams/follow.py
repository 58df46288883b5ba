"""`erastream ingest --follow DIR`: publish sensor files to eras.raw as they land in a directory.

A :class:`DirectoryFollower` polls the directory. Each poll takes the new files (sorted by
name; suffixes .csv, .csv.gz, .parquet, .pq; dotfiles are ignored) whose size and mtime
have not changed for one poll interval (seen unchanged by the previous poll, or last
modified at least one interval ago), so a file still being written is left for later.
Each file is validated with ``stages.ingest.read_sensor_file``: a bad one is reported with
its error and remembered as failed, nothing of it is published, and it is tried again only
when its content changes. The rows of the valid files are cut into eras
(``stages.era_window.plan_poll``) and published as chunks on eras.raw with the era kept
open: chunk_index continues across files and polls (``last=False``) until the era closes,
by data past its end or by the clock (end + grace); then its final chunk says ``last=True``
with ``chunk_count`` set (that chunk may carry no rows). Rows for an era that already
closed are counted as late and not published.

State: one JSON file per followed directory, ``DATA_DIR/follow/<hash of the resolved
path>.json``: the files done (size, mtime_ns, sha256, rows), the failed ones (with their
error), the open eras (next chunk index, rows so far, bounds, sensors), the closed era keys,
per-compartment watermarks. A published file whose content later changes is reported and
not published again (its rows would double the ones already sent): new data belongs in new
files. A new name whose content equals a published file's (sha256) is skipped as a copy.

Delivery: why a crash neither loses nor doubles an era
------------------------------------------------------
1. Before a poll publishes anything, the state file records that poll as *pending*: its
   files (name, size, mtime, sha256) and the clock reading it used. The open-era window in
   the file is still the one from before the poll.
2. Everything the poll publishes goes out in one Kafka transaction; consumers read
   ``read_committed``, so they see the whole poll or none of it.
3. Right after the commit the state file is rewritten atomically (temp file, fsync,
   rename): those files done, the new window, no pending poll.

If the process dies between 2 and 3, the commit may or may not have happened. The
restarted follower finds the pending poll and runs it again, first and on its own, from the
saved pre-poll window with the recorded clock: the same files give the same eras, rows and
chunk indices. If the first commit did happen, downstream gets those chunks twice, which is
harmless: the era assembler (streams/assembler.py) puts a chunk into its chunk_index slot,
so an identical copy overwrites an identical chunk; a repeated chunk 0 restarts the era with
the same content; chunks of an era that downstream already finished are skipped; and the
sink stores a result once (deduplication tokens, ReplacingMergeTree). If a pending file
changed or vanished meanwhile, the exact replay is impossible: the follower says so and
treats the directory as new from the saved window (each of those files is then published
once more, in its new form).

The producer's transactional.id is fixed per directory, so a restarted follower fences a
stuck predecessor and aborts its unfinished transaction at once; a lock file next to the
state file keeps two followers on one host off the same directory.

Open eras and downstream: preprocess buffers an open era's chunks and commits its offsets
only up to that era's first chunk, so an era must close within the topic's retention
(7 days by default) and its chunks stay in preprocess's memory until it closes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import pandas as pd

from schemas.codec import EraChunk, encode_era_chunk
from stages.durations import fixed_duration
from stages.era_window import EraBatch, EraWindow, FileEras, SourceRows, apply_plan, plan_poll
from stages.ingest import BadRow, InputError, grid_warnings, read_era_labels, read_sensor_file, reject_future_rows
from streams import failpoints
from streams.commit import Output, TransactionAborted, Transactions, transactions_for
from streams.ingest import SUFFIXES
from streams.processors import era_slices
from streams.settings import Settings
from streams.topics import ERAS_RAW

log = logging.getLogger(__name__)

STATE_VERSION = 1
INCOMPLETE_LINE_POLLS = 10  # a CSV whose last line has no newline yet waits this many poll intervals
StopFlag = Callable[[], bool]


class FollowError(RuntimeError):
    """The follower cannot start (no such directory, another follower holds it, bad state file)."""


def utc_now() -> pd.Timestamp:
    """The wall clock as tz-naive UTC, like the timestamps of the data."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


@dataclass
class PollReport:
    """What one poll did."""

    published: list[FileEras] = field(default_factory=list)  # files whose rows were taken
    failed: dict[str, str] = field(default_factory=dict)  # file -> error; nothing of it published
    duplicates: dict[str, str] = field(default_factory=dict)  # file -> the published file it copies
    bad_rows: list[BadRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # each names its file (and line)
    opened: list[str] = field(default_factory=list)  # era keys
    closed: dict[str, str] = field(default_factory=dict)  # era key -> reason
    rows: int = 0  # rows published
    late_rows: int = 0
    chunks: int = 0
    bytes: int = 0
    replayed: bool = False  # this poll re-ran a pending poll of a previous process


@dataclass
class FollowTotals:
    polls: int = 0
    files: int = 0
    failed: int = 0
    rows: int = 0
    chunks: int = 0
    late_rows: int = 0
    eras_closed: int = 0


@dataclass
class DirectoryFollower:
    """Polls ``directory`` and publishes new sensor files to eras.raw, keeping eras open.

    ``grace``: an open era closes once the wall clock passes its end by this much (``None``:
    only when data past its end arrives; ``0``: at once). ``poll_interval``: seconds between
    polls, also how long a file's size must stay unchanged before it is read.
    """

    settings: Settings
    directory: Path
    eras_file: Path | None = None
    era_length: str = "1D"
    grace: pd.Timedelta | None = pd.Timedelta(minutes=10)
    poll_interval: float = 5.0
    clock: Callable[[], pd.Timestamp] = utc_now
    on_event: Callable[[str], None] | None = None
    future_horizon: pd.Timedelta = pd.Timedelta(days=1)  # rows stamped later than clock + this are bad rows

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        if not self.directory.is_dir():
            raise FollowError(f"{self.directory}: not a directory")
        if self.poll_interval <= 0:
            raise FollowError(f"poll interval must be positive, got {self.poll_interval}")
        if self.grace is not None and self.grace < pd.Timedelta(0):
            raise FollowError(f"grace must not be negative, got {self.grace}")
        self.labels = read_era_labels(self.eras_file) if self.eras_file else None
        if self.labels is None:
            fixed_duration(self.era_length, "era_length")
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        self.state_path = Path(self.settings.data_dir).resolve() / "follow" / f"{digest}.json"
        self.transactional_id = f"erastream-follow-{digest}"
        self._saved: str | None = None
        self.state = self._load_state()
        self.totals = FollowTotals()
        self._seen: dict[str, tuple[int, int]] = {}
        self._warned: set[str] = set()
        self._unreadable: dict[str, str] = {}  # name -> error last reported (retried every poll)
        self._transactions: Transactions | None = None
        self._lock: IO | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Take the directory's lock and start the transactional producer."""
        self.lock()
        if self._transactions is None:
            self._transactions = transactions_for(self.settings, self.transactional_id, "follow")
            self._transactions.producer  # fences a predecessor and aborts its open transaction

    def lock(self) -> None:
        """Take the directory's lock (one follower per directory on a host), or raise FollowError."""
        if self._lock is None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.state_path.with_suffix(".lock"), "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise FollowError(f"{self.directory} is already followed by another process (pid {holder})") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._lock = handle

    def close(self) -> None:
        if self._transactions is not None:
            self._transactions.close()
            self._transactions = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run(self, should_stop: StopFlag) -> FollowTotals:
        """Poll until ``should_stop()``; a stop request ends the loop after the current poll."""
        self.open()
        self._event(f"following {self.directory} (state {self.state_path}, poll {self.poll_interval:g} s, "
                    f"grace {'never' if self.grace is None else self.grace})")
        try:
            while not should_stop():
                try:
                    self.poll_once()
                except TransactionAborted as exc:
                    log.warning("%s; the poll is retried", exc)  # its pending record stays: the retry is exact
                deadline = time.monotonic() + self.poll_interval
                while not should_stop() and time.monotonic() < deadline:
                    time.sleep(min(0.1, self.poll_interval))
        finally:
            self.close()
        return self.totals

    # ------------------------------------------------------------------ one poll
    def poll_once(self) -> PollReport:
        """Scan, validate, publish in one transaction, then save the state."""
        self.open()
        pending = self.state.get("pending")
        if pending is not None:
            replay = self._replayable(pending)
            if replay is not None:
                self._event(f"re-running the poll a previous follower did not finish ({len(replay)} file(s))")
                report = self._poll(replay, pd.Timestamp(pending["now"]), replayed=True)
                return report
            log.warning("the unfinished poll of a previous follower cannot be replayed exactly "
                        "(a file changed or vanished); going on from the saved state")
            self.state["pending"] = None
        return self._poll(self._scan(), self.clock())

    def _scan(self) -> list[tuple[str, Path, tuple[int, int]]]:
        """New files whose size and mtime held for one poll interval, sorted by name."""
        ready = []
        wall = time.time()
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            if not path.is_file():
                self._report_unreadable(name, f"{path}: not a regular file (a directory, FIFO or broken link); skipped")
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._report_unreadable(name, f"{path}: cannot read: {exc.strerror or exc}")
                continue
            sig = (st.st_size, st.st_mtime_ns)
            previous = self._seen.get(name)
            self._seen[name] = sig
            done = self.state["files"].get(name)
            if done is not None and (done["size"], done["mtime_ns"]) == sig:
                continue
            failed = self.state["failed"].get(name)
            if failed is not None and (failed["size"], failed["mtime_ns"]) == sig:
                continue
            if previous != sig and wall - st.st_mtime < self.poll_interval:
                continue  # still being written, perhaps: look again next poll
            if wall - st.st_mtime < INCOMPLETE_LINE_POLLS * self.poll_interval and not _ends_a_line(path):
                continue  # a writer that stalled in the middle of a line: wait for the rest
            if done is not None:
                try:
                    same = _sha256(path) == done["sha256"]
                except OSError as exc:
                    self._report_unreadable(name, f"{path}: cannot read: {exc.strerror or exc}")
                    continue
                if same:
                    done["size"], done["mtime_ns"] = sig  # touched, same content
                    continue
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("%s changed after it was published; not published again "
                                "(write new data to new files)", path)
                continue
            ready.append((name, path, sig))
        return ready

    def _replayable(self, pending: dict) -> list[tuple[str, Path, tuple[int, int]]] | None:
        files = []
        for rec in pending["files"]:
            path = self.directory / rec["name"]
            try:
                st = path.stat()
                if _sha256(path) != rec["sha256"]:
                    return None
            except OSError:
                return None
            files.append((rec["name"], path, (st.st_size, st.st_mtime_ns)))
        return files

    def _poll(self, files: list[tuple[str, Path, tuple[int, int]]], now: pd.Timestamp, replayed: bool = False) -> PollReport:
        report = PollReport(replayed=replayed)
        sources: list[SourceRows] = []
        records: dict[str, dict] = {}
        for name, path, (size, mtime_ns) in files:
            try:
                sha = _sha256(path)
            except FileNotFoundError:
                continue  # removed since the scan
            except OSError as exc:  # no permission, I/O error: say so, try again next poll
                self._report_unreadable(name, f"{path}: cannot read: {exc.strerror or exc}")
                report.failed[name] = self._unreadable[name]
                continue
            self._unreadable.pop(name, None)
            record = {"size": size, "mtime_ns": mtime_ns, "sha256": sha}
            failed = self.state["failed"].get(name)
            if failed is not None and failed["sha256"] == sha:
                failed.update(size=size, mtime_ns=mtime_ns)  # touched, still the same bad file
                continue
            copy_of = next((n for n, r in [*self.state["files"].items(), *records.items()] if r["sha256"] == sha and n != name), None)
            if copy_of is not None and not replayed:
                self.state["files"][name] = {**record, "rows": 0, "duplicate_of": copy_of, "at": _iso_now()}
                report.duplicates[name] = copy_of
                self._event(f"skipped {name}: same content as {copy_of}, already published")
                continue
            try:
                table = reject_future_rows(read_sensor_file(path), now, self.future_horizon)
            except InputError as exc:
                self.state["failed"][name] = {**record, "error": str(exc), "at": _iso_now()}
                report.failed[name] = str(exc)
                self.totals.failed += 1
                log.error("file failed, nothing of it published: %s", exc)
                if self.on_event:
                    self.on_event(f"file failed, nothing of it published: {exc}")
                continue
            self.state["failed"].pop(name, None)
            sources.append(SourceRows(name, table.frame, table.sensors))
            records[name] = record
            report.bad_rows += table.bad_rows
            report.warnings += table.warnings + grid_warnings(table, self.labels, self.era_length)

        window = EraWindow.from_json(self.state["window"])
        plan = plan_poll(window, sources, now=now, grace=self.grace, labels=self.labels, era_length=self.era_length)
        chunks: dict[str, int] = {}
        if plan.batches:
            self.state["pending"] = {"files": [{"name": n, **r} for n, r in records.items()], "now": now.isoformat()}
            self._save_state()
            chunks = self._publish(plan.batches, report)
            failpoints.hit("follow.after_commit")
            window = apply_plan(window, plan, chunks)

        for stats in plan.files:
            self.state["files"][stats.name] = {
                **records[stats.name], "rows": stats.rows, "eras": stats.eras, "late_rows": stats.late_rows,
                "unassigned_rows": stats.unassigned_rows, "at": _iso_now(),
            }
            report.published.append(stats)
            report.late_rows += stats.late_rows
        report.opened = [b.key for b in plan.batches if b.opened]
        report.closed = {b.key: b.close for b in plan.batches if b.close}
        self.state["window"] = window.to_json()
        self.state["late_rows"] = self.state.get("late_rows", 0) + report.late_rows
        self.state["pending"] = None
        self._save_state()

        self.totals.polls += 1
        self.totals.files += len(plan.files)
        self.totals.rows += report.rows
        self.totals.chunks += report.chunks
        self.totals.late_rows += report.late_rows
        self.totals.eras_closed += len(report.closed)
        self._describe(report, plan.batches, chunks, window)
        return report

    def _publish(self, batches: list[EraBatch], report: PollReport) -> dict[str, int]:
        """All batches of a poll in one transaction; chunk counts per era key."""
        counts: dict[str, int] = {}
        outputs: list[Output] = []
        for batch in batches:
            chunks = self._chunks(batch)
            for chunk in chunks:
                value = encode_era_chunk(chunk)
                outputs.append(Output(ERAS_RAW, batch.key, value))
                report.bytes += len(value)
            counts[batch.key] = len(chunks)
            report.chunks += len(chunks)
            report.rows += len(batch.rows)
        self._transactions.commit(outputs)
        return counts

    def _chunks(self, batch: EraBatch) -> list[EraChunk]:
        """The batch's rows as chunks numbered on from the era's last one; the last says last=True
        when the batch closes the era (an empty batch gives one chunk without rows)."""
        era = batch.era
        slices = list(era_slices(batch.rows, self.settings.batch_size))
        out = []
        for i, piece in enumerate(slices):
            last = batch.close is not None and i == len(slices) - 1
            index = era.next_chunk + i
            sensors = list(batch.sensors) if piece.columns is None else [s for s in batch.sensors if s in piece.columns]
            out.append(EraChunk(
                era_key=era.key, compartment_id=era.compartment_id, era_id=era.era_id, run_id=self.settings.run_id,
                feature_set=self.settings.feature_set, stage="ingest", chunk_index=index,
                chunk_count=index + 1 if last else None, last=last, row_start=era.rows + piece.start,
                row_end=era.rows + piece.end, sensors=sensors, payload=piece.payload,
                era_start=_utc(era.start), era_end=_utc(era.end),
            ))
        return out

    # ------------------------------------------------------------------ reporting
    def _describe(self, report: PollReport, batches: list[EraBatch], chunks: dict[str, int], window: EraWindow) -> None:
        for stats in report.published:
            text = f"published {stats.name}: {stats.rows:,} rows -> era(s) {', '.join(stats.eras) or '-'}"
            if stats.opened:
                text += f"; opened {', '.join(stats.opened)}"
            if stats.late_rows:
                text += f"; {stats.late_rows:,} late row(s) dropped (their era had closed)"
            if stats.unassigned_rows:
                text += f"; {stats.unassigned_rows:,} row(s) in no labelled era"
            self._event(text)
        for bad in report.bad_rows[:20]:
            self._warn(f"bad row {bad}")
        if len(report.bad_rows) > 20:
            self._warn(f"... {len(report.bad_rows) - 20} more bad rows")
        for text in report.warnings:
            self._warn(f"warning: {text}")
        for batch in batches:
            if batch.close:
                self._event(f"closed era {batch.key}: {batch.close} ({batch.era.rows + len(batch.rows):,} rows, "
                            f"{batch.era.next_chunk + chunks.get(batch.key, 0)} chunks)")

    def _event(self, text: str) -> None:
        log.info("%s", text)
        if self.on_event:
            self.on_event(text)

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        if self.on_event:
            self.on_event(text)

    def _report_unreadable(self, name: str, error: str) -> None:
        """Say once (until the error changes) that a file cannot be read; it is tried every poll."""
        if self._unreadable.get(name) != error:
            self._unreadable[name] = error
            self._warn(f"file skipped for now: {error}")

    # ------------------------------------------------------------------ state file
    def _load_state(self) -> dict:
        fresh = {"version": STATE_VERSION, "directory": str(self.directory), "eras": self._era_config(),
                 "files": {}, "failed": {}, "window": EraWindow().to_json(), "late_rows": 0, "pending": None}
        if not self.state_path.exists():
            return fresh
        try:
            self._saved = self.state_path.read_text()
            state = json.loads(self._saved)
        except (OSError, ValueError) as exc:
            raise FollowError(f"{self.state_path}: unreadable follow state ({exc}); move it away to start over") from None
        if state.get("version") != STATE_VERSION:
            raise FollowError(f"{self.state_path}: follow state version {state.get('version')}, expected {STATE_VERSION}")
        if state.get("eras") != fresh["eras"] and state["window"]["open"]:
            log.warning("era definition changed from %s to %s while eras are open; those close as usual, "
                        "new rows go to the new eras", state.get("eras"), fresh["eras"])
        state["eras"] = fresh["eras"]
        return {**fresh, **state}

    def _era_config(self) -> str:
        return f"labels:{Path(self.eras_file).resolve()}" if self.eras_file else f"length:{self.era_length}"

    def _save_state(self) -> None:
        """Write temp file, fsync, rename: a crash leaves the old state or the new, never half."""
        text = json.dumps(self.state, indent=1, sort_keys=True)
        if text == self._saved:
            return  # an idle poll: nothing to write
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.state_path.name, suffix=".tmp", dir=self.state_path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._saved = text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ends_a_line(path: Path) -> bool:
    """False for a plain CSV whose last byte is not a newline (its last line may be half
    written); True otherwise (gzip and Parquet: a truncated file fails to read instead)."""
    try:
        with path.open("rb") as fh:
            if fh.read(4)[:2] == b"\x1f\x8b" or path.name.lower().endswith((".parquet", ".pq")):
                return True
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) in (b"\n", b"\r")
    except OSError:
        return True  # let the read report it


def _iso_now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat()


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts
