"""ClickHouse access: one client API for a server and for embedded chDB, the DDL, and the writer.

CLICKHOUSE_URL=http(s)://user:password@host:port/database names a server; unset, an
embedded chDB (clickhouse-connect's interface="chdb") keeps its data in a local
directory. chDB locks that directory: one process at a time may open it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
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
        Path(path).mkdir(parents=True, exist_ok=True)
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


@dataclass
class EraRecord:
    """What the sink knows of one era; merged with the stored row before each write."""

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


class ClickHouseWriter:
    """Idempotent writes: deterministic versions plus insert deduplication tokens."""

    def __init__(self, client: Any):
        self.client = client

    def write_features(self, frame: pd.DataFrame, token: str) -> None:
        self._insert("era_features", frame[FEATURE_COLUMNS], token)

    def write_rolling(self, frame: pd.DataFrame, token: str) -> None:
        self._insert("rolling_features", frame[ROLLING_COLUMNS], token)

    def upsert_era(self, record: EraRecord) -> None:
        """Merge with the stored row: each source reports separately, the row carries both."""
        stored = self.client.query_df(
            "SELECT tsfresh_features, rolling_features, tsfresh_at, rolling_at FROM eras FINAL "
            "WHERE compartment_id = {c:String} AND era_id = {e:String} AND run_id = {r:String}",
            parameters={"c": record.compartment_id, "e": record.era_id, "r": record.run_id},
        )
        if len(stored):
            row = stored.iloc[0]
            record.tsfresh_features = record.tsfresh_features or int(row["tsfresh_features"])
            record.rolling_features = record.rolling_features or int(row["rolling_features"])
            record.tsfresh_at = record.tsfresh_at if record.tsfresh_at is not None else _ts_or_none(row["tsfresh_at"])
            record.rolling_at = record.rolling_at if record.rolling_at is not None else _ts_or_none(row["rolling_at"])
        now = pd.Timestamp.now(tz="UTC")
        frame = pd.DataFrame(
            {
                "compartment_id": [record.compartment_id],
                "era_id": [record.era_id],
                "run_id": [record.run_id],
                "feature_set": [record.feature_set],
                "era_start": [_utc(record.era_start)],
                "era_end": [_utc(record.era_end)],
                "rows": np.array([record.rows], dtype="uint64"),
                "sensors": [list(record.sensors)],
                "tsfresh_features": np.array([record.tsfresh_features], dtype="uint32"),
                "rolling_features": np.array([record.rolling_features], dtype="uint32"),
                "tsfresh_at": [_utc(record.tsfresh_at)],
                "rolling_at": [_utc(record.rolling_at)],
                "stored_at": [now],
                "version": np.array([time.time_ns() // 1000], dtype="uint64"),
            }
        )
        self.client.insert_df("eras", frame)

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
            self.client.insert_df(table, frame, settings={"insert_deduplication_token": token})
        except Exception as exc:
            raise classify_error(exc) from exc


def classify_error(exc: Exception) -> Exception:
    """ClickHouseUnavailable for failures worth retrying (network, server down), else ClickHouseError."""
    text = f"{type(exc).__name__}: {exc}"
    transient = ("Connection", "Timeout", "timed out", "refused", "503", "502", "Network", "OperationalError")
    if any(word.lower() in text.lower() for word in transient):
        return ClickHouseUnavailable(text)
    return ClickHouseError(text)


def _utc(ts: Any) -> pd.Timestamp | None:
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return None
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ts_or_none(value: Any) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


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
        "tsfresh_features, rolling_features, tsfresh_at, rolling_at, stored_at "
        f"FROM eras FINAL {where} ORDER BY compartment_id, era_start",
        parameters={"r": run_id or ""},
    )
