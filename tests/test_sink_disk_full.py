"""Real faults under the sink's embedded ClickHouse: its directory runs out of disk mid-run, then
gets it back (also with a rebalance of the sink's group during the outage); its filesystem is
read-only when the sink starts, then writable again.

The data directory is a 64 MiB tmpfs; the test fills it with dd while the pipeline runs, so
ClickHouse's own writes fail with ENOSPC / NOT_ENOUGH_SPACE; the sink must hold and retry
its batch, and once the file is gone store every era once with the stage functions' values.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from streams import kafka
from streams.topics import STAGE_INPUTS, stage_group
from tests.harness import PipelineUnderTest
from tests.test_delivery import _assert_stored_once, _expected, _input

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def small_disk(settings):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = settings.clickhouse_path
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path) -> None:
    """dd until the disk is full (dd exits non-zero with ENOSPC: that is the point)."""
    result = subprocess.run(["dd", "if=/dev/zero", f"of={path / 'filler'}", "bs=1M"], capture_output=True, text=True)
    assert "No space left on device" in result.stderr, result.stderr


def test_disk_full_under_the_sink_then_freed(settings, unique, small_disk, tmp_path):
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    try:
        path = _input(tmp_path, "in", days=4)
        pipe.start_all()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "consuming" not in "".join(p.read_text() for p in pipe.log_dir.glob("sink-*.log")):
            time.sleep(0.2)  # the sink opened its ClickHouse and applied the schema
        _fill(small_disk)
        report = pipe.ingest(path)
        deadline = time.monotonic() + 60
        sink_log = ""
        while "ClickHouse unavailable" not in sink_log and time.monotonic() < deadline:
            pipe.watcher.poll()
            sink_log = "".join(p.read_text() for p in pipe.log_dir.glob("sink-*.log"))
        assert "ClickHouse unavailable" in sink_log, pipe.logs()
        pipe.watcher.poll()
        stored_while_full = pipe.watcher.finished(report.eras)
        (small_disk / "filler").unlink()
        pipe.wait_stored(report.eras)
        pipe.stop()
        assert stored_while_full < len(report.eras)
        assert "dead letter" not in "".join(p.read_text() for p in pipe.log_dir.glob("sink-*.log"))
        _assert_stored_once(pipe, _expected(path))
    finally:
        pipe.close()


def _sink_log(pipe) -> str:
    return "".join(p.read_text() for p in pipe.log_dir.glob("sink-*.log"))


def _revocations(pipe) -> int:
    return sum(" revoked " in line and "revoked nothing" not in line for line in _sink_log(pipe).splitlines())


def _wait_log(pipe, text: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text not in _sink_log(pipe) and time.monotonic() < deadline:
        pipe.watcher.poll()
        time.sleep(0.2)
    assert text in _sink_log(pipe), f"{text!r} not in the sink's log:\n{pipe.logs()}"


def test_a_rebalance_during_the_outage_loses_and_doubles_nothing(settings, unique, small_disk, tmp_path):
    """Issue 8, 2(a)/(d): while the sink backs off from a full disk, a second member joins its group
    and takes partitions (a real cooperative rebalance: the sink holds a batch and messages of
    partitions it no longer owns), the disk is freed while that member holds them, and then it
    leaves without committing. No ClickHouse server can run here, so the second member is a plain
    group consumer rather than a second sink with a database of its own: every era must end up in
    the one real chDB exactly once, with the clean run's values, and the sink must never exit."""
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    rival = None
    try:
        path = _input(tmp_path, "in", days=4)
        pipe.start_all()
        _wait_log(pipe, "consuming")
        _fill(small_disk)
        report = pipe.ingest(path)
        _wait_log(pipe, "ClickHouse unavailable")
        revoked_before = _revocations(pipe)
        rival = kafka.consumer(cfg, stage_group("sink"))
        rival.subscribe(list(STAGE_INPUTS["sink"]))
        deadline = time.monotonic() + 60
        while not rival.assignment() and time.monotonic() < deadline:
            rival.poll(0.2)  # reads, never commits
        assert rival.assignment(), f"the second member got no partition:\n{pipe.logs()}"
        while _revocations(pipe) == revoked_before and time.monotonic() < deadline:
            rival.poll(0.2)
        assert _revocations(pipe) > revoked_before, pipe.logs()
        (small_disk / "filler").unlink()
        held_until = time.monotonic() + 8  # the sink stores what it holds while the member keeps its share
        while time.monotonic() < held_until:
            rival.poll(0.2)
        rival.close()
        rival = None
        pipe.wait_stored(report.eras)
        assert all(p.poll() is None for p in pipe.procs["sink"]), f"the sink exited:\n{pipe.logs()}"
        pipe.stop()
        assert "dead letter" not in _sink_log(pipe)
        _assert_stored_once(pipe, _expected(path))
    finally:
        if rival is not None:
            rival.close()
        pipe.close()


def test_clickhouse_unwritable_at_start_the_sink_waits_then_stores(settings, unique, small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    try:
        path = _input(tmp_path, "in", days=3)
        pipe.start_all()
        report = pipe.ingest(path)
        deadline = time.monotonic() + 60
        while "ClickHouse unavailable at start" not in _sink_log(pipe) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ClickHouse unavailable at start" in _sink_log(pipe), pipe.logs()
        assert "Read-only file system" in _sink_log(pipe)
        time.sleep(3)
        assert all(p.poll() is None for p in pipe.procs["sink"]), f"the sink exited:\n{pipe.logs()}"
        pipe.watcher.poll()
        assert pipe.watcher.finished(report.eras) == 0
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        pipe.wait_stored(report.eras)
        pipe.stop()
        _assert_stored_once(pipe, _expected(path))
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=False)
        pipe.close()
