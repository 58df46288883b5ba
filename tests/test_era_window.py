"""stages.era_window: which eras a follower keeps open, what it publishes, when eras close."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.era_window import (
    CLOSED_BY_CLOCK,
    CLOSED_BY_DATA,
    EraWindow,
    SourceRows,
    apply_plan,
    parse_grace,
    plan_poll,
)
from stages.ingest import EraSpec

DAY1 = pd.Timestamp("2024-03-01")
DAY2 = pd.Timestamp("2024-03-02")
BEFORE_END = DAY1 + pd.Timedelta(hours=20)  # a clock inside day 1
LONG_AFTER = pd.Timestamp("2030-01-01")


def rows(start: str, end: str, freq: str = "1h", comp: str = "gh", sensors=("a", "b"), name: str = "f.csv") -> SourceRows:
    ts = pd.date_range(start, end, freq=freq, inclusive="left")
    frame = pd.DataFrame({"timestamp": ts.astype("datetime64[ns]"), "compartment_id": comp})
    for i, s in enumerate(sensors):
        frame[s] = np.arange(len(ts), dtype="float64") + i
    return SourceRows(name, frame, list(sensors))


def step(window, sources, now, grace=pd.Timedelta("10min"), **kw):
    """Plan one poll and apply it as if each batch went out in ceil(rows / 5) chunks (at least 1)."""
    plan = plan_poll(window, sources, now=now, grace=grace, **kw)
    chunks = {b.key: max(1, -(-len(b.rows) // 5)) for b in plan.batches}
    return plan, apply_plan(window, plan, chunks)


def test_era_stays_open_until_data_past_its_end_arrives():
    w = EraWindow()
    plan, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 12:00", name="am.csv")], now=BEFORE_END)
    assert [b.key for b in plan.batches] == ["gh:2024-03-01T00:00:00"]
    batch = plan.batches[0]
    assert batch.opened and batch.close is None and len(batch.rows) == 12
    assert list(batch.rows.columns) == ["timestamp", "a", "b"]
    era = w.open["gh:2024-03-01T00:00:00"]
    assert (era.next_chunk, era.rows) == (3, 12)

    # second half of the same day: same era, numbering goes on, still open
    plan, w = step(w, [rows("2024-03-01 12:00", "2024-03-02 00:00", name="pm.csv")], now=BEFORE_END)
    batch = plan.batches[0]
    assert not batch.opened and batch.close is None
    assert (batch.era.next_chunk, batch.era.rows) == (3, 12)
    assert w.open["gh:2024-03-01T00:00:00"].next_chunk == 6

    # data of day 2: day 1 closes (without rows of its own in this poll), day 2 opens
    plan, w = step(w, [rows("2024-03-02 00:00", "2024-03-02 06:00", name="d2.csv")], now=BEFORE_END)
    by_key = {b.key: b for b in plan.batches}
    closing = by_key["gh:2024-03-01T00:00:00"]
    assert closing.close == CLOSED_BY_DATA and len(closing.rows) == 0 and closing.era.next_chunk == 6
    assert list(closing.rows.columns) == ["timestamp", "a", "b"]
    assert by_key["gh:2024-03-02T00:00:00"].opened and by_key["gh:2024-03-02T00:00:00"].close is None
    assert plan.files[0].opened == ["gh:2024-03-02T00:00:00"]
    assert set(w.open) == {"gh:2024-03-02T00:00:00"}
    assert w.closed == {"gh:2024-03-01T00:00:00": DAY2}


def test_era_closes_when_the_clock_passes_end_plus_grace():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 06:00")], now=BEFORE_END)
    grace = pd.Timedelta("30min")
    plan, _ = step(w, [], now=DAY2 + pd.Timedelta("29min"), grace=grace)
    assert plan.batches == []
    plan, w2 = step(w, [], now=DAY2 + pd.Timedelta("30min"), grace=grace)
    assert [(b.key, b.close, len(b.rows)) for b in plan.batches] == [("gh:2024-03-01T00:00:00", CLOSED_BY_CLOCK, 0)]
    assert w2.open == {} and "gh:2024-03-01T00:00:00" in w2.closed
    # grace None: only data closes
    plan, _ = step(w, [], now=LONG_AFTER, grace=None)
    assert plan.batches == []


def test_grace_zero_closes_a_past_era_in_the_poll_that_opens_it():
    plan, w = step(EraWindow(), [rows("2024-03-01 00:00", "2024-03-01 06:00")], now=LONG_AFTER, grace=pd.Timedelta(0))
    batch = plan.batches[0]
    assert batch.opened and batch.close == CLOSED_BY_CLOCK and len(batch.rows) == 6
    assert w.open == {}


def test_rows_for_a_closed_era_are_late_and_not_published():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 06:00")], now=BEFORE_END)
    _, w = step(w, [rows("2024-03-02 00:00", "2024-03-02 06:00")], now=BEFORE_END)  # closes day 1
    plan, w = step(w, [rows("2024-03-01 06:00", "2024-03-02 09:00", name="mixed.csv")], now=BEFORE_END)
    assert plan.files[0].late_rows == 18 and plan.late_rows == 18
    assert [b.key for b in plan.batches] == ["gh:2024-03-02T00:00:00"]
    assert len(plan.batches[0].rows) == 9  # 06:00..09:00 of day 2 (00-06 was published before)
    assert plan.files[0].eras == ["gh:2024-03-02T00:00:00"]


def test_an_old_era_seen_first_after_newer_data_is_published_whole_and_closed():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-02 00:00", "2024-03-02 06:00")], now=BEFORE_END)
    plan, w = step(w, [rows("2024-03-01 00:00", "2024-03-02 00:00", name="old.csv")], now=BEFORE_END)
    (batch,) = plan.batches[:1]
    assert batch.key == "gh:2024-03-01T00:00:00" and batch.opened and batch.close == CLOSED_BY_DATA
    assert len(batch.rows) == 24
    assert "gh:2024-03-02T00:00:00" in w.open


def test_watermarks_are_per_compartment():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 06:00", comp="a"),
                    rows("2024-03-01 00:00", "2024-03-01 06:00", comp="b")], now=BEFORE_END)
    plan, w = step(w, [rows("2024-03-02 00:00", "2024-03-02 01:00", comp="a")], now=BEFORE_END)
    closes = {b.key: b.close for b in plan.batches}
    assert closes == {"a:2024-03-01T00:00:00": CLOSED_BY_DATA, "a:2024-03-02T00:00:00": None}
    assert "b:2024-03-01T00:00:00" in w.open


def test_files_of_one_poll_join_in_time_order_and_sensors_are_unioned():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 03:00", sensors=("a",))], now=BEFORE_END)
    late_file = rows("2024-03-01 06:00", "2024-03-01 08:00", sensors=("a", "c"), name="2.csv")
    early_file = rows("2024-03-01 03:00", "2024-03-01 06:00", sensors=("b",), name="3.csv")
    plan, w = step(w, [late_file, early_file], now=BEFORE_END)
    batch = plan.batches[0]
    assert batch.sensors == ["a", "c", "b"]
    assert list(batch.rows.columns) == ["timestamp", "a", "c", "b"]
    assert batch.rows["timestamp"].is_monotonic_increasing and len(batch.rows) == 5
    assert batch.rows["b"].notna().sum() == 3 and batch.rows["c"].notna().sum() == 2
    assert all(batch.rows[s].dtype == "float64" for s in batch.sensors)
    assert w.open["gh:2024-03-01T00:00:00"].sensors == ["a", "c", "b"]


def test_labelled_eras_unassigned_rows_and_data_in_a_gap_closes():
    labels = [EraSpec("gh", "morning", DAY1, DAY1 + pd.Timedelta("6h")),
              EraSpec("gh", "evening", DAY1 + pd.Timedelta("18h"), DAY2)]
    clock = DAY1 + pd.Timedelta("5h")
    plan, w = step(EraWindow(), [rows("2024-03-01 00:00", "2024-03-01 04:00")], now=clock, labels=labels)
    assert [b.key for b in plan.batches] == ["gh:morning"] and plan.batches[0].close is None
    plan, w = step(w, [rows("2024-03-01 04:00", "2024-03-01 10:00")], now=clock, labels=labels)
    assert plan.files[0].unassigned_rows == 4
    assert [(b.key, b.close, len(b.rows)) for b in plan.batches] == [("gh:morning", CLOSED_BY_DATA, 2)]


def test_window_survives_json_and_apply_does_not_touch_the_input():
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 06:00")], now=BEFORE_END)
    _, w = step(w, [rows("2024-03-02 00:00", "2024-03-02 06:00")], now=BEFORE_END)
    again = EraWindow.from_json(w.to_json())
    assert again == w
    before = w.to_json()
    step(w, [rows("2024-03-03 00:00", "2024-03-03 06:00")], now=BEFORE_END)
    assert w.to_json() == before


def test_plans_are_deterministic():
    """A replayed poll (same window, files and clock) must give the same batches."""
    w = EraWindow()
    _, w = step(w, [rows("2024-03-01 00:00", "2024-03-01 06:00")], now=BEFORE_END)
    sources = [rows("2024-03-01 06:00", "2024-03-02 06:00", name="x.csv")]
    a = plan_poll(w, sources, now=BEFORE_END, grace=None)
    b = plan_poll(w, sources, now=BEFORE_END, grace=None)
    assert [(x.key, x.close, x.era.next_chunk) for x in a.batches] == [(x.key, x.close, x.era.next_chunk) for x in b.batches]
    for x, y in zip(a.batches, b.batches):
        pd.testing.assert_frame_equal(x.rows, y.rows)


@pytest.mark.parametrize(("text", "expected"), [
    ("10min", pd.Timedelta("10min")), ("2h", pd.Timedelta("2h")), ("1D", pd.Timedelta("1D")),
    ("0", pd.Timedelta(0)), ("0s", pd.Timedelta(0)), ("90", pd.Timedelta("90s")), ("never", None),
])
def test_parse_grace(text, expected):
    assert parse_grace(text) == expected


@pytest.mark.parametrize("text", ["-5", "soon", "1ME"])
def test_parse_grace_refuses(text):
    with pytest.raises(ValueError, match="grace"):
        parse_grace(text)
