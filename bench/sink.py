"""Feature rows/s of ClickHouseWriter into embedded chDB: one insert per batch vs one per message.

Three ways over the same messages: the sink's `store_batch` (ledger lookup, one insert per
table, ledger write), the same inserts without the ledger, and one insert per message.

    PYTHONPATH=$PWD .venv/bin/python bench/sink.py --messages 200 --rows 5000

Both runs store the same messages (decoded beforehand, as the sink does) into a fresh chDB
directory each; the ratio is printed from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.codec import FeatureBatch
from stages.clickhouse import ClickHouseWriter, apply_schema, connect
from streams.sink import Decoded, _insert_all, batch_token, content_token, feature_rows, store_batch


class _Msg:
    def __init__(self, offset: int):
        self._o = offset

    def topic(self) -> str:
        return "features.tsfresh"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o


def messages(count: int, rows: int) -> list[Decoded]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        batch = FeatureBatch(
            era_key=f"gh:e{i}", compartment_id="gh", era_id=f"e{i}", run_id="bench", feature_set="minimal",
            source="tsfresh", kind="features", chunk_index=0, last=True, era_rows=1440, sensors=["a"],
            computed_at=datetime(2024, 1, 1, tzinfo=timezone.utc), payload=f"p{i}".encode(),
        )
        frame = pd.DataFrame({"sensor": [f"s{j % 20}" for j in range(rows)], "feature": [f"f{j // 20}" for j in range(rows)],
                              "value": rng.random(rows)})
        out.append(Decoded(_Msg(i), batch, feature_rows(batch, frame), content_token(batch)))
    return out


def rate(items: list[Decoded], how: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        client = connect(None, Path(tmp) / "ch")
        apply_schema(client)
        writer = ClickHouseWriter(client)
        started = time.perf_counter()
        if how == "sink":
            store_batch(writer, items)
        elif how == "no ledger":
            _insert_all(writer, items, batch_token)
        else:
            for d in items:
                _insert_all(writer, [d], batch_token)
        seconds = time.perf_counter() - started
        stored = client.query("SELECT count() FROM era_features").result_rows[0][0]
        client.close()
    assert stored == sum(len(d.rows) for d in items), stored
    return stored / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5000, help="feature rows per message")
    args = parser.parse_args()
    items = messages(args.messages, args.rows)
    one = rate(items, "per message")
    bare = rate(items, "no ledger")
    batch = rate(items, "sink")
    print(f"{args.messages} messages x {args.rows} rows: store_batch {batch:,.0f} rows/s, without the ledger "
          f"{bare:,.0f} rows/s (ledger costs {bare / batch:.2f}x), per message {one:,.0f} rows/s; "
          f"store_batch vs per message {batch / one:.1f}x")


if __name__ == "__main__":
    main()
