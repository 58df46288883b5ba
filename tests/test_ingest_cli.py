"""`erastream ingest` on bad input: a clear error naming the file or line, and nothing partial published."""

from __future__ import annotations

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
