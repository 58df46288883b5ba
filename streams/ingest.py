"""Publishing sensor files to eras.raw.

Every file is validated before anything is sent, and all eras of one call go out
in one Kafka transaction: consumers (read_committed) see a file's data whole or
not at all.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from schemas.codec import EraChunk, encode_era_chunk
from stages.ingest import (
    BadRow, EraSpec, InputError, SensorTable, assign_eras, grid_warnings, read_era_labels, read_sensor_file,
    unassigned_explained,
)
from streams.commit import Output, Transactions, transactions_for
from streams.processors import era_chunks
from streams.slots import transactional_id
from streams.settings import Settings
from streams.topics import ERAS_RAW

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


@dataclass
class IngestReport:
    """What one ingest call read, published and left out."""

    files: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    eras: list[str] = field(default_factory=list)
    chunks: int = 0
    bytes: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # each names its file (and line)
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


class NothingIngested(InputError):
    """No row of the input went out: every file failed, or no row fell in an era."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


Progress = Callable[[str, int, int, str], None]  # (what, done, total, detail)


def _rate(report: "IngestReport", started: float) -> str:
    seconds = max(time.perf_counter() - started, 1e-9)
    return f"{report.rows:,} rows, {report.bytes / 1e6:.1f} MB, {report.bytes / 1e6 / seconds:.1f} MB/s"


def input_files(path: Path) -> list[Path]:
    """A file, or the sensor files in a directory, sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
        if not files:
            raise InputError(f"{path}: no .csv, .csv.gz or .parquet files in this directory")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such file")
    return [path]


def read_tables(paths: list[Path], report: IngestReport) -> list[SensorTable]:
    """Validated tables; a file that fails validation is reported and left out whole."""
    tables = []
    for path in paths:
        try:
            table = read_sensor_file(path)
        except InputError as exc:
            report.failed[str(path)] = str(exc)
            log.error("%s", exc)
            continue
        tables.append(table)
        report.files.append(str(path))
        report.bad_rows.extend(table.bad_rows)
        report.warnings.extend(table.warnings)
    return tables


def check_tables(tables: list[SensorTable], eras: list[EraSpec] | None, era_length: str, report: IngestReport) -> None:
    """Warnings, per file, for rows in no labelled era and for eras whose grid would explode."""
    for table in tables:
        if eras is not None:
            report.warnings.extend(unassigned_explained(table, eras))
        report.warnings.extend(grid_warnings(table, eras, era_length))


def _nothing(report: IngestReport, path: Path) -> str:
    if not report.files:
        return f"nothing ingested from {path}: every file failed ({'; '.join(report.failed.values())})"
    return f"nothing ingested from {path}: no row of {len(report.files)} file(s) falls in a labelled era"


def plan_eras(tables: list[SensorTable], eras: list[EraSpec] | None, era_length: str) -> tuple[list[tuple[EraSpec, pd.DataFrame]], list[str]]:
    """All tables together, cut into eras (an era may span files)."""
    sensors: list[str] = []
    for table in tables:
        sensors += [s for s in table.sensors if s not in sensors]
    frame = pd.concat([t.frame for t in tables], ignore_index=True) if tables else pd.DataFrame()
    if frame.empty:
        return [], sensors
    frame = frame.sort_values(["compartment_id", "timestamp"], kind="stable").reset_index(drop=True)
    return assign_eras(frame, eras, era_length), sensors


def publish(
    settings: Settings,
    path: Path,
    eras_file: Path | None = None,
    era_length: str = "1D",
    progress: Progress | None = None,
    transactions: Transactions | None = None,
) -> IngestReport:
    """Validate, cut into eras and chunks, and publish in one transaction.

    The transactional.id is this host's ingest slot, so an ingest killed mid-transaction is
    fenced (its transaction aborted) by the next one instead of blocking read_committed
    readers for the transaction timeout. Raises TransactionAborted when nothing was published,
    NothingIngested (an InputError that carries the report) when every file failed or no row
    falls in an era.
    """
    started = time.perf_counter()
    report = IngestReport()
    labels = read_era_labels(eras_file) if eras_file else None
    tables = read_tables(input_files(path), report)
    check_tables(tables, labels, era_length, report)
    planned, sensors = plan_eras(tables, labels, era_length)
    if not planned:
        report.seconds = time.perf_counter() - started
        raise NothingIngested(_nothing(report, path), report)
    transactions = transactions or transactions_for(
        settings, transactional_id(settings.data_dir / "slots", "ingest"), "ingest")

    def outputs() -> Iterator[Output]:
        for i, (spec, frame) in enumerate(planned):
            era_sensors = [s for s in sensors if s in frame.columns]
            columns = ["timestamp", *era_sensors]
            template = EraChunk(
                era_key=spec.key, compartment_id=spec.compartment_id, era_id=spec.era_id, run_id=settings.run_id,
                feature_set=settings.feature_set, stage="ingest", chunk_index=0, last=False, row_start=0, row_end=0,
                sensors=era_sensors, payload=b"", era_start=_utc(spec.start), era_end=_utc(spec.end),
            )
            for chunk in era_chunks(frame[columns].reset_index(drop=True), template, "ingest", settings.batch_size):
                value = encode_era_chunk(chunk)
                yield Output(ERAS_RAW, spec.key, value)
                report.chunks += 1
                report.bytes += len(value)
            report.rows += len(frame)
            report.eras.append(spec.key)
            if progress:
                progress("eras", i + 1, len(planned), _rate(report, started))

    transactions.commit(outputs())
    report.seconds = time.perf_counter() - started
    return report


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts
