"""stages.ingest: reading sensor files and era labels, era assignment, chunking."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.ingest import (
    EraSpec,
    InputError,
    assign_eras,
    chunk_rows,
    read_era_labels,
    grid_warnings,
    read_sensor_file,
    reject_future_rows,
    unassigned_explained,
    unassigned_rows,
)

GOOD_CSV = """timestamp,compartment_id,air_temp_c,rain_status
2024-03-01 00:02:00,gh2,21.5,1
2024-03-01 00:00:00,gh1,20.0,0
2024-03-01 00:01:00,gh1,20.5,
2024-03-01 00:00:00,gh2,21.0,0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def check_good_table(table, path: Path) -> None:
    frame = table.frame
    assert table.path == str(path)
    assert table.sensors == ["air_temp_c", "rain_status"]
    assert table.bad_rows == []
    assert list(frame.columns) == ["timestamp", "compartment_id", "air_temp_c", "rain_status"]
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert frame["air_temp_c"].dtype == np.float64 and frame["rain_status"].dtype == np.float64
    assert frame["compartment_id"].tolist() == ["gh1", "gh1", "gh2", "gh2"]  # sorted by compartment, time
    assert frame["timestamp"].dt.minute.tolist() == [0, 1, 0, 2]
    assert frame["air_temp_c"].tolist() == [20.0, 20.5, 21.0, 21.5]
    assert np.isnan(frame["rain_status"].iloc[1])  # empty cell = missing value, not a bad row


def test_good_csv(tmp_path):
    path = write(tmp_path, "s.csv", GOOD_CSV)
    check_good_table(read_sensor_file(path), path)


def test_good_csv_gz(tmp_path):
    path = tmp_path / "s.csv.gz"
    path.write_bytes(gzip.compress(GOOD_CSV.encode()))
    check_good_table(read_sensor_file(path), path)


def test_good_parquet(tmp_path):
    frame = pd.read_csv(write(tmp_path, "s.csv", GOOD_CSV), parse_dates=["timestamp"])
    path = tmp_path / "s.parquet"
    frame.to_parquet(path, index=False)
    check_good_table(read_sensor_file(path), path)


def test_parquet_without_suffix_and_tz_aware_column(tmp_path):
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-03-01 01:00", periods=3, freq="1min", tz="Europe/Copenhagen"),
            "x": [1.0, 2.0, 3.0],
        }
    )
    path = tmp_path / "data.bin"
    frame.to_parquet(path, index=False)
    table = read_sensor_file(path, default_compartment="gh9")
    assert table.frame["timestamp"].iloc[0] == pd.Timestamp("2024-03-01 00:00:00")  # CET = UTC+1
    assert table.frame["compartment_id"].unique().tolist() == ["gh9"]


def test_timezone_offsets_converted_to_naive_utc(tmp_path):
    path = write(tmp_path, "s.csv", "timestamp,x\n2024-03-01T02:00:00+02:00,1\n2024-03-01T00:30:00Z,2\n")
    ts = read_sensor_file(path).frame["timestamp"].tolist()
    assert ts == [pd.Timestamp("2024-03-01 00:00:00"), pd.Timestamp("2024-03-01 00:30:00")]


def test_broken_timestamp_is_a_bad_row_with_its_line(tmp_path):
    text = "timestamp,x\n2024-03-01 00:00:00,1\n\n2024-03-01 00:02:00,2\nyesterday,3\n2024-03-01 00:04:00,4\n"
    path = write(tmp_path, "s.csv", text)
    table = read_sensor_file(path)
    assert [(b.path, b.line) for b in table.bad_rows] == [(str(path), 5)]  # blank line 3 still counts
    assert "timestamp" in table.bad_rows[0].reason
    assert table.frame["x"].tolist() == [1.0, 2.0, 4.0]


def test_non_numeric_value_is_a_bad_row(tmp_path):
    text = "timestamp,x,y\n2024-03-01 00:00:00,1,5\n2024-03-01 00:01:00,oops,6\n2024-03-01 00:02:00,3,NA\n"
    table = read_sensor_file(write(tmp_path, "s.csv", text))
    assert [b.line for b in table.bad_rows] == [3]
    assert "'x'" in table.bad_rows[0].reason
    assert table.frame["x"].tolist() == [1.0, 3.0]
    assert np.isnan(table.frame["y"].iloc[1])  # NA marker = missing, row kept


def test_malformed_line_is_a_bad_row(tmp_path):
    text = "timestamp,x\n2024-03-01 00:00:00,1\n2024-03-01 00:01:00,2,extra\n2024-03-01 00:02:00,3\nbad,4\n"
    table = read_sensor_file(write(tmp_path, "s.csv", text))
    assert [b.line for b in table.bad_rows] == [3, 5]
    assert table.frame["x"].tolist() == [1.0, 3.0]


def test_trailing_commas_are_harmless_but_an_extra_value_is_a_bad_row(tmp_path):
    text = "timestamp,x\n2024-03-01 00:00:00,1,\n2024-03-01 00:01:00,2,\n2024-03-01 00:02:00,3,99\n2024-03-01 00:03:00,4,\n"
    table = read_sensor_file(write(tmp_path, "s.csv", text))
    assert table.sensors == ["x"]
    assert table.frame["timestamp"].dt.minute.tolist() == [0, 1, 3]  # timestamp did not become the index
    assert table.frame["x"].tolist() == [1.0, 2.0, 4.0]
    assert [b.line for b in table.bad_rows] == [4]


def test_text_column_is_ignored_not_a_sensor(tmp_path):
    text = "timestamp,x,note\n2024-03-01 00:00:00,1,ok\n2024-03-01 00:01:00,2,\n"
    table = read_sensor_file(write(tmp_path, "s.csv", text))
    assert table.sensors == ["x"] and table.ignored_columns == ["note"]
    assert "note" not in table.frame.columns and table.bad_rows == []


def test_timestamps_outside_the_datetime_range_are_bad_rows_with_their_line(tmp_path):
    path = write(tmp_path, "far.csv", "timestamp,a\n2024-03-01 00:00,1\n2262-05-01 00:00,2\n1500-01-01,3\n2024-03-01 00:01,4\n")
    table = read_sensor_file(path)
    assert [(b.line, "out of range" in b.reason) for b in table.bad_rows] == [(3, True), (4, True)]
    assert "2262-05-01" in str(table.bad_rows[0]) and str(table.bad_rows[0]).startswith(f"{path}:3:")
    assert table.frame["a"].tolist() == [1.0, 4.0]


def test_era_label_outside_the_datetime_range_names_its_line(tmp_path):
    path = write(tmp_path, "eras.csv", "era_id,compartment_id,start_time,end_time\n"
                 "a,gh1,2024-03-01,2024-03-02\nb,gh1,2024-03-02,2300-01-01\n")
    with pytest.raises(InputError, match=r"eras.csv:3: era 'b': .*out of range"):
        read_era_labels(path)


@pytest.mark.parametrize("header", ["temp, temp ", "temp,temp"])
def test_duplicate_column_names_after_trimming_fail_naming_the_columns(tmp_path, header):
    path = write(tmp_path, "dup.csv", f"timestamp,{header},rh\n2024-03-01 00:00,1,2,3\n")
    with pytest.raises(InputError, match="duplicate column") as info:
        read_sensor_file(path)
    assert str(path) in str(info.value) and "'temp' in columns 2, 3" in str(info.value)


def test_duplicate_columns_in_parquet_fail_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([pa.array(["2024-03-01 00:00"]), pa.array([1.0]), pa.array([2.0])], names=["timestamp", "temp", "temp "])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(InputError, match="duplicate column.*'temp'"):
        read_sensor_file(tmp_path / "dup.parquet")


@pytest.mark.parametrize("column", ["era_id", "start_time", "_value", "_sensor", "TIMESTAMP", "Era_ID"])
def test_columns_named_like_the_pipelines_own_fail(tmp_path, column):
    path = write(tmp_path, "clash.csv", f"timestamp,{column},a\n2024-03-01 00:00,1,2\n")
    with pytest.raises(InputError, match="clash with names the pipeline uses") as info:
        read_sensor_file(path)
    assert str(path) in str(info.value) and repr(column) in str(info.value)


def test_infinite_values_are_missing_and_counted_per_column(tmp_path):
    path = write(tmp_path, "inf.csv", "timestamp,a,b,c\n2024-03-01 00:00,inf,1,1\n"
                 "2024-03-01 00:01,-inf,Infinity,2\n2024-03-01 00:02,3,4,3\n")
    table = read_sensor_file(path)
    assert table.bad_rows == []
    assert np.isnan(table.frame["a"].iloc[:2]).all() and np.isnan(table.frame["b"].iloc[1])
    assert table.frame["a"].iloc[2] == 3.0 and np.isfinite(table.frame[["a", "b", "c"]].to_numpy()[2]).all()
    assert table.warnings == [f"{path}: column 'a': 2 infinite value(s) (inf/-inf) taken as missing",
                              f"{path}: column 'b': 1 infinite value(s) (inf/-inf) taken as missing"]


def test_a_text_cell_among_thousands_of_numeric_columns_is_still_a_bad_row(tmp_path):
    """The flat cast of all columns fails on one text cell; the row is found column by column."""
    cols = [f"s{i}" for i in range(2000)]
    rows = [",".join(["2024-03-01 00:0%d" % r] + [str(r + i / 10) for i in range(2000)]) for r in range(3)]
    rows[1] = rows[1].replace(",1.5,", ",warm,", 1)  # s5 of line 3
    path = write(tmp_path, "wide.csv", "timestamp," + ",".join(cols) + ",note\n" + "\n".join(r + ",x" for r in rows) + "\n")
    table = read_sensor_file(path)
    assert [(b.line, b.reason) for b in table.bad_rows] == [(3, "non-numeric value in 's5'")]
    assert len(table.sensors) == 2000 and table.ignored_columns == ["note"]
    assert table.frame["s1999"].tolist() == [199.9, 201.9]


def test_rows_in_no_labelled_era_are_explained_with_file_and_lines(tmp_path):
    path = write(tmp_path, "d.csv", "timestamp,compartment_id,a\n2024-01-01 00:00,gh1,1\n2024-01-01 00:01,gh1,2\n"
                 "2024-03-01 00:01,gh1,2\n2024-01-01 00:00,gh9,1\n")
    eras = [EraSpec("gh1", "x", pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-02")),
            EraSpec("gh2", "y", pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-02"))]
    gh1, gh9 = unassigned_explained(read_sensor_file(path), eras)
    assert gh1.startswith(f"{path}: 2 row(s) of compartment 'gh1' (lines 2-3) are in no era")
    assert "outside its 1 labelled era(s), which cover 2024-03-01 00:00:00 .. 2024-03-02 00:00:00" in gh1
    assert gh9.startswith(f"{path}: 1 row(s) of compartment 'gh9' (line 5)") and "no era for compartment 'gh9'" in gh9
    assert unassigned_explained(read_sensor_file(path), [*eras, EraSpec("gh1", "z", pd.Timestamp("2024-01-01"),
                                pd.Timestamp("2024-01-02")), EraSpec("gh9", "z", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02"))]) == []


def test_an_era_whose_grid_would_explode_is_named_with_its_line(tmp_path):
    ts = [*pd.date_range("2024-03-05 00:00", periods=10, freq="1ms"), pd.Timestamp("2024-03-05 23:00")]
    rows = "".join(f"{t.isoformat()},{i}\n" for i, t in enumerate(ts))
    path = write(tmp_path, "jitter.csv", "timestamp,a\n2024-03-04 00:00,1\n2024-03-04 00:01,2\n" + rows)
    table = read_sensor_file(path)
    (warning,) = grid_warnings(table, None, "1D")  # the day before is a normal 1-minute era
    assert warning.startswith(f"{path}:5: era default:2024-03-05T00:00:00: readings 1 ms apart")
    assert "82,800,001-point grid (limit 50,000,000)" in warning
    assert grid_warnings(table, None, "1h") == []  # hour eras: the jittered hour spans 9 ms


def test_rows_far_ahead_of_the_clock_become_bad_rows(tmp_path):
    path = write(tmp_path, "f.csv", "timestamp,a\n2024-03-01 00:00,1\n2100-01-01 00:00,2\n2024-03-01 00:01,3\n")
    table = reject_future_rows(read_sensor_file(path), pd.Timestamp("2024-03-01 12:00"), pd.Timedelta("1D"))
    assert [(b.line, "ahead of the clock" in b.reason) for b in table.bad_rows] == [(3, True)]
    assert table.frame["a"].tolist() == [1.0, 3.0] and table.lines.tolist() == [2, 4]
    with pytest.raises(InputError, match="every row is bad"):
        reject_future_rows(read_sensor_file(path), pd.Timestamp("2000-01-01"), pd.Timedelta("1D"))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.csv.*not found"):
        read_sensor_file(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match=r"empty\.csv.*no rows"):
        read_sensor_file(write(tmp_path, "empty.csv", ""))


def test_header_only(tmp_path):
    with pytest.raises(InputError, match=r"head\.csv.*no rows"):
        read_sensor_file(write(tmp_path, "head.csv", "timestamp,x\n"))


def test_no_sensor_columns(tmp_path):
    with pytest.raises(InputError, match=r"nosens\.csv.*no sensor columns"):
        read_sensor_file(write(tmp_path, "nosens.csv", "timestamp,compartment_id,note\n2024-03-01,a,hello\n"))


def test_no_timestamp_column(tmp_path):
    with pytest.raises(InputError, match=r"nots\.csv.*no 'timestamp' column"):
        read_sensor_file(write(tmp_path, "nots.csv", "time,x\n2024-03-01,1\n"))


def test_every_row_bad(tmp_path):
    with pytest.raises(InputError, match=r"allbad\.csv.*every row is bad.*line 2"):
        read_sensor_file(write(tmp_path, "allbad.csv", "timestamp,x\nsoon,1\nlater,2\n"))


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(InputError, match=r"broken\.parquet.*unreadable"):
        read_sensor_file(path)


# --------------------------------------------------------------------------- era labels

LABELS_HEADER = "era_id,compartment_id,start_time,end_time\n"


def test_read_era_labels(tmp_path):
    path = write(
        tmp_path,
        "eras.csv",
        LABELS_HEADER + "e1,gh1,2024-03-01 00:00,2024-03-01 12:00\n"
        "e2,gh1,2024-03-01 12:00,2024-03-02 00:00\n"  # touching is fine: end is exclusive
        "e1,gh2,2024-03-01 06:00,2024-03-01 18:00\n",  # same era id, other compartment
    )
    eras = read_era_labels(path)
    assert [e.key for e in eras] == ["gh1:e1", "gh1:e2", "gh2:e1"]
    assert eras[0].start == pd.Timestamp("2024-03-01 00:00") and eras[0].end == pd.Timestamp("2024-03-01 12:00")


def test_overlapping_eras_name_both(tmp_path):
    path = write(
        tmp_path,
        "eras.csv",
        LABELS_HEADER + "spring,gh1,2024-03-01,2024-03-10\n"
        "other,gh2,2024-03-05,2024-03-06\n"
        "late,gh1,2024-03-09,2024-03-20\n",
    )
    with pytest.raises(InputError, match=r"eras\.csv.*'spring'.*'late'.*overlap"):
        read_era_labels(path)


def test_era_end_before_start(tmp_path):
    path = write(tmp_path, "eras.csv", LABELS_HEADER + "ok,gh1,2024-03-01,2024-03-02\nbackwards,gh1,2024-03-05,2024-03-04\n")
    with pytest.raises(InputError, match=r"eras\.csv:3: era 'backwards'"):
        read_era_labels(path)


def test_era_labels_missing_columns(tmp_path):
    path = write(tmp_path, "eras.csv", "era_id,start_time,end_time\ne1,2024-03-01,2024-03-02\n")
    with pytest.raises(InputError, match=r"eras\.csv.*missing column.*compartment_id"):
        read_era_labels(path)


# --------------------------------------------------------------------------- era assignment


def make_table(stamps: list[str], compartments: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(stamps).astype("datetime64[ns]"),
            "compartment_id": compartments,
            "x": np.arange(len(stamps), dtype="float64"),
        }
    ).sort_values(["compartment_id", "timestamp"], ignore_index=True)


def test_fixed_period_eras_split_correctly_and_never_mix_compartments():
    stamps = ["2024-03-01 23:59", "2024-03-02 00:00", "2024-03-02 11:59", "2024-03-02 12:00", "2024-03-04 01:00"]
    table = make_table(stamps + stamps[:2], ["a"] * 5 + ["b"] * 2)
    eras = assign_eras(table, era_length="12h")
    got = [(e.key, len(f)) for e, f in eras]
    assert got == [
        ("a:2024-03-01T12:00:00", 1),
        ("a:2024-03-02T00:00:00", 2),
        ("a:2024-03-02T12:00:00", 1),
        ("a:2024-03-04T00:00:00", 1),  # empty periods in between are not returned
        ("b:2024-03-01T12:00:00", 1),
        ("b:2024-03-02T00:00:00", 1),
    ]
    for era, frame in eras:
        assert (frame["compartment_id"] == era.compartment_id).all()
        assert (frame["timestamp"] >= era.start).all() and (frame["timestamp"] < era.end).all()
        assert era.end - era.start == pd.Timedelta("12h")
    assert sum(len(f) for _, f in eras) == len(table)


def test_default_era_length_is_utc_days():
    table = make_table(["2024-03-01 00:00", "2024-03-01 23:59", "2024-03-02 00:00", "2024-03-08 12:00"], ["a"] * 4)
    eras = assign_eras(table)  # era_length="1D"
    assert [(e.era_id, len(f)) for e, f in eras] == [
        ("2024-03-01T00:00:00", 2),
        ("2024-03-02T00:00:00", 1),
        ("2024-03-08T00:00:00", 1),
    ]
    assert all(e.end - e.start == pd.Timedelta(days=1) for e, _ in eras)
    week = assign_eras(table, era_length="7D")  # epoch-aligned: 1970-01-01 was a Thursday
    assert [e.start.day_name() for e, _ in week] == ["Thursday", "Thursday"]


def test_fixed_period_rejects_calendar_offsets():
    with pytest.raises(ValueError, match="fixed"):
        assign_eras(make_table(["2024-03-01"], ["a"]), era_length="MS")


def test_labelled_eras_drop_and_count_unassigned_rows():
    table = make_table(
        ["2024-03-01 00:00", "2024-03-01 05:00", "2024-03-01 06:00", "2024-03-01 07:00", "2024-03-01 05:00"],
        ["a", "a", "a", "a", "b"],
    )
    eras = [
        EraSpec("a", "night", pd.Timestamp("2024-03-01 00:00"), pd.Timestamp("2024-03-01 06:00")),
        EraSpec("b", "night", pd.Timestamp("2024-03-01 00:00"), pd.Timestamp("2024-03-01 06:00")),
        EraSpec("b", "empty", pd.Timestamp("2024-03-02 00:00"), pd.Timestamp("2024-03-03 00:00")),
    ]
    got = assign_eras(table, eras)
    assert [(e.key, f["timestamp"].dt.hour.tolist()) for e, f in got] == [("a:night", [0, 5]), ("b:night", [5])]
    assert unassigned_rows(table, eras) == 2  # a at 06:00 (end is exclusive) and 07:00


def test_assign_eras_rejects_overlapping_labels():
    eras = [
        EraSpec("a", "e1", pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-03")),
        EraSpec("a", "e2", pd.Timestamp("2024-03-02"), pd.Timestamp("2024-03-04")),
    ]
    with pytest.raises(InputError, match="'e1' and 'e2' overlap"):
        assign_eras(make_table(["2024-03-01"], ["a"]), eras)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (0, 5, []),
        (1, 5, [(0, 1)]),
        (5, 5, [(0, 5)]),
        (6, 5, [(0, 5), (5, 6)]),
        (10, 3, [(0, 3), (3, 6), (6, 9), (9, 10)]),
    ],
)
def test_chunk_rows_boundaries(n, size, expected):
    assert chunk_rows(n, size) == expected


def test_chunk_rows_cover_every_row_once():
    for n in range(0, 40):
        for size in (1, 2, 7, 40):
            chunks = chunk_rows(n, size)
            covered = [i for a, b in chunks for i in range(a, b)]
            assert covered == list(range(n))
            assert all(0 < b - a <= size for a, b in chunks)


def test_chunk_rows_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        chunk_rows(10, 0)
