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
* A timestamp outside what ``datetime64[ns]`` holds (before 1677-09-21 or after
  2262-04-11) makes its row bad ("out of range"), with its line.
* ``inf``/``-inf`` cells are missing values too; ``SensorTable.warnings`` says so per column
  with the count.
* Column names are stripped of spaces; two columns with the same stripped name (``temp``
  and `` temp ``) make the file fail. Names the pipeline uses itself (``RESERVED_COLUMNS``:
  era label columns, the feature stage's long-form columns; any case) cannot name a column
  other than ``timestamp``/``compartment_id`` themselves.
* ``BadRow.line`` is the 1-based physical line (header = line 1). For Parquet there are no
  lines: data row *i* (0-based) is reported as line ``i + 2``, the line it would have in a
  CSV export with a header. A quoted CSV field spanning several lines shifts the numbering.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.durations import fixed_duration
from stages.preprocess import MAX_GRID_POINTS, grid_slots

TIMESTAMP = "timestamp"
COMPARTMENT = "compartment_id"
KEY_SEPARATOR = ":"
ERA_ID_FORMAT = "%Y-%m-%dT%H:%M:%S"
LABEL_COLUMNS = ("era_id", "compartment_id", "start_time", "end_time")
LONG_FORM_COLUMNS = ("_sensor", "_value")  # the tsfresh stage's long-form id and value columns
RESERVED_COLUMNS = frozenset({TIMESTAMP, *LABEL_COLUMNS, *LONG_FORM_COLUMNS})
TS_MIN, TS_MAX = pd.Timestamp.min, pd.Timestamp.max  # what datetime64[ns] holds
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
    warnings: list[str] = field(default_factory=list)  # file-level notes, each naming the file
    lines: np.ndarray | None = None  # each frame row's physical line (see BadRow.line)


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


def _csv_header(path: Path, gz: bool) -> list[str]:
    """The header line's fields as written (pandas renames a repeated name to ``name.1``)."""
    opener = gzip.open if gz else open
    with opener(path, "rt", newline="") as fh:
        return next(csv.reader(fh), [])


def _check_duplicates(name: str, header: list[str]) -> None:
    """InputError for two columns with the same name once spaces are stripped."""
    positions: dict[str, list[int]] = {}
    for i, col in enumerate(header):
        if str(col).strip():
            positions.setdefault(str(col).strip(), []).append(i)
    dupes = {col: where for col, where in positions.items() if len(where) > 1}
    if dupes:
        shown = "; ".join(f"'{col}' in columns {', '.join(str(i + 1) for i in where)} "
                          f"({', '.join(repr(str(header[i])) for i in where)})" for col, where in dupes.items())
        raise InputError(f"{name}: duplicate column names (after stripping spaces): {shown}")


def _check_reserved(name: str, columns: list[str]) -> None:
    """InputError for a column named like one the pipeline uses itself (any case)."""
    clash = [col for col in columns if col.lower() in RESERVED_COLUMNS and col not in (TIMESTAMP, COMPARTMENT)]
    if clash:
        raise InputError(
            f"{name}: column name(s) {', '.join(repr(c) for c in clash)} clash with names the pipeline uses "
            f"itself ({', '.join(sorted(RESERVED_COLUMNS - {TIMESTAMP, COMPARTMENT}))}, and '{TIMESTAMP}'/"
            f"'{COMPARTMENT}' in another case): rename them (eras come from --eras or --era-length, not a column)")


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
        header = _csv_header(path, gz)
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
    _check_duplicates(name, header)
    return raw, lines[~drop], bad


def _read_parquet(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: unreadable Parquet: {exc}") from exc
    _check_duplicates(str(path), table.column_names)
    try:
        frame = table.to_pandas()
    except Exception as exc:
        raise InputError(f"{path}: unreadable Parquet: {exc}") from exc
    return frame.reset_index(drop=True), np.arange(2, 2 + len(frame))


def _parse_timestamps(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 -> tz-naive UTC datetime64[ns], unparseable -> NaT; and a mask of the ones
    that parsed but lie outside what datetime64[ns] holds (also NaT in the result)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        ts = column.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(column.dtype):
        ts = column
    else:
        text = column.astype("str").where(column.notna())
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601").dt.tz_localize(None)
    out_of_range = ts.notna() & ((ts < TS_MIN) | (ts > TS_MAX))
    return ts.where(~out_of_range).astype("datetime64[ns]"), out_of_range


def _out_of_range_reason(column: pd.Series) -> pd.Series:
    return "timestamp " + column.astype("str").str.strip() + (
        f" out of range (supported: {TS_MIN:%Y-%m-%d} to {TS_MAX:%Y-%m-%d})")


def _text_to_float(column: pd.Series, fast_only: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """Text cells -> float64 (spaces stripped; "" and NA -> NaN) and a mask of cells that held
    something but not a number. Arrow's cast first (fast, but it fails on the first
    non-number), then pandas' to_numeric(errors="coerce"); None if ``fast_only`` and it failed."""
    try:
        text = pc.utf8_trim_whitespace(pa.array(column, type=pa.string(), from_pandas=True))
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if fast_only:
            return None
    text = column.where(column.isna(), column.astype("str").str.strip())
    text = text.where(text != "")
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return values, text.notna().to_numpy() & np.isnan(values)


def _numeric(raw: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (rows x columns) and a mask of cells that held something but not a number.

    The text columns go through one flat cast, column by column only when that meets a
    non-number: a pandas call per column costs about 1 ms, which made a file with 6,000
    sensor columns take minutes.
    """
    values = np.full((len(raw), len(columns)), np.nan)
    not_number = np.zeros(values.shape, dtype=bool)
    numeric = [i for i, c in enumerate(columns)
               if pd.api.types.is_bool_dtype(raw[c].dtype) or pd.api.types.is_numeric_dtype(raw[c].dtype)]
    text_at = [i for i in range(len(columns)) if i not in set(numeric)]
    if numeric:
        values[:, numeric] = raw[[columns[i] for i in numeric]].astype("float64").to_numpy(dtype="float64", na_value=np.nan)
    if not text_at or len(raw) == 0:
        return values, not_number
    flat = _text_to_float(pd.concat([raw[columns[i]] for i in text_at], ignore_index=True), fast_only=True)
    if flat is not None:
        values[:, text_at] = flat[0].reshape((len(text_at), len(raw))).T
        return values, not_number
    for i in text_at:
        values[:, i], not_number[:, i] = _text_to_float(raw[columns[i]])
    return values, not_number


def _line_ranges(lines: np.ndarray, limit: int = 4) -> str:
    """[2, 3, 4, 9] -> "lines 2-4, 9"; the first ``limit`` runs, then how many lines in all."""
    runs: list[list[int]] = []
    for line in sorted(int(x) for x in lines):
        if runs and line == runs[-1][1] + 1:
            runs[-1][1] = line
        else:
            runs.append([line, line])
    shown = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:limit])
    more = f", ... ({len(lines):,} lines)" if len(runs) > limit else ""
    return ("line " if len(lines) == 1 else "lines ") + shown + more


def _span(td: pd.Timedelta) -> str:
    """A duration for messages: 1.5 ms, 42 s, 23:00:00, 3 days 02:00:00."""
    td = pd.Timedelta(td)
    if td < pd.Timedelta(seconds=1):
        return f"{td.value / 1e6:g} ms"
    if td < pd.Timedelta(minutes=1):
        return f"{td.total_seconds():g} s"
    return str(td).removeprefix("0 days ")


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
    _check_reserved(name, list(raw.columns))

    if TIMESTAMP not in raw.columns:
        raise InputError(f"{name}: no '{TIMESTAMP}' column (columns: {', '.join(raw.columns)})")
    if len(raw) == 0:
        raise InputError(f"{name}: no rows (header only)")

    row_bad = pd.Series("", index=raw.index, dtype="str")  # first reason per row, "" = good

    def flag(mask: pd.Series, reason: str | pd.Series) -> None:
        nonlocal row_bad
        row_bad = row_bad.where(~(mask & (row_bad == "")), reason)

    timestamps, out_of_range = _parse_timestamps(raw[TIMESTAMP])
    missing_ts = raw[TIMESTAMP].isna()
    flag(missing_ts, "missing timestamp")
    if out_of_range.any():
        flag(out_of_range, _out_of_range_reason(raw[TIMESTAMP]))
    flag(timestamps.isna() & ~missing_ts, "unparseable timestamp")

    if COMPARTMENT in raw.columns:
        comp = raw[COMPARTMENT].astype("str").str.strip().where(raw[COMPARTMENT].notna(), "")
        flag(comp == "", "missing compartment_id")
        flag(comp.str.contains(KEY_SEPARATOR, regex=False), "compartment_id contains ':'")
    else:
        comp = pd.Series(default_compartment, index=raw.index, dtype="str")

    candidates = [c for c in raw.columns if c not in (TIMESTAMP, COMPARTMENT)]
    values, not_number = _numeric(raw, candidates)
    is_sensor = (~np.isnan(values)).any(axis=0)
    sensors = [c for c, keep in zip(candidates, is_sensor) if keep]
    ignored = [c for c, keep in zip(candidates, is_sensor) if not keep]
    if not sensors:
        raise InputError(f"{name}: no sensor columns (no column besides timestamp/compartment_id holds numbers)")
    values, not_number = values[:, is_sensor], not_number[:, is_sensor]
    text_rows = not_number.any(axis=1)
    if text_rows.any():
        reasons = pd.Series("", index=raw.index, dtype="str")
        first = not_number[text_rows].argmax(axis=1)
        reasons[text_rows] = [f"non-numeric value in '{sensors[i]}'" for i in first]
        flag(pd.Series(text_rows, index=raw.index), reasons)

    bad_mask = (row_bad != "").to_numpy()
    bad += [BadRow(name, int(line), str(reason)) for line, reason in zip(lines[bad_mask], row_bad[bad_mask])]
    bad.sort(key=lambda b: b.line)
    if bad_mask.all():
        raise InputError(f"{name}: every row is bad: {_describe(bad)}")

    infinite = np.isinf(values) & ~bad_mask[:, None]
    notes = [f"{name}: column '{sensors[i]}': {int(n):,} infinite value(s) (inf/-inf) taken as missing"
             for i, n in enumerate(infinite.sum(axis=0)) if n]
    values[np.isinf(values)] = np.nan

    frame = pd.DataFrame({TIMESTAMP: timestamps, COMPARTMENT: comp.astype("str")})
    frame = pd.concat([frame, pd.DataFrame(values, columns=sensors, index=raw.index)], axis=1).loc[~bad_mask]
    frame = frame.reset_index(drop=True)
    order = frame.sort_values([COMPARTMENT, TIMESTAMP], kind="stable").index.to_numpy()
    frame = frame.iloc[order].reset_index(drop=True)
    return SensorTable(path=name, frame=frame, sensors=sensors, bad_rows=bad, ignored_columns=ignored,
                       warnings=notes, lines=lines[~bad_mask][order])


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
    starts, start_out = _parse_timestamps(raw["start_time"])
    ends, end_out = _parse_timestamps(raw["end_time"])
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
        if start_out.iloc[i] or end_out.iloc[i]:
            raise InputError(f"{where}: era '{era_id}': start_time/end_time out of range "
                             f"(supported: {TS_MIN:%Y-%m-%d} to {TS_MAX:%Y-%m-%d})")
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


# --------------------------------------------------------------------------- checks on a read table


def _table_lines(table: SensorTable) -> np.ndarray:
    return table.lines if table.lines is not None else np.arange(2, 2 + len(table.frame))


def unassigned_explained(table: SensorTable, eras: list[EraSpec]) -> list[str]:
    """Why rows of ``table`` fall in no labelled era, one message per compartment naming the
    file and the lines: the labels have no era for the compartment, or the rows' timestamps
    lie outside (before, after or between) its eras."""
    ordered, slices = _era_slices(table.frame, eras)  # table.frame is sorted the same way
    covered = np.zeros(len(ordered), dtype=bool)
    for _, lo, hi in slices:
        covered[lo:hi] = True
    if covered.all():
        return []
    lines = _table_lines(table)
    labelled = sorted({e.compartment_id for e in eras})
    out = []
    for comp in pd.unique(ordered[COMPARTMENT].to_numpy()[~covered]):
        rows = np.flatnonzero(~covered & (ordered[COMPARTMENT].to_numpy() == comp))
        where = f"{table.path}: {len(rows):,} row(s) of compartment '{comp}' ({_line_ranges(lines[rows])}) are in no era"
        own = sorted((e for e in eras if e.compartment_id == comp), key=lambda e: e.start)
        if not own:
            out.append(f"{where}: the era labels have no era for compartment '{comp}' "
                       f"(they label: {', '.join(labelled) or 'none'})")
            continue
        ts = ordered[TIMESTAMP].iloc[rows]
        out.append(f"{where}: their timestamps ({ts.min()} .. {ts.max()}) lie outside its {len(own)} labelled "
                   f"era(s), which cover {own[0].start} .. {max(e.end for e in own)} (each end exclusive)")
    return out


def grid_warnings(table: SensorTable, eras: list[EraSpec] | None, era_length: str = "1D") -> list[str]:
    """For each era of ``table`` whose rows would make preprocess's regular grid pass
    MAX_GRID_POINTS (a tiny sampling step, e.g. microsecond jitter, over a long span): a
    warning naming the file and the line where a gap of that step first occurs. Preprocess
    rejects such an era (it is dead-lettered); ingest still publishes it with the others."""
    eras = fixed_eras(table.frame, era_length) if eras is None else eras
    ordered, slices = _era_slices(table.frame, sorted(eras, key=lambda e: (e.compartment_id, e.start)))
    lines = _table_lines(table)
    ts_all = ordered[TIMESTAMP].to_numpy()
    out = []
    for era, lo, hi in slices:
        if hi - lo < 2:
            continue
        slots, step = grid_slots(pd.Series(ts_all[lo:hi]))
        points = int(slots.max()) + 1
        if points <= MAX_GRID_POINTS:
            continue
        gaps = np.diff(ts_all[lo:hi]).astype("int64")
        first = lo + 1 + int(np.flatnonzero(gaps == step.value)[0])
        out.append(f"{table.path}:{int(lines[first])}: era {era.key}: readings {_span(step)} apart (the era's sampling step; "
                   f"the first such gap ends at this line) over {_span(pd.Timestamp(ts_all[hi - 1]) - pd.Timestamp(ts_all[lo]))} "
                   f"make a {points:,}-point grid (limit {MAX_GRID_POINTS:,}): preprocess will reject this era, "
                   f"which is then dead-lettered; the other eras are not affected")
    return out


def reject_future_rows(table: SensorTable, now: pd.Timestamp, horizon: pd.Timedelta) -> SensorTable:
    """The table without rows stamped more than ``horizon`` after ``now``; those become bad rows.

    A follower keeps a watermark per compartment: one row from year 2999 would close every
    era of its compartment and make all later, real rows late. InputError if no row is left.
    """
    future = (table.frame[TIMESTAMP] > now + horizon).to_numpy()
    if not future.any():
        return table
    lines = _table_lines(table)
    reason = f"more than {_span(horizon)} ahead of the clock ({now:%Y-%m-%d %H:%M:%S} UTC): rejected, it would move the watermark"
    bad = sorted([*table.bad_rows, *(BadRow(table.path, int(line), f"timestamp {ts} {reason}")
                                     for line, ts in zip(lines[future], table.frame[TIMESTAMP][future]))],
                 key=lambda b: b.line)
    if future.all():
        raise InputError(f"{table.path}: every row is bad: {_describe(bad)}")
    return replace(table, frame=table.frame.loc[~future].reset_index(drop=True), bad_rows=bad, lines=lines[~future])


# --------------------------------------------------------------------------- chunking


def chunk_rows(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """[(start, end), ...] half-open row ranges of at most batch_size rows; [] for no rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    return [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
