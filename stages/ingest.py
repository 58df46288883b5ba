"""Ingest: read sensor files and era labels, assign rows to eras, cut eras into chunks.

Input rules (decided here, see docs/stages.md):

* A sensor file is a wide CSV (``.csv``, ``.csv.gz``, any gzip) or Parquet file with a
  required ``timestamp`` column, an optional ``compartment_id`` column and one column per
  sensor. Every other column holding at least one number is a sensor; a column in which no
  cell is a number (free text such as a ``note`` column, or an empty ``Unnamed: 7`` column
  from a trailing comma) is not a sensor and is listed in ``SensorTable.ignored_columns``.
* Timestamps are ISO 8601. Naive ones are taken as UTC; ones with an offset are converted
  to UTC; the frame holds tz-naive UTC ``datetime64[ns]``.
* Empty cells and the usual NA markers (``NA``, ``NaN``, ``null`` ...) are missing values
  (NaN), which preprocessing imputes. A row is *bad*, dropped and reported, when its
  timestamp is missing or unparseable, a sensor cell is text that is not a number, its
  ``compartment_id`` is empty or contains ``:`` (the era key separator), or (CSV) it has more
  fields than the header.
* ``BadRow.line`` is the 1-based physical line (header = line 1). For Parquet there are no
  lines: data row *i* (0-based) is reported as line ``i + 2``, the line it would have in a
  CSV export with a header. A quoted CSV field spanning several lines shifts the numbering.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stages.durations import fixed_duration

TIMESTAMP = "timestamp"
COMPARTMENT = "compartment_id"
KEY_SEPARATOR = ":"
ERA_ID_FORMAT = "%Y-%m-%dT%H:%M:%S"
LABEL_COLUMNS = ("era_id", "compartment_id", "start_time", "end_time")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)")


class InputError(ValueError):
    """A sensor or label file that cannot be used; the message names the file (and line/era)."""


@dataclass(frozen=True)
class EraSpec:
    compartment_id: str
    era_id: str
    start: pd.Timestamp  # inclusive, tz-naive UTC
    end: pd.Timestamp  # exclusive

    @property
    def key(self) -> str:
        return f"{self.compartment_id}{KEY_SEPARATOR}{self.era_id}"


@dataclass(frozen=True)
class BadRow:
    path: str
    line: int  # 1-based physical line, header is line 1
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class SensorTable:
    path: str
    frame: pd.DataFrame  # timestamp, compartment_id, one float64 column per sensor
    sensors: list[str]
    bad_rows: list[BadRow]
    ignored_columns: list[str] = field(default_factory=list)  # non-numeric, not sensors


# --------------------------------------------------------------------------- reading


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


def _one_extra_field_lines(path: Path, gz: bool, n_fields: int) -> dict[int, str]:
    """Lines with exactly one field more than the header, that extra field not empty.

    With ``index_col=False`` pandas keeps such a line and silently drops its last field
    (what makes a trailing comma harmless); a real extra value must not vanish unnoticed.
    """
    found: dict[int, str] = {}
    opener = gzip.open if gz else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for record in reader:
            if len(record) == n_fields + 1 and record[-1].strip():
                found[reader.line_num] = f"malformed line: expected {n_fields} fields, saw {n_fields + 1}"
    return found


def _read_csv_text(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """All cells as strings (NA markers -> NaN), each row's physical line, malformed lines.

    Blank lines are kept while parsing (so row i maps to a physical line) and dropped after.
    Lines with too many fields are skipped by pandas with a warning naming the line; those
    become bad rows and are left out of the row -> line mapping. ``index_col=False`` stops
    pandas from turning the timestamp into the index when rows end in a trailing comma.
    """
    name = str(path)
    gz = _is_gzip(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = pd.read_csv(
                path,
                dtype=str,
                skip_blank_lines=False,
                on_bad_lines="warn",
                index_col=False,
                compression="gzip" if gz else None,
            )
        skipped: dict[int, str] = {}
        truncated = False
        for w in caught:
            text = str(w.message)
            truncated |= "loss of data" in text
            for line, reason in _SKIPPED_LINE.findall(text):
                skipped[int(line)] = f"malformed line: {reason.strip()}"
        extra = _one_extra_field_lines(path, gz, raw.shape[1]) if truncated else {}
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{name}: no rows (empty file)") from exc
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise InputError(f"{name}: unreadable CSV: {exc}") from exc

    # Physical lines 2, 3, ... minus the skipped ones, in order, are the parsed rows.
    lines = np.arange(2, 2 + len(raw) + len(skipped))
    if skipped:
        lines = lines[~np.isin(lines, list(skipped))]
    lines = lines[: len(raw)]
    drop = raw.isna().all(axis=1).to_numpy() | np.isin(lines, list(extra))  # blank or truncated
    raw = raw.loc[~drop].reset_index(drop=True)
    bad = [BadRow(name, line, reason) for line, reason in sorted({**skipped, **extra}.items())]
    return raw, lines[~drop], bad


def _read_parquet(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: unreadable Parquet: {exc}") from exc
    return frame.reset_index(drop=True), np.arange(2, 2 + len(frame))


def _parse_timestamps(column: pd.Series) -> pd.Series:
    """ISO 8601 -> tz-naive UTC datetime64[ns]; unparseable -> NaT."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        ts = column.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(column.dtype):
        ts = column.dt.tz_localize("UTC")
    else:
        text = column.astype("str").where(column.notna())
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return ts.dt.tz_localize(None).astype("datetime64[ns]")


def _numeric(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """float64 values and a mask of cells that held something but not a number."""
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("float64")
        return values, pd.Series(False, index=column.index)
    text = column.where(column.isna(), column.astype("str").str.strip())
    text = text.where(text != "")
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    return values, text.notna() & values.isna()


def _describe(bad: list[BadRow], limit: int = 3) -> str:
    shown = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:limit])
    return shown + (f"; ... ({len(bad)} in all)" if len(bad) > limit else "")


def _existing_file(path: str | Path, empty: str) -> tuple[Path, str]:
    """The path and its name for messages; InputError when it is missing or has 0 bytes."""
    p = Path(path)
    name = str(path)
    if not p.is_file():
        raise InputError(f"{name}: file not found")
    if p.stat().st_size == 0:
        raise InputError(f"{name}: {empty} (empty file)")
    return p, name


def read_sensor_file(path: str | Path, default_compartment: str = "default") -> SensorTable:
    """Read one wide sensor file; bad rows are dropped and reported, bad files raise InputError."""
    p, name = _existing_file(path, "no rows")
    if KEY_SEPARATOR in default_compartment or not default_compartment.strip():
        raise ValueError(f"default_compartment {default_compartment!r} must be non-empty, without ':'")

    if _is_parquet(p):
        raw, lines = _read_parquet(p)
        bad = []
    else:
        raw, lines, bad = _read_csv_text(p)
    raw.columns = [str(c).strip() for c in raw.columns]

    if TIMESTAMP not in raw.columns:
        raise InputError(f"{name}: no '{TIMESTAMP}' column (columns: {', '.join(raw.columns)})")
    if len(raw) == 0:
        raise InputError(f"{name}: no rows (header only)")

    row_bad = pd.Series("", index=raw.index, dtype="str")  # first reason per row, "" = good

    def flag(mask: pd.Series, reason: str) -> None:
        nonlocal row_bad
        row_bad = row_bad.where(~(mask & (row_bad == "")), reason)

    timestamps = _parse_timestamps(raw[TIMESTAMP])
    missing_ts = raw[TIMESTAMP].isna()
    flag(missing_ts, "missing timestamp")
    flag(timestamps.isna() & ~missing_ts, "unparseable timestamp")

    if COMPARTMENT in raw.columns:
        comp = raw[COMPARTMENT].astype("str").str.strip().where(raw[COMPARTMENT].notna(), "")
        flag(comp == "", "missing compartment_id")
        flag(comp.str.contains(KEY_SEPARATOR, regex=False), "compartment_id contains ':'")
    else:
        comp = pd.Series(default_compartment, index=raw.index, dtype="str")

    sensors: list[str] = []
    ignored: list[str] = []
    values: dict[str, pd.Series] = {}
    for col in raw.columns:
        if col in (TIMESTAMP, COMPARTMENT):
            continue
        vals, not_number = _numeric(raw[col])
        if vals.notna().any():
            sensors.append(col)
            values[col] = vals
            flag(not_number, f"non-numeric value in '{col}'")
        else:
            ignored.append(col)
    if not sensors:
        raise InputError(f"{name}: no sensor columns (no column besides timestamp/compartment_id holds numbers)")

    bad_mask = (row_bad != "").to_numpy()
    bad += [BadRow(name, int(line), str(reason)) for line, reason in zip(lines[bad_mask], row_bad[bad_mask])]
    bad.sort(key=lambda b: b.line)
    if bad_mask.all():
        raise InputError(f"{name}: every row is bad: {_describe(bad)}")

    frame = pd.DataFrame({TIMESTAMP: timestamps, COMPARTMENT: comp.astype("str")})
    frame = pd.concat([frame, pd.DataFrame(values)], axis=1).loc[~bad_mask]
    frame = frame.sort_values([COMPARTMENT, TIMESTAMP], kind="stable").reset_index(drop=True)
    return SensorTable(path=name, frame=frame, sensors=sensors, bad_rows=bad, ignored_columns=ignored)


# --------------------------------------------------------------------------- era labels


def _check_overlaps(eras: list[EraSpec], where: str) -> None:
    """Eras of one compartment must not overlap ([start, end) intervals may touch)."""
    by_comp: dict[str, list[EraSpec]] = {}
    for era in eras:
        by_comp.setdefault(era.compartment_id, []).append(era)
    for comp, group in by_comp.items():
        group = sorted(group, key=lambda e: (e.start, e.end))
        latest = group[0]  # the era reaching furthest so far
        for era in group[1:]:
            if era.start < latest.end:
                raise InputError(
                    f"{where}: eras '{latest.era_id}' and '{era.era_id}' overlap in compartment '{comp}' "
                    f"([{latest.start}, {latest.end}) and [{era.start}, {era.end}))"
                )
            if era.end > latest.end:
                latest = era


def read_era_labels(path: str | Path) -> list[EraSpec]:
    """Read an era label CSV (era_id, compartment_id, start_time, end_time), validated."""
    p, name = _existing_file(path, "no eras")
    raw, lines, malformed = _read_csv_text(p)
    if malformed:
        raise InputError(f"{name}:{malformed[0].line}: {malformed[0].reason}")
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in LABEL_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {', '.join(missing)} (need {', '.join(LABEL_COLUMNS)})")
    if len(raw) == 0:
        raise InputError(f"{name}: no eras (header only)")

    eras: list[EraSpec] = []
    seen: dict[tuple[str, str], int] = {}
    starts = _parse_timestamps(raw["start_time"])
    ends = _parse_timestamps(raw["end_time"])
    for i, row in raw.iterrows():
        line = int(lines[i])
        era_id = str(row["era_id"]).strip() if pd.notna(row["era_id"]) else ""
        comp = str(row["compartment_id"]).strip() if pd.notna(row["compartment_id"]) else ""
        where = f"{name}:{line}"
        if not era_id or not comp:
            raise InputError(f"{where}: era_id and compartment_id must not be empty")
        if KEY_SEPARATOR in comp:
            raise InputError(f"{where}: compartment_id '{comp}' must not contain ':'")
        start, end = starts.iloc[i], ends.iloc[i]
        if pd.isna(start) or pd.isna(end):
            raise InputError(f"{where}: era '{era_id}': unparseable start_time/end_time")
        if end <= start:
            raise InputError(f"{where}: era '{era_id}': end_time {end} is not after start_time {start}")
        if (comp, era_id) in seen:
            raise InputError(f"{where}: era '{era_id}' of compartment '{comp}' already defined on line {seen[comp, era_id]}")
        seen[comp, era_id] = line
        eras.append(EraSpec(compartment_id=comp, era_id=era_id, start=start, end=end))
    _check_overlaps(eras, name)
    return eras


# --------------------------------------------------------------------------- era assignment


def _era_slices(table: pd.DataFrame, eras: list[EraSpec]) -> tuple[pd.DataFrame, list[tuple[EraSpec, int, int]]]:
    """The table sorted by (compartment, timestamp) and each era's [lo, hi) row range in it."""
    ordered = table.sort_values([COMPARTMENT, TIMESTAMP], kind="stable").reset_index(drop=True)
    comp = ordered[COMPARTMENT].to_numpy()
    ts = ordered[TIMESTAMP].to_numpy()
    bounds: dict[str, tuple[int, int]] = {}
    if len(ordered):
        change = np.flatnonzero(comp[1:] != comp[:-1]) + 1
        starts = np.concatenate([[0], change])
        stops = np.concatenate([change, [len(ordered)]])
        bounds = {str(comp[a]): (int(a), int(b)) for a, b in zip(starts, stops)}
    slices = []
    for era in eras:
        if era.compartment_id not in bounds:
            continue
        a, b = bounds[era.compartment_id]
        lo = a + int(np.searchsorted(ts[a:b], era.start.to_datetime64(), side="left"))
        hi = a + int(np.searchsorted(ts[a:b], era.end.to_datetime64(), side="left"))
        slices.append((era, lo, hi))
    return ordered, slices


def fixed_eras(table: pd.DataFrame, era_length: str = "1D") -> list[EraSpec]:
    """Periods of ``era_length`` aligned to the Unix epoch (so '1D' = UTC days), per compartment,
    holding at least one row; era_id is the period start as ``YYYY-MM-DDTHH:MM:SS``."""
    length = fixed_duration(era_length, "era_length")
    if len(table) == 0:
        return []
    starts = table[TIMESTAMP].dt.floor(length)
    periods = pd.DataFrame({COMPARTMENT: table[COMPARTMENT].to_numpy(), "start": starts.to_numpy()})
    periods = periods.drop_duplicates().sort_values([COMPARTMENT, "start"], kind="stable")
    return [
        EraSpec(compartment_id=str(c), era_id=s.strftime(ERA_ID_FORMAT), start=s, end=s + length)
        for c, s in zip(periods[COMPARTMENT], periods["start"])
    ]


def assign_eras(
    table: pd.DataFrame, eras: list[EraSpec] | None = None, era_length: str = "1D"
) -> list[tuple[EraSpec, pd.DataFrame]]:
    """Split a sensor frame into its eras, ordered by (compartment, start).

    Without ``eras``: fixed periods (see :func:`fixed_eras`). With ``eras``: each labelled
    era gets the rows of its compartment in [start, end); rows outside every era are dropped
    (count them with :func:`unassigned_rows`). Eras without rows are left out either way.
    """
    missing = [c for c in (TIMESTAMP, COMPARTMENT) if c not in table.columns]
    if missing:
        raise ValueError(f"assign_eras: the table has no {', '.join(missing)} column")
    if eras is None:
        eras = fixed_eras(table, era_length)
    else:
        _check_overlaps(eras, "era labels")
    ordered, slices = _era_slices(table, sorted(eras, key=lambda e: (e.compartment_id, e.start)))
    return [(era, ordered.iloc[lo:hi].reset_index(drop=True)) for era, lo, hi in slices if hi > lo]


def unassigned_rows(table: pd.DataFrame, eras: list[EraSpec]) -> int:
    """How many rows of ``table`` fall in no era of ``eras`` (what assign_eras drops)."""
    _, slices = _era_slices(table, eras)
    return len(table) - sum(hi - lo for _, lo, hi in slices)


# --------------------------------------------------------------------------- chunking


def chunk_rows(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """[(start, end), ...] half-open row ranges of at most batch_size rows; [] for no rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    return [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
