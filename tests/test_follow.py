"""`erastream ingest --follow`: files dropped one by one into a directory come out as features.

The first tests need no broker (chunk layout, preprocess of a followed era, file
stability); the others run on the session's real Kafka broker, the last one with every
stage as its own process and embedded ClickHouse.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import decode_era_chunk, encode_era_chunk
from stages.clickhouse import connect
from stages.era_window import CLOSED_BY_CLOCK, CLOSED_BY_DATA, EraWindow, SourceRows, apply_plan, plan_poll
from stages.ingest import assign_eras, read_sensor_file
from stages.preprocess import preprocess_era
from stages.sample_data import generate_sample, write_sample
from streams import follow as follow_mod
from streams import kafka
from streams.assembler import EraAssembler
from streams.follow import DirectoryFollower, FollowError
from streams.local_run import DoneWatcher
from streams.topic_reader import watermarks
from streams.processors import PreprocessProcessor
from streams.settings import load_settings
from streams.topics import ERAS_CLEAN, ERAS_RAW, create_topics
from streams.workers import STAGES, spawn_stage, stop_processes

NEVER = None  # grace: close eras only by data past their end


def _drop(directory: Path, name: str, frame: pd.DataFrame) -> Path:
    """Write under a dotfile name, then rename: how a well-behaved uploader lands a file."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.part"
    write_sample(frame, tmp)
    final = directory / name
    tmp.rename(final)
    return final


def _halves(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Each day split at noon: file names sort in time order."""
    out = []
    for day, group in frame.groupby(frame["timestamp"].dt.floor("1D")):
        noon = day + pd.Timedelta("12h")
        out.append((f"{day:%Y%m%d}_a.csv", group[group["timestamp"] < noon]))
        out.append((f"{day:%Y%m%d}_b.csv", group[group["timestamp"] >= noon]))
    return out


# ---------------------------------------------------------------- no broker
def test_followed_era_with_a_new_sensor_and_an_empty_last_chunk_preprocesses_like_the_whole(tmp_path):
    """Chunks from three polls (the second file has one more sensor, the last chunk is empty)
    reassemble and preprocess exactly like the era read in one piece."""
    settings = load_settings(data_dir=tmp_path / "data", batch_size=20, feature_set="minimal")
    landing = tmp_path / "in"
    landing.mkdir()
    follower = DirectoryFollower(settings, landing, grace=NEVER)
    frame = generate_sample(days=1, freq="10min", seed=2, compartments=("gh",))
    first = frame[frame["timestamp"] < "2024-03-01 12:00"].drop(columns=["spot_price_dkk_mwh"])
    second = frame[frame["timestamp"] >= "2024-03-01 12:00"]
    sensors_1 = [c for c in first.columns if c not in ("timestamp", "compartment_id")]
    sensors_2 = [c for c in second.columns if c not in ("timestamp", "compartment_id")]
    clock = pd.Timestamp("2024-03-01 23:00")

    window, encoded = EraWindow(), []
    for sources in ([SourceRows("a.csv", first, sensors_1)], [SourceRows("b.csv", second, sensors_2)],
                    [SourceRows("c.csv", generate_sample(days=1, freq="1h", seed=3, compartments=("gh",)).assign(
                        timestamp=lambda f: f["timestamp"] + pd.Timedelta("1D")), sensors_2)]):
        plan = plan_poll(window, sources, now=clock, grace=NEVER)
        chunks = {}
        for batch in plan.batches:
            made = follower._chunks(batch)
            chunks[batch.key] = len(made)
            if batch.key == "gh:2024-03-01T00:00:00":
                encoded += [encode_era_chunk(c) for c in made]
        window = apply_plan(window, plan, chunks)

    decoded = [decode_era_chunk(v) for v in encoded]
    assert [c.chunk_index for c in decoded] == list(range(len(decoded)))
    assert [c.last for c in decoded] == [False] * (len(decoded) - 1) + [True]
    assert decoded[-1].chunk_count == len(decoded) and decoded[-1].row_start == decoded[-1].row_end == len(frame)
    assert decoded[0].sensors == sensors_1 and decoded[-1].sensors == sensors_1 + ["spot_price_dkk_mwh"]
    assert [c.row_start for c in decoded[1:]] == [c.row_end for c in decoded[:-1]]

    assembler, era = EraAssembler(), None
    for offset, chunk in enumerate(decoded):
        era = assembler.add(chunk, 0, offset)
    assert era is not None
    out = PreprocessProcessor(settings)(era)
    clean_chunks = [decode_era_chunk(o.value) for o in out]
    assert all(o.topic == ERAS_CLEAN for o in out)
    assert clean_chunks[0].sensors == sensors_2
    from schemas.payload import frame_from_ipc

    got = pd.concat([frame_from_ipc(c.payload) for c in clean_chunks], ignore_index=True)
    whole = pd.concat([first, second], ignore_index=True)
    expected = preprocess_era(whole, sensors_2)
    pd.testing.assert_frame_equal(got, expected)


def test_a_file_is_read_only_once_its_size_holds_for_one_poll(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    landing = tmp_path / "in"
    landing.mkdir()
    follower = DirectoryFollower(settings, landing, poll_interval=30)
    fresh = landing / "fresh.csv"
    fresh.write_text("timestamp,a\n2024-03-01 00:00,1\n")
    old = landing / "old.csv.gz"
    old.write_bytes(b"")
    past = time.time() - 120
    import os

    os.utime(old, (past, past))
    (landing / "notes.txt").write_text("not a sensor file")
    (landing / ".upload.csv").write_text("timestamp,a\n")
    assert [name for name, _, _ in follower._scan()] == ["old.csv.gz"]  # fresh.csv: just written
    assert [name for name, _, _ in follower._scan()] == ["fresh.csv", "old.csv.gz"]  # unchanged since last poll
    with fresh.open("a") as fh:
        fh.write("2024-03-01 00:10,2\n")
    assert [name for name, _, _ in follower._scan()] == ["old.csv.gz"]  # grew: wait again


def test_a_csv_cut_in_the_middle_of_a_line_waits_for_the_rest(tmp_path):
    """A writer that stalled mid-line: older than a poll and unchanged across polls, but its
    last line has no newline yet, so it is not read half-written; once it stays so for
    INCOMPLETE_LINE_POLLS intervals it is read as it is (a file without a final newline)."""
    import os

    settings = load_settings(data_dir=tmp_path / "data")
    landing = tmp_path / "in"
    landing.mkdir()
    follower = DirectoryFollower(settings, landing, poll_interval=30)
    half = landing / "half.csv"
    half.write_text("timestamp,a\n2024-03-01 00:00,1\n2024-03-01 00:1")
    stalled = time.time() - 120  # older than one poll, younger than 10
    os.utime(half, (stalled, stalled))
    assert follower._scan() == []
    assert follower._scan() == []  # unchanged since the last poll, still half a line
    with half.open("a") as fh:
        fh.write("0,2\n")
    os.utime(half, (stalled, stalled))
    assert [name for name, _, _ in follower._scan()] == ["half.csv"]
    assert read_sensor_file(half).frame["a"].tolist() == [1.0, 2.0]
    no_newline = landing / "last.csv"
    no_newline.write_text("timestamp,a\n2024-03-01 00:00,1")
    long_ago = time.time() - 11 * 30
    os.utime(no_newline, (long_ago, long_ago))
    assert [name for name, _, _ in follower._scan()] == ["half.csv", "last.csv"]


def test_bad_files_are_reported_once_and_retried_only_when_changed(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    landing = tmp_path / "in"
    landing.mkdir()
    events: list[str] = []
    follower = DirectoryFollower(settings, landing, poll_interval=0.01, on_event=events.append)
    bad = landing / "bad.csv"
    bad.write_text("time,a\n2024-03-01 00:00,1\n")
    time.sleep(0.02)
    report = follower._poll(follower._scan(), pd.Timestamp("2024-03-01"))
    assert list(report.failed) == ["bad.csv"] and "no 'timestamp' column" in report.failed["bad.csv"]
    assert report.chunks == 0 and any("file failed" in e for e in events)
    time.sleep(0.02)
    assert follower._scan() == []  # remembered as failed
    again = DirectoryFollower(settings, landing, poll_interval=0.01)  # and across restarts
    assert again._scan() == [] and "bad.csv" in again.state["failed"]
    bad.write_text("time,a\n2024-03-01 00:00,1\n2024-03-01 00:10,2\n")
    time.sleep(0.02)
    assert [name for name, _, _ in again._scan()] == ["bad.csv"]  # content changed: tried again


def test_two_followers_cannot_share_a_directory(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    (tmp_path / "in").mkdir()
    first = DirectoryFollower(settings, tmp_path / "in")
    first.lock()
    try:
        with pytest.raises(FollowError, match="already followed"):
            DirectoryFollower(settings, tmp_path / "in").lock()
    finally:
        first.close()
    DirectoryFollower(settings, tmp_path / "in").lock()  # free again


# ---------------------------------------------------------------- real broker
def _raw_chunks(settings, key: str) -> list:
    """Every committed chunk of `key` on eras.raw, in offset order."""
    consumer = Consumer(kafka.consumer_config(settings, f"test-follow-{key}"))
    meta = consumer.list_topics(ERAS_RAW, timeout=30).topics[ERAS_RAW]
    ends = {p: high for (_, p), (_, high) in watermarks(consumer, [(ERAS_RAW, p) for p in meta.partitions], timeout=30).items()}
    consumer.assign([TopicPartition(ERAS_RAW, p, 0) for p in meta.partitions])
    got, positions = [], {p: 0 for p in ends}
    deadline = time.monotonic() + 30
    while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error():
                continue
            positions[msg.partition()] = msg.offset() + 1
            if msg.key() == key.encode():
                got.append(decode_era_chunk(msg.value()))
        for tp in consumer.position([TopicPartition(ERAS_RAW, p) for p in ends]):
            if tp.offset >= 0:
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
    consumer.close()
    return got


def _raw_end(settings) -> int:
    """Sum of eras.raw's high watermarks (messages plus transaction markers)."""
    consumer = Consumer(kafka.consumer_config(settings, "test-follow-ends"))
    meta = consumer.list_topics(ERAS_RAW, timeout=30).topics[ERAS_RAW]
    total = sum(high for _, high in watermarks(consumer, [(ERAS_RAW, p) for p in meta.partitions], timeout=30).values())
    consumer.close()
    return total


@pytest.mark.kafka
def test_a_poll_cut_short_after_its_commit_is_republished_identically(settings, tmp_path, unique, monkeypatch):
    """Death between the Kafka commit and the state write: the next follower replays the poll
    from the saved state and sends the very same chunks (same indices, same bytes)."""
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    landing = tmp_path / "in"
    comp = f"crash{unique}"
    frame = generate_sample(days=1, freq="10min", seed=4, compartments=(comp,))
    _drop(landing, "a.csv", frame[frame["timestamp"] < "2024-03-01 12:00"])
    clock = lambda: pd.Timestamp("2024-03-01 13:00")  # noqa: E731

    time.sleep(0.02)
    original_hit = follow_mod.failpoints.hit

    class Died(Exception):
        pass

    def hit(name):
        if name == "follow.after_commit":
            raise Died()
        original_hit(name)

    monkeypatch.setattr(follow_mod.failpoints, "hit", hit)
    doomed = DirectoryFollower(settings, landing, grace=NEVER, poll_interval=0.01, clock=clock)
    with pytest.raises(Died):
        doomed.poll_once()
    doomed.close()
    monkeypatch.setattr(follow_mod.failpoints, "hit", original_hit)
    key = f"{comp}:2024-03-01T00:00:00"
    first = _raw_chunks(settings, key)
    assert [(c.chunk_index, c.last, c.row_end) for c in first] == [(0, False, 72)]

    # a new file lands meanwhile; the replay must not mix it into the cut-short poll
    _drop(landing, "0_early.csv", frame[frame["timestamp"] >= "2024-03-01 12:00"])
    successor = DirectoryFollower(settings, landing, grace=NEVER, poll_interval=0.01, clock=lambda: pd.Timestamp("2030-01-01"))
    report = successor.poll_once()
    assert report.replayed and [f.name for f in report.published] == ["a.csv"]
    second = _raw_chunks(settings, key)[len(first):]
    assert [(c.chunk_index, c.last, c.row_start, c.row_end, c.payload) for c in second] == \
        [(c.chunk_index, c.last, c.row_start, c.row_end, c.payload) for c in first]
    time.sleep(0.02)
    report = successor.poll_once()  # now the new file, numbered on
    assert [f.name for f in report.published] == ["0_early.csv"]
    successor.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_files_dropped_one_by_one_all_come_out_as_features_and_a_restart_publishes_nothing_twice(settings, tmp_path, unique):
    run_id = f"follow-{unique}"
    comp = f"gh{unique}"
    cfg = settings.model_copy(update={"run_id": run_id, "batch_size": 50})
    create_topics(kafka.admin_client(cfg), cfg.topic_partitions)
    frame = generate_sample(days=2, freq="10min", seed=8, compartments=(comp,))
    reference = tmp_path / "whole.csv"
    write_sample(frame, reference)
    table = read_sensor_file(reference)
    expected = {spec.key: len(preprocess_era(rows, table.sensors)) for spec, rows in assign_eras(table.frame, None, "1D")}
    day1, day2 = sorted(expected)

    landing = tmp_path / "landing"
    landing.mkdir()
    watcher = DoneWatcher(cfg)
    log_dir = tmp_path / "logs"
    procs = [p for stage in STAGES for p in spawn_stage(cfg, stage, 1, log_dir=log_dir)]
    events: list[str] = []
    try:
        follower = DirectoryFollower(cfg, landing, grace=NEVER, poll_interval=0.2, on_event=events.append)
        stop = threading.Event()
        thread = threading.Thread(target=follower.run, args=(stop.is_set,), daemon=True)
        thread.start()

        def wait_until(condition, what: str, timeout: float = 60.0) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                watcher.poll(0.2)
                for proc in procs:
                    assert proc.poll() is None, f"a stage died; logs in {log_dir}: " + "".join(
                        f.read_text(errors="replace")[-2000:] for f in log_dir.glob("*.log"))
                assert stop.is_set() or thread.is_alive(), "the follower stopped"
                assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {events}"

        halves = _halves(frame)
        for i, (name, part) in enumerate(halves):
            _drop(landing, name, part)
            wait_until(lambda: name in follower.state["files"], f"{name} published")
            if i == 1:  # a bad file in between: reported, nothing of it published, the follower goes on
                (landing / "20240301_c.csv").write_text("time,air_temp_c\n2024-03-01 13:00,20\n")
                wait_until(lambda: "20240301_c.csv" in follower.state["failed"], "the bad file reported")
        # day 1 closed when day 2's data arrived; day 2 stays open (no data past its end, grace never)
        wait_until(lambda: watcher.finished([day1]) == 1, "day 1 stored")
        assert list(follower.state["window"]["open"]) == [day2]
        assert any(e.startswith(f"closed era {day1}: {CLOSED_BY_DATA}") for e in events)
        assert any(e.startswith("published 20240301_a.csv") and f"opened {day1}" in e for e in events)
        assert any("20240301_c.csv" in e and "no 'timestamp' column" in e for e in events)
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        open_state = follower.state["window"]["open"][day2]
        assert open_state["rows"] == len(frame[frame["timestamp"] >= "2024-03-02"]) and open_state["next_chunk"] >= 2

        # restart: every file is known, nothing is published again (not even a transaction marker)
        before = _raw_end(cfg)
        again = DirectoryFollower(cfg, landing, grace=NEVER, poll_interval=0.05)
        reports = []
        for _ in range(3):
            reports.append(again.poll_once())
            time.sleep(0.06)
        again.close()
        assert all(r.chunks == 0 and not r.published and not r.failed for r in reports)
        assert _raw_end(cfg) == before
        assert watcher.finished([day2]) == 0

        # restarted with grace 0: the open day 2 closes by the clock with an empty last chunk
        closer = DirectoryFollower(cfg, landing, grace=pd.Timedelta(0), poll_interval=0.05)
        report = closer.poll_once()
        closer.close()
        assert report.closed == {day2: CLOSED_BY_CLOCK} and report.chunks == 1 and report.rows == 0 and not report.published
        wait_until(lambda: watcher.finished([day1, day2]) == 2, "day 2 stored")
    finally:
        watcher.close()
        stop_processes(procs)

    client = connect(None, cfg.clickhouse_path)
    try:
        eras = client.query_df("SELECT compartment_id, era_id, rows FROM eras FINAL WHERE run_id = {r:String}",
                               parameters={"r": run_id})
        assert {f"{c}:{e}": int(r) for c, e, r in eras.itertuples(index=False)} == expected
        lengths = client.query_df(
            "SELECT compartment_id, era_id, sensor, value FROM era_features FINAL "
            "WHERE run_id = {r:String} AND source = 'tsfresh' AND feature = 'length'", parameters={"r": run_id})
        lengths["key"] = lengths["compartment_id"] + ":" + lengths["era_id"]
        assert set(lengths["key"]) == set(expected)
        for key, rows in expected.items():  # both halves of each day joined into one era
            values = lengths.loc[lengths["key"] == key, "value"].to_numpy()
            assert len(values) == len(table.sensors) and np.all(values == rows), key
        for name in ("era_features", "rolling_features"):  # each stored once
            plain = client.query(f"SELECT count() FROM {name} WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
            final = client.query(f"SELECT count() FROM {name} FINAL WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
            assert plain == final > 0, name
    finally:
        client.close()


@pytest.mark.kafka
def test_a_row_far_ahead_of_the_clock_is_a_bad_row_and_does_not_move_the_watermark(settings, tmp_path, unique):
    """Year 2100 in one row used to become the compartment's watermark: the day's era closed
    by that "data past its end" and every real row after it was dropped as late."""
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    landing = tmp_path / "in"
    landing.mkdir()
    comp = f"fut{unique}"
    follower = DirectoryFollower(settings, landing, grace=NEVER, poll_interval=0.01,
                                 clock=lambda: pd.Timestamp("2024-03-01 12:00"))
    try:
        (landing / "a.csv").write_text(f"timestamp,compartment_id,a\n2024-03-01 00:00,{comp},1\n"
                                       f"2100-01-01 00:00,{comp},9\n2024-03-01 06:00,{comp},2\n")
        time.sleep(0.05)
        first = follower.poll_once()
        assert [(b.line, "ahead of the clock" in b.reason) for b in first.bad_rows] == [(3, True)]
        assert first.rows == 2 and first.closed == {}
        assert EraWindow.from_json(follower.state["window"]).watermarks[comp] == pd.Timestamp("2024-03-01 06:00")
        (landing / "b.csv").write_text(f"timestamp,compartment_id,a\n2024-03-01 07:00,{comp},3\n")
        time.sleep(0.05)
        second = follower.poll_once()
        assert second.late_rows == 0 and second.rows == 1
    finally:
        follower.close()


@pytest.mark.kafka
def test_an_unreadable_file_is_reported_and_the_follower_goes_on(settings, tmp_path, unique):
    """A real permission fault: the follower runs as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (setpriv drops them), so mode 000 denies it the file."""
    import os
    import signal
    import subprocess
    import sys

    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    landing = tmp_path / "landing"
    landing.mkdir()
    locked = landing / "a_locked.csv"
    locked.write_text("timestamp,a\n2024-03-01 00:00,1\n")
    locked.chmod(0)
    (landing / "b_dir.csv").mkdir()  # a directory in place of a file
    base = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "streams.cli",
            "--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir", str(tmp_path / "data"),
            "--run-id", f"perm-{unique}", "ingest", str(landing), "--follow", "--poll", "0.2", "--grace", "never"]
    probe = subprocess.run(base[:4] + ["-c", f"open({str(locked)!r}).read()"], capture_output=True, text=True)
    assert "PermissionError" in probe.stderr  # the fault is real for this process
    proc = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        _drop(landing, "c_good.csv", generate_sample(days=1, freq="30min", seed=1, compartments=(f"perm{unique}",)))
        state_dir = tmp_path / "data" / "follow"
        deadline = time.monotonic() + 60
        while not any('"c_good.csv"' in p.read_text() for p in state_dir.glob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)  # a few more polls: the unreadable file is not reported again
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    told = [line for line in out.splitlines() if line.startswith(f"file skipped for now: {locked}: cannot read: Permission denied")]
    assert len(told) == 1, out  # once, not every poll (the log line repeats it, prefixed)
    assert f"{landing / 'b_dir.csv'}: not a regular file" in out
    assert "published c_good.csv: 48 rows" in out and "Traceback" not in out


@pytest.mark.kafka
def test_cli_follow_prints_each_file_and_stops_cleanly_on_sigterm(settings, tmp_path, unique):
    import os
    import signal
    import subprocess
    import sys

    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    landing = tmp_path / "landing"
    landing.mkdir()
    base = [sys.executable, "-m", "streams.cli", "--bootstrap-servers", settings.kafka_bootstrap_servers,
            "--data-dir", str(tmp_path / "data"), "--run-id", f"cli-{unique}", "ingest"]
    env = {**os.environ, "COLUMNS": "200"}
    bad = subprocess.run([*base, str(landing), "--follow", "--grace", "soon"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "grace" in bad.stderr

    proc = subprocess.Popen([*base, str(landing), "--follow", "--poll", "0.2", "--grace", "never"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        frame = generate_sample(days=1, freq="30min", seed=1, compartments=(f"cli{unique}",))
        _drop(landing, "one.csv", frame)
        state_dir = tmp_path / "data" / "follow"
        deadline = time.monotonic() + 60
        while not any('"one.csv"' in p.read_text() for p in state_dir.glob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"published one.csv: 48 rows -> era(s) cli{unique}:2024-03-01T00:00:00" in out
    assert "stopped: 1 file(s) published (48 rows" in out
