"""A pipeline under test: stage processes on the session broker, ingest, and waiting for results."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, TypeVar

from stages.clickhouse import connect
from streams.ingest import IngestReport, publish
from streams.local_run import DoneWatcher
from streams.settings import Settings
from streams.topics import create_topics
from streams import kafka
from streams.workers import spawn_stage, stop_processes

T = TypeVar("T")


def wait_until(condition: Callable[[], T], seconds: float, what: str, details: Callable[[], str] | None = None) -> T:
    """condition()'s first truthy value within `seconds` (polled every 0.5 s); else an
    AssertionError naming `what`, with `details()` (logs, say) appended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {seconds:.0f} s" + (f"; logs:\n{details()}" if details else ""))


class PipelineUnderTest:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.log_dir = settings.data_dir / "logs"
        self.procs: dict[str, list[subprocess.Popen]] = {}
        create_topics(kafka.admin_client(settings), settings.topic_partitions)
        self.watcher = DoneWatcher(settings)

    def start(self, stage: str, workers: int = 1, **extra_env: str) -> list[subprocess.Popen]:
        procs = spawn_stage(self.settings, stage, workers, log_dir=self.log_dir, extra_env=extra_env or None)
        self.procs.setdefault(stage, []).extend(procs)
        return procs

    def start_all(self, **extra_env: str) -> None:
        for stage in ("preprocess", "tsfresh", "rolling", "sink"):
            self.start(stage, **extra_env)

    def stop(self, stage: str | None = None) -> None:
        names = [stage] if stage else list(self.procs)
        for name in names:
            stop_processes(self.procs.pop(name, []))

    def ingest(self, path: Path, era_length: str = "1D") -> IngestReport:
        return publish(self.settings, path, None, era_length)

    def wait_stored(self, keys: list[str], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watcher.poll()
            if self.watcher.finished(keys) == len(keys):
                return
        raise AssertionError(f"{self.watcher.finished(keys)} of {len(keys)} eras stored in {timeout:.0f} s; logs:\n{self.logs()}")

    def wait_exit(self, proc: subprocess.Popen, timeout: float = 120.0) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {proc.args} still running after {timeout:.0f} s; logs:\n{self.logs()}") from None

    def logs(self, chars: int = 2500) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def close(self) -> None:
        self.stop()
        self.watcher.close()

    def clickhouse(self):
        """Open the embedded ClickHouse; only once the sink has stopped."""
        return connect(self.settings.clickhouse_url, self.settings.clickhouse_path)


def count_rows(client, table: str, run_id: str) -> tuple[int, int]:
    """(rows, rows after FINAL) of one run."""
    plain = client.query(f"SELECT count() FROM {table} WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
    final = client.query(f"SELECT count() FROM {table} FINAL WHERE run_id = {{r:String}}", parameters={"r": run_id}).result_rows[0][0]
    return plain, final
