"""`erastream ingest` on bad input: a clear error naming the file or line, and nothing partial published."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streams import kafka
from streams.cli import app
from streams.topic_reader import partitions, reader, watermarks
from streams.topics import ERAS_RAW, create_topics

pytestmark = pytest.mark.kafka
runner = CliRunner()

GOOD = "timestamp,air_temp_c,rain_status\n2024-01-01 00:00,20.5,0\n2024-01-01 00:01,20.6,1\n2024-01-01 00:02,20.7,0\n"


def _published(settings) -> int:
    consumer = reader(settings)
    marks = watermarks(consumer, [(ERAS_RAW, p) for p in partitions(consumer, [ERAS_RAW])[ERAS_RAW]], timeout=30)
    consumer.close()
    return sum(high for _, high in marks.values())


def _ingest(settings, *args: str):
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    before = _published(settings)
    result = runner.invoke(app, ["--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir",
                                 str(settings.data_dir), *args])
    return result, _published(settings) - before


@pytest.mark.parametrize("content,expected", [
    ("", "empty"),
    ("timestamp,air_temp_c\n", "no rows"),
    ("timestamp,note\n2024-01-01 00:00,hello\n", "no sensor"),
    ("time,air_temp_c\n2024-01-01 00:00,1.0\n", "timestamp"),
])
def test_bad_file_fails_naming_the_file_and_publishes_nothing(settings, tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result, published = _ingest(settings, "ingest", str(path))
    assert result.exit_code == 1, result.output
    assert "bad.csv" in result.output and expected in result.output.lower()
    assert published == 0


def test_bad_rows_are_skipped_and_reported_with_their_line(settings, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(GOOD + "not-a-time,20.8,0\n2024-01-01 00:04,warm,0\n2024-01-01 00:05,21.0,1\n")
    result, published = _ingest(settings, "ingest", str(path))
    assert result.exit_code == 0, result.output
    assert "rows.csv:5" in result.output and "rows.csv:6" in result.output
    assert "2 bad row(s)" in result.output
    assert published > 0


def test_overlapping_era_labels_name_both_eras(settings, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    eras = tmp_path / "eras.csv"
    eras.write_text("era_id,compartment_id,start_time,end_time\n"
                    "spring,default,2024-01-01 00:00,2024-01-01 00:02\n"
                    "summer,default,2024-01-01 00:01,2024-01-01 00:03\n")
    result, published = _ingest(settings, "ingest", str(data), "--eras", str(eras))
    assert result.exit_code == 1
    assert "spring" in result.output and "summer" in result.output and "eras.csv" in result.output
    assert published == 0


def test_one_bad_file_among_good_ones_is_left_out_whole(settings, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a_good.csv").write_text(GOOD)
    (folder / "b_bad.csv").write_text("timestamp,air_temp_c\n")
    result, published = _ingest(settings, "ingest", str(folder))
    assert result.exit_code == 1
    assert "b_bad.csv" in result.output and "nothing of it published" in result.output
    assert published > 0  # the good file went out


def _era_chunks(settings, key: str) -> list[tuple[int, bytes]]:
    """(size, value) of every committed message of `key` on eras.raw."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka.consumer_config(settings, f"test-ingest-{key}"))
    parts = partitions(consumer, [ERAS_RAW])[ERAS_RAW]
    ends = {p: high for (_, p), (_, high) in watermarks(consumer, [(ERAS_RAW, p) for p in parts], timeout=30).items()}
    consumer.assign([TopicPartition(ERAS_RAW, p, 0) for p in parts])
    got, positions = [], {p: 0 for p in ends}
    deadline = time.monotonic() + 60
    while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error():
                continue
            positions[msg.partition()] = msg.offset() + 1
            if msg.key() == key.encode():
                got.append(msg.value())
        for tp in consumer.position([TopicPartition(ERAS_RAW, p) for p in ends]):
            if tp.offset >= 0:
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
    consumer.close()
    return got


def test_a_file_with_thousands_of_sensor_columns_ingests_in_seconds_in_column_groups(settings, tmp_path, unique):
    """6,000 sensors: one row's Arrow schema alone passes the payload limit, which made ingest
    bisect down to one-row chunks, each still too big for the broker (at 120 rows that took
    over 2 minutes). On a broker of its own: an era of 6,000 sensors on the session's shared
    eras.raw would keep the stages of later tests busy for a minute."""
    from infra.kafka.broker import LocalBroker

    from schemas.codec import decode_era_chunk
    from streams.assembler import EraAssembler
    from streams.processors import era_frame, era_sensors

    rng = np.random.default_rng(5)
    sensors = [f"sensor_{i:04d}" for i in range(6000)]
    frame = pd.DataFrame(rng.normal(size=(12, len(sensors))).round(3), columns=sensors)
    frame.insert(0, "timestamp", pd.date_range("2024-03-01", periods=12, freq="1min"))
    frame.insert(1, "compartment_id", f"wide{unique}")
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    broker = LocalBroker(tmp_path / "kafka", log=lambda m: None)
    broker.start()
    try:
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
        started = time.monotonic()
        result, published = _ingest(settings, "ingest", str(path))
        took = time.monotonic() - started
        assert result.exit_code == 0, result.output
        assert took < 30, took
        values = _era_chunks(settings, f"wide{unique}:2024-03-01T00:00:00")
    finally:
        broker.stop()
    assert len(values) > 1 and max(len(v) for v in values) < 1_000_000  # librdkafka's message.max.bytes
    assembler, era = EraAssembler(), None
    for offset, value in enumerate(values):
        era = assembler.add(decode_era_chunk(value), 0, offset) or era
    assert era is not None
    assert era_sensors(era) == sensors
    pd.testing.assert_frame_equal(era_frame(era), frame.drop(columns="compartment_id"), check_dtype=False)


def test_an_era_whose_grid_would_explode_is_warned_about_with_its_line_and_still_published(settings, tmp_path, unique):
    ts = [*pd.date_range("2024-03-05 00:00", periods=10, freq="1ms"), pd.Timestamp("2024-03-05 23:00")]
    path = tmp_path / "jitter.csv"
    pd.DataFrame({"timestamp": [t.isoformat() for t in ts], "compartment_id": f"j{unique}",
                  "air_temp_c": np.arange(11.0)}).to_csv(path, index=False)
    (tmp_path / "good.csv").write_text(GOOD)
    result, published = _ingest(settings, "ingest", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"jitter.csv:3: era j{unique}:2024-03-05T00:00:00: readings 1 ms apart" in result.output
    assert "82,800,001-point grid" in result.output
    assert "2 file(s): 14 rows, 2 eras" in result.output  # the jittered era is published too
    assert len(_era_chunks(settings, f"j{unique}:2024-03-05T00:00:00")) == 1


def test_labels_that_match_no_row_say_why_and_exit_nonzero(settings, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    eras = tmp_path / "eras.csv"
    eras.write_text("era_id,compartment_id,start_time,end_time\n"
                    "spring,gh1,2024-01-01 00:00,2024-01-02 00:00\n"
                    "summer,default,2024-06-01 00:00,2024-06-02 00:00\n")
    result, published = _ingest(settings, "ingest", str(data), "--eras", str(eras))
    assert result.exit_code == 1, result.output
    assert "data.csv: 3 row(s) of compartment 'default' (lines 2-4) are in no era" in result.output
    assert "outside its 1 labelled era(s), which cover 2024-06-01" in result.output
    assert "nothing ingested" in result.output and "Traceback" not in result.output
    assert published == 0


@pytest.mark.parametrize("content,expected", [
    ("timestamp,temp, temp \n2024-01-01 00:00,1,2\n", "duplicate column names (after stripping spaces): 'temp' in columns 2, 3"),
    ("timestamp,era_id,a\n2024-01-01 00:00,1,2\n", "'era_id' clash"),
])
def test_bad_column_names_fail_naming_the_file_and_columns(settings, tmp_path, content, expected):
    path = tmp_path / "cols.csv"
    path.write_text(content)
    result, published = _ingest(settings, "ingest", str(path))
    assert result.exit_code == 1, result.output
    assert "cols.csv" in result.output and expected in " ".join(result.output.split())
    assert published == 0


def test_out_of_range_timestamps_and_infinite_values_are_reported(settings, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text(GOOD + "2262-05-01 00:00,1,0\n2024-01-01 00:04,inf,0\n2024-01-01 00:05,-inf,1\n")
    result, published = _ingest(settings, "ingest", str(path))
    assert result.exit_code == 0, result.output
    assert "odd.csv:5: timestamp 2262-05-01 00:00 out of range" in result.output
    assert "odd.csv: column 'air_temp_c': 2 infinite value(s) (inf/-inf) taken as missing" in result.output
    assert "Traceback" not in result.output and published > 0


@pytest.mark.slow
def test_run_with_labels_that_match_no_row_prints_a_clear_error(settings, tmp_path, unique):
    """`run` used to wait for no era and then die with a KeyError traceback."""
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    eras = tmp_path / "eras.csv"
    eras.write_text("era_id,compartment_id,start_time,end_time\nsummer,default,2024-06-01 00:00,2024-06-02 00:00\n")
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    result = runner.invoke(app, ["--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir", str(settings.data_dir),
                                 "--run-id", f"none-{unique}", "run", "--input", str(data), "--eras", str(eras), "--timeout", "120"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a traceback
    assert "nothing ingested" in result.output and "are in no era" in result.output
