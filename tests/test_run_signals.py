"""Ctrl-C / SIGTERM on `erastream run`: it stops its stages and the broker it started, and exits
128 + the signal's number, within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from stages.sample_data import generate_sample

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_stage(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except psutil.NoSuchProcess:
        return False
    return "streams.cli" in cmd and "stage" in cmd


def _is_broker(proc: psutil.Process) -> bool:
    try:
        return "kafka.Kafka" in proc.cmdline()
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_stages_and_broker(tmp_path, signum):
    # enough work that the run is still going when the signal comes
    generate_sample(days=6, freq="10min", seed=9).to_csv(tmp_path / "in.csv", index=False)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}  # the run starts its own broker
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "--data-dir", str(tmp_path / "data"), "--feature-set", "efficient",
         "run", "--input", str(tmp_path / "in.csv")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # mid-run: the broker and all four stages are up
        deadline = time.monotonic() + 240
        seen: dict[int, psutil.Process] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            for child in _descendants(proc.pid):
                seen.setdefault(child.pid, child)
            if sum(map(_is_stage, seen.values())) >= 4 and any(map(_is_broker, seen.values())):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        assert sum(map(_is_stage, seen.values())) >= 4 and any(map(_is_broker, seen.values()))
        time.sleep(3)
        for child in _descendants(proc.pid):
            seen.setdefault(child.pid, child)
        sent = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
        output = proc.stdout.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 128 + signum, output
    assert "interrupted" in output and "Traceback" not in output
    assert took < 30, f"took {took:.1f} s to stop"
    left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
