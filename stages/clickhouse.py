"""ClickHouse access: one client API for a server and for embedded chDB, the DDL, and the writer.

CLICKHOUSE_URL=http(s)://user:password@host:port/database names a server; unset, an
embedded chDB (clickhouse-connect's interface="chdb") keeps its data in a local
directory. chDB locks that directory: one process at a time may open it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

DDL_DIR = Path(__file__).resolve().parent.parent / "infra" / "clickhouse"

FEATURE_COLUMNS = [
    "compartment_id", "era_id", "sensor", "feature", "value", "source", "feature_set", "run_id",
    "version", "computed_at",
]
ROLLING_COLUMNS = [
    "compartment_id", "era_id", "sensor", "window", "timestamp", "mean", "std", "min", "max", "run_id",
    "version", "computed_at",
]


class ClickHouseError(RuntimeError):
    """ClickHouse cannot be reached or opened; the message says which and why."""


class ClickHouseUnavailable(ClickHouseError):
    """A transient failure (server down, network): retry later."""


def connect(url: str | None, path: Path) -> Any:
    """A clickhouse-connect client for the server at `url`, or embedded chDB at `path`."""
    import clickhouse_connect

    if not url:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClickHouseUnavailable(f"cannot open embedded ClickHouse in {path}: {exc.strerror}") from None
        if chdb_locked(path):
            raise ClickHouseError(
                f"the embedded ClickHouse in {path} is in use by another process (a running sink?); "
                "stop it or set CLICKHOUSE_URL to a server"
            )
        try:
            return clickhouse_connect.get_client(interface="chdb", path=str(Path(path).resolve()))
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise ClickHouseError(
                    f"the embedded ClickHouse in {path} is in use by another process (a running sink?); "
                    "stop it or set CLICKHOUSE_URL to a server"
                ) from exc
            problem = _unwritable(Path(path))
            if problem:  # a read-only or full filesystem: it can come back
                raise ClickHouseUnavailable(f"cannot open embedded ClickHouse in {path}: {problem}") from exc
            raise ClickHouseError(f"cannot open embedded ClickHouse in {path}: {exc}") from exc
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ClickHouseError(f"CLICKHOUSE_URL must start with http:// or https://, got {redact_url(url)!r}")
    try:
        return clickhouse_connect.get_client(
            host=parsed.hostname or "localhost",
            port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
            username=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            database=(parsed.path or "/").strip("/") or "default",
            secure=parsed.scheme == "https",
        )
    except Exception as exc:  # `from None`: the driver's own exception is not shown, only its scrubbed text
        raise ClickHouseUnavailable(
            f"cannot reach ClickHouse at {redact_url(url)}: {scrub_password(str(exc), url)}"
        ) from None


def _unwritable(path: Path) -> str | None:
    """Why files cannot be written in `path` (strerror), or None if they can."""
    probe = path / f".erastream-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for every message and log line."""
    try:
        parsed = urlparse(url)
        password = parsed.password
    except ValueError:  # a port that is not a number, say: show no credentials at all
        return url.rpartition("@")[2] if "@" in url else url
    if password is None:
        return url
    netloc = parsed.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return parsed._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def scrub_password(text: str, url: str) -> str:
    """`text` without the URL's password, as written or percent-decoded."""
    try:
        password = urlparse(url).password
    except ValueError:
        password = None
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def chdb_locked(path: Path) -> bool:
    """Whether another process holds the embedded ClickHouse directory.

    chDB, like a ClickHouse server, holds an exclusive flock on `<path>/status` while it
    runs and removes the file when it closes. (Opening a held directory fails with a
    message that does not name the lock; the lock is only printed to stderr.)
    """
    status = Path(path) / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def apply_schema(client: Any) -> list[str]:
    """Run every infra/clickhouse/*.sql in order; each is idempotent (IF NOT EXISTS)."""
    applied = []
    for sql_file in sorted(DDL_DIR.glob("*.sql")):
        for statement in _statements(sql_file.read_text()):
            client.command(statement)
        applied.append(sql_file.name)
    return applied


def _statements(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


ERA_COLUMNS = [
    "compartment_id", "era_id", "run_id", "feature_set", "era_start", "era_end", "rows", "sensors",
    "tsfresh_chunks", "rolling_chunks", "tsfresh_at", "rolling_at", "stored_at",
]


@dataclass
class EraRecord:
    """What one write knows of one era: the chunks it stored of one source (chunk_index -> feature rows).

    Records are only inserted; the eras table folds them (see infra/clickhouse/003_eras.sql).
    """

    compartment_id: str
    era_id: str
    run_id: str
    feature_set: str
    era_start: pd.Timestamp
    era_end: pd.Timestamp
    rows: int
    sensors: list[str]
    tsfresh_features: int = 0
    rolling_features: int = 0
    tsfresh_at: pd.Timestamp | None = None
    rolling_at: pd.Timestamp | None = None
    tsfresh_chunks: dict[int, int] | None = None
    rolling_chunks: dict[int, int] | None = None


def era_frame(records: list[EraRecord]) -> pd.DataFrame:
    """eras rows for insert; a record without chunk maps stores its feature counts as chunk 0."""
    def chunks(given: dict[int, int] | None, total: int) -> tuple[list[int], list[int]]:
        items = sorted((given if given is not None else ({0: total} if total else {})).items())
        return ([int(k) for k, _ in items], [int(v) for _, v in items])

    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame({
        "compartment_id": [r.compartment_id for r in records],
        "era_id": [r.era_id for r in records],
        "run_id": [r.run_id for r in records],
        "feature_set": [r.feature_set for r in records],
        "era_start": [_utc(r.era_start) for r in records],
        "era_end": [_utc(r.era_end) for r in records],
        "rows": np.array([r.rows for r in records], dtype="uint64"),
        "sensors": [list(r.sensors) for r in records],
        "tsfresh_chunks": [chunks(r.tsfresh_chunks, r.tsfresh_features) for r in records],
        "rolling_chunks": [chunks(r.rolling_chunks, r.rolling_features) for r in records],
        "tsfresh_at": [_utc(r.tsfresh_at) for r in records],
        "rolling_at": [_utc(r.rolling_at) for r in records],
        "stored_at": [now] * len(records),
    })


class ClickHouseWriter:
    """Idempotent writes: deterministic versions plus insert deduplication tokens."""

    def __init__(self, client: Any):
        self.client = client
        self._types: dict[str, dict[str, str]] = {}

    def write_features(self, frame: pd.DataFrame, token: str) -> None:
        self._insert("era_features", frame[FEATURE_COLUMNS], token)

    def write_rolling(self, frame: pd.DataFrame, token: str) -> None:
        self._insert("rolling_features", frame[ROLLING_COLUMNS], token)

    def write_eras(self, records: list[EraRecord], token: str) -> None:
        """One insert for many era records; nothing is read back (the table folds them)."""
        if records:
            self._insert("eras", era_frame(records)[ERA_COLUMNS], token)

    def upsert_era(self, record: EraRecord) -> None:
        """One record, inserted; the eras table merges it with the era's other records."""
        frame = era_frame([record])[ERA_COLUMNS]
        try:
            self.client.insert_df("eras", frame)
        except Exception as exc:
            raise classify_error(exc) from exc

    def stored(self, tokens: dict[str, str]) -> set[str]:
        """Which of these content tokens (token -> run id) the ledger has: messages stored before."""
        if not tokens:
            return set()
        try:
            rows = self.client.query(
                "SELECT DISTINCT token FROM stored_messages WHERE run_id IN {runs:Array(String)} "
                "AND token IN {tokens:Array(String)}",
                parameters={"runs": sorted(set(tokens.values())), "tokens": list(tokens)},
            ).result_rows
        except Exception as exc:
            raise classify_error(exc) from exc
        return {r[0] for r in rows}

    def write_stored(self, tokens: dict[str, str], token: str) -> None:
        """Record content tokens (token -> run id) in the ledger, after their rows went in."""
        frame = pd.DataFrame({"run_id": list(tokens.values()), "token": list(tokens),
                              "stored_at": pd.Timestamp.now(tz="UTC")})
        self._insert("stored_messages", frame, token)

    def _plain_types(self, table: str, columns: list[str]) -> list[str]:
        """The table's column types with LowCardinality dropped: the server builds those dictionaries
        natively on insert; clickhouse-connect building them in Python cost 2/3 of a batch insert."""
        if table not in self._types:
            rows = self.client.query(f"SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                     f"AND table = '{table}'").result_rows
            self._types[table] = {name: _RE_LC.sub(r"\1", kind) for name, kind in rows}
        return [self._types[table][c] for c in columns]

    def write_selection(self, table: pd.DataFrame, selection_id: str, run_id: str, eras: int) -> None:
        frame = table[["feature", "variance", "kept", "reason", "partner"]].copy()
        frame.insert(0, "run_id", run_id)
        frame.insert(0, "selection_id", selection_id)
        frame["eras"] = np.uint32(eras)
        frame["created_at"] = pd.Timestamp.now(tz="UTC")
        self._insert("feature_selection", frame, f"selection-{run_id}-{selection_id}")

    def _insert(self, table: str, frame: pd.DataFrame, token: str) -> None:
        if frame.empty:
            return
        try:
            self.client.insert_df(table, frame, column_type_names=self._plain_types(table, list(frame.columns)),
                                  settings={"insert_deduplication_token": token})
        except Exception as exc:
            raise classify_error(exc) from exc


#: ClickHouse error codes worth retrying: the server or its disk is in trouble, not the rows.
RETRIED_CODES = {
    159: "TIMEOUT_EXCEEDED", 209: "SOCKET_TIMEOUT", 210: "NETWORK_ERROR", 241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY", 243: "NOT_ENOUGH_SPACE", 252: "TOO_MANY_PARTS", 202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    24: "CANNOT_WRITE_TO_OSTREAM", 74: "CANNOT_READ_FROM_FILE_DESCRIPTOR", 75: "CANNOT_WRITE_TO_FILE_DESCRIPTOR",
    76: "CANNOT_OPEN_FILE", 425: "SYSTEM_ERROR", 236: "ABORTED", 394: "QUERY_WAS_CANCELLED",
    1000: "POCO_EXCEPTION", 1001: "STD_EXCEPTION",
}
_CODE = re.compile(r"\bCode:\s*(\d+)")
_RE_LC = re.compile(r"LowCardinality\((.*?)\)")
_DISK_FULL = ("no space left on device", "not enough space", "disk quota exceeded")


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of an exception (clickhouse_connect and chDB both say "Code: NNN")."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify_error(exc: BaseException) -> ClickHouseError:
    """ClickHouseUnavailable for failures worth retrying (network, server or disk trouble), else ClickHouseError.

    ClickHouseError means the rows themselves are bad (a type mismatch, Code 6/27/53...): a dead letter.
    """
    if isinstance(exc, ClickHouseError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ClickHouseUnavailable(text)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ClickHouseUnavailable(text)
    try:
        from clickhouse_connect.driver.exceptions import OperationalError
    except ImportError:  # pragma: no cover - clickhouse_connect is a dependency
        OperationalError = ()  # type: ignore[assignment]  # noqa: N806
    code = error_code(exc)
    if code in RETRIED_CODES or any(s in text.lower() for s in _DISK_FULL):
        return ClickHouseUnavailable(text)
    if code is None and OperationalError and isinstance(exc, OperationalError):
        return ClickHouseUnavailable(text)  # connection-level failure: no server answer to classify
    return ClickHouseError(text)


def _utc(ts: Any) -> pd.Timestamp | None:
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return None
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------- readers
def raw_features(client: Any, run_id: str, era_id: str | None = None) -> pd.DataFrame:
    """Every feature in long form (deduplicated with FINAL)."""
    where = "run_id = {r:String}" + (" AND era_id = {e:String}" if era_id else "")
    return client.query_df(
        "SELECT compartment_id, era_id, sensor, feature, value, source FROM era_features FINAL "
        f"WHERE {where} ORDER BY compartment_id, era_id, sensor, feature",
        parameters={"r": run_id, "e": era_id or ""},
    )


def feature_matrix(client: Any, run_id: str, era_id: str | None = None) -> pd.DataFrame:
    """Era x feature matrix (columns "<sensor>__<feature>"), index (compartment_id, era_id)."""
    long = raw_features(client, run_id, era_id)
    if long.empty:
        return pd.DataFrame()
    long["column"] = long["sensor"].astype(str) + "__" + long["feature"].astype(str)
    return long.pivot_table(index=["compartment_id", "era_id"], columns="column", values="value", aggfunc="first", dropna=False)


def latest_selection(client: Any, run_id: str) -> pd.DataFrame:
    return client.query_df(
        "SELECT feature, variance, kept, reason, partner, eras, selection_id FROM feature_selection FINAL "
        "WHERE run_id = {r:String} AND selection_id = ("
        "  SELECT max(selection_id) FROM feature_selection WHERE run_id = {r:String}) ORDER BY feature",
        parameters={"r": run_id},
    )


def era_status(client: Any, run_id: str | None = None) -> pd.DataFrame:
    where = "WHERE run_id = {r:String}" if run_id else ""
    return client.query_df(
        "SELECT compartment_id, era_id, run_id, feature_set, era_start, era_end, rows, "
        "toUInt32(arraySum(tsfresh_chunks.2)) AS tsfresh_features, toUInt32(arraySum(rolling_chunks.2)) AS rolling_features, "
        "tsfresh_at, rolling_at, stored_at "
        f"FROM eras FINAL {where} ORDER BY compartment_id, era_start",
        parameters={"r": run_id or ""},
    )
