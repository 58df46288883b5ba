"""`erastream stage NAME --workers N` restarts a worker that died, with backoff, and stops
restarting once it is SIGTERM'd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from streams import kafka
from streams.topics import create_topics
from streams.workers import restart_delay
from tests.harness import wait_until


def test_restart_delay_doubles_up_to_its_cap():
    assert [restart_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert restart_delay(0) == restart_delay(1) == 1.0


def _group_member_pids(settings, group: str) -> set[int]:
    """The pids in the members' client ids (`<stage>-<host>-<pid>-<suffix>`)."""
    admin = kafka.admin_client(settings)
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    except Exception:  # noqa: BLE001 - the group does not exist yet
        return set()
    return {int(m.client_id.split("-")[-2]) for m in description.members if m.client_id.split("-")[-2].isdigit()}


@pytest.mark.kafka
def test_a_killed_worker_is_restarted_and_rejoins_the_group(settings, tmp_path, unique):
    create_topics(kafka.admin_client(settings), settings.topic_partitions)
    group = f"test.supervise.{unique}"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(tmp_path / "supervisor.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "--bootstrap-servers", settings.kafka_bootstrap_servers,
         "--data-dir", str(settings.data_dir), "stage", "tsfresh", "--workers", "2", "--group", group],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    supervisor = psutil.Process(proc.pid)
    try:
        children = wait_until(lambda: len(supervisor.children()) == 2 and supervisor.children(), 60, "two workers started")
        first = {c.pid for c in children}
        wait_until(lambda: _group_member_pids(settings, group) == first, 120, f"both workers {first} in the group")

        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        survivor = first - {victim}
        new = wait_until(lambda: {c.pid for c in supervisor.children()} - first, 30, "a new worker started")
        assert len(new) == 1 and proc.poll() is None
        wait_until(lambda: _group_member_pids(settings, group) == survivor | new, 120, f"the new worker {new} in the group")
        text = (tmp_path / "supervisor.log").read_text(errors="replace")
        assert f"pid {victim}) died with signal {signal.SIGKILL.value}; restarting in 1.0 s" in text

        # SIGTERM: the workers stop, nothing is restarted, the supervisor exits cleanly
        workers = supervisor.children()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
