"""Batched storing and error classification against the real embedded ClickHouse (chDB)."""

from __future__ import annotations

import errno
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from schemas.codec import FeatureBatch
from stages.clickhouse import (
    ClickHouseError, ClickHouseUnavailable, ClickHouseWriter, classify_error, era_status,
)
from streams.sink import Decoded, batch_token, feature_rows, store_batch, content_token
from tests.test_clickhouse import client  # noqa: F401 - the module's own embedded ClickHouse, as there


class _Msg:
    """Only the coordinates Decoded and batch_token read (a Message cannot be built outside librdkafka)."""

    def __init__(self, partition: int, offset: int):
        self._p, self._o = partition, offset

    def topic(self):
        return "features.tsfresh"

    def partition(self):
        return self._p

    def offset(self):
        return self._o


def _decoded(era: str, chunk: int, last: bool, n: int, partition: int = 0, offset: int = 0, run: str = "rb") -> Decoded:
    batch = FeatureBatch(
        era_key=f"gh:{era}", compartment_id="gh", era_id=era, run_id=run, feature_set="minimal", source="tsfresh",
        kind="features", chunk_index=chunk, last=last, era_rows=100, sensors=["a"],
        computed_at=datetime(2024, 1, 1, tzinfo=timezone.utc), payload=f"{era}{chunk}{n}".encode(),
        era_start=datetime(2024, 1, 1, tzinfo=timezone.utc), era_end=datetime(2024, 1, 2, tzinfo=timezone.utc),
    )
    frame = pd.DataFrame({"sensor": ["a"] * n, "feature": [f"c{chunk}_f{i}" for i in range(n)], "value": np.arange(n, dtype=float)})
    return Decoded(_Msg(partition, offset), batch, feature_rows(batch, frame), content_token(batch))


def _counts(client, run):
    plain = client.query("SELECT count() FROM era_features WHERE run_id = {r:String}", parameters={"r": run}).result_rows[0][0]
    final = client.query("SELECT count() FROM era_features FINAL WHERE run_id = {r:String}", parameters={"r": run}).result_rows[0][0]
    return plain, final


def test_a_batch_is_one_insert_and_its_retry_is_stored_once(client):
    items = [_decoded("e1", 0, False, 5, offset=0), _decoded("e1", 1, True, 3, offset=1), _decoded("e2", 0, True, 4, offset=2)]
    writer = ClickHouseWriter(client)
    assert store_batch(writer, items) == []
    assert store_batch(writer, items) == []  # the same batch again (a retry): the token drops it
    assert _counts(client, "rb") == (12, 12)
    status = era_status(client, "rb").set_index("era_id")
    assert status.loc["e1", "tsfresh_features"] == 8 and status.loc["e2", "tsfresh_features"] == 4
    assert not pd.isna(status.loc["e1", "tsfresh_at"]) and pd.isna(status.loc["e1", "rolling_at"])


def test_the_token_covers_offsets_and_content():
    a = [_decoded("e1", 0, True, 2, offset=5)]
    assert batch_token("era_features", a) == batch_token("era_features", [_decoded("e1", 0, True, 2, offset=5)])
    assert batch_token("era_features", a) != batch_token("era_features", [_decoded("e1", 0, True, 2, offset=6)])
    assert batch_token("era_features", a) != batch_token("era_features", [_decoded("e1", 0, True, 3, offset=5)])
    assert batch_token("era_features", a) != batch_token("eras", a)


def test_tsfresh_and_rolling_era_writes_do_not_erase_each_other(client):
    writer = ClickHouseWriter(client)
    ts = _decoded("e7", 0, True, 6, run="rm")
    store_batch(writer, [ts])
    roll = _decoded("e7", 0, True, 2, run="rm")
    roll.batch.source = "rolling"
    roll.rows["source"] = "rolling"
    roll.rows["feature"] = ["r0", "r1"]
    roll.token = content_token(roll.batch) + "r"
    store_batch(writer, [roll])
    store_batch(writer, [ts])  # a re-sent tsfresh chunk counts once (maxMap)
    row = era_status(client, "rm").set_index("era_id").loc["e7"]
    assert row["tsfresh_features"] == 6 and row["rolling_features"] == 2
    assert not pd.isna(row["tsfresh_at"]) and not pd.isna(row["rolling_at"])
    assert client.query("SELECT count() FROM eras FINAL WHERE run_id = 'rm'").result_rows[0][0] == 1


def test_a_bad_row_fails_alone(client):
    writer = ClickHouseWriter(client)
    good = _decoded("e3", 0, True, 3, run="rx", offset=0)
    bad = _decoded("e4", 0, True, 3, run="rx", offset=1)
    bad.rows["value"] = ["x", "y", "z"]  # not a Float64: ClickHouse refuses the rows
    refused = store_batch(writer, [good, bad])
    assert [d.batch.era_id for d, _ in refused] == ["e4"]
    assert not isinstance(refused[0][1], ClickHouseUnavailable)
    assert _counts(client, "rx") == (3, 3)


def _chdb_error(client, sql: str) -> Exception:
    with pytest.raises(Exception) as info:
        client.command(sql)
    return info.value


def test_classify_real_chdb_errors(client):
    mismatch = _chdb_error(client, "SELECT CAST('abc' AS UInt32)")  # Code: 6 CANNOT_PARSE_TEXT
    assert type(classify_error(mismatch)) is ClickHouseError
    unknown = _chdb_error(client, "SELECT * FROM no_such_table")  # Code: 60
    assert type(classify_error(unknown)) is ClickHouseError
    memory = _chdb_error(client, "SELECT groupArray(number) FROM numbers(100000000) SETTINGS max_memory_usage = 1000000")
    assert "Code: 241" in str(memory)
    assert isinstance(classify_error(memory), ClickHouseUnavailable)
    assert isinstance(classify_error(OSError(errno.ENOSPC, "No space left on device")), ClickHouseUnavailable)
    assert isinstance(classify_error(ConnectionRefusedError(111, "Connection refused")), ClickHouseUnavailable)
    assert isinstance(classify_error(RuntimeError("Code: 252. DB::Exception: Too many parts")), ClickHouseUnavailable)
    assert isinstance(classify_error(RuntimeError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space")),
                      ClickHouseUnavailable)
    assert type(classify_error(RuntimeError("Code: 53. DB::Exception: Type mismatch"))) is ClickHouseError


def test_classify_clickhouse_connect_errors():
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    assert isinstance(classify_error(OperationalError("Error HTTPConnectionPool: Max retries exceeded")), ClickHouseUnavailable)
    assert isinstance(classify_error(DatabaseError("HTTPDriver received ClickHouse error code 242\n Code: 242. Table is in readonly mode")),
                      ClickHouseUnavailable)
    assert type(classify_error(DatabaseError("Code: 27. DB::Exception: Cannot parse input"))) is ClickHouseError


def test_messages_sent_again_long_after_are_not_stored_twice_whatever_the_dedup_window(client):
    """A replay re-sends messages in batches cut differently, far beyond the insert dedup window."""
    for table in ("era_features", "rolling_features", "eras", "stored_messages"):
        client.command(f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 1")
    try:
        writer = ClickHouseWriter(client)
        first = [_decoded(f"w{i}", 0, True, 3, offset=i, run="rw") for i in range(6)]
        assert store_batch(writer, first[:4]) == []
        for n in range(5):  # other batches since: the window (1 insert) has long moved on
            assert store_batch(writer, [_decoded(f"other{n}", 0, True, 2, offset=100 + n, run="rw2")]) == []
        again = [_decoded(f"w{i}", 0, True, 3, offset=50 + i, run="rw") for i in range(2, 6)]  # w2..w5, new offsets
        again.append(again[-1])  # and one of them twice within the batch
        assert store_batch(writer, again) == []
        assert _counts(client, "rw") == (18, 18)  # w0..w5, 3 rows each, once
    finally:
        for table in ("era_features", "rolling_features", "eras", "stored_messages"):
            client.command(f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 10000")
