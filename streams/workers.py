"""Stage processes: run one in this process, or N as children in one consumer group."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pydantic import SecretStr

from streams.settings import Settings
from streams.topics import STAGE_INPUTS

log = logging.getLogger(__name__)

STAGES = tuple(STAGE_INPUTS)
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class StopSignal:
    """Set by SIGTERM/SIGINT; the runner finishes its batch and leaves the group cleanly."""

    def __init__(self) -> None:
        self.stopped = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:  # noqa: ARG002
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


def pin_blas_threads() -> None:
    """One BLAS thread per process: several processes with several threads each ran 3-9x slower."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def run_stage(
    settings: Settings,
    name: str,
    group_id: str | None = None,
    run_id: str | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Run one worker of stage `name` until SIGTERM (or until `until()` is true).

    run_id re-stamps every output with that run id (replays under a new run id).
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    pin_blas_threads()
    signalled = StopSignal()
    stop = signalled if until is None else (lambda: signalled() or until())
    if name == "sink":
        from streams.sink import SinkRunner

        SinkRunner(settings, group_id=group_id, run_id=run_id).run(stop)
        return
    from streams.processors import PROCESSORS
    from streams.runner import TransactionalStageRunner

    (topic,) = STAGE_INPUTS[name]
    TransactionalStageRunner(settings, name, topic, PROCESSORS[name](settings), group_id=group_id, run_id=run_id).run(stop)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a child process reads them from."""
    env: dict[str, str] = {}
    for field_name in Settings.model_fields:
        value = getattr(settings, field_name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(map(str, value))
        elif isinstance(value, Path):
            text = str(value.resolve())
        elif isinstance(value, SecretStr):  # the child needs the value; this dict is never logged
            text = value.get_secret_value()
        else:
            text = str(value)
        env[field_name.upper()] = text
    return env


def spawn_stage(
    settings: Settings,
    name: str,
    workers: int,
    log_dir: Path | None = None,
    group_id: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> list[subprocess.Popen]:
    """Start `workers` child processes of one stage; logs go to log_dir/<stage>-<i>.log when given."""
    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    for var in BLAS_THREAD_VARS:
        env.setdefault(var, "1")
    procs = []
    for i in range(workers):
        if settings.metrics_port:  # one /metrics port per worker process
            env["METRICS_PORT"] = str(settings.metrics_port + i)
        cmd = [sys.executable, "-m", "streams.cli", "stage", name, "--workers", "1"]
        if group_id:
            cmd += ["--group", group_id]
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            out = open(log_dir / f"{name}-{i}.log", "ab")
        else:
            out = None
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL))
        if out is not None:
            out.close()
    return procs


def stop_processes(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM every process, then SIGKILL whatever is left after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait(timeout=10)


def supervise(procs: list[subprocess.Popen]) -> int:
    """Wait for children, passing SIGTERM/SIGINT on; returns the worst exit code."""
    def forward(signum, frame):  # noqa: ARG001
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return max((abs(c) for c in codes), default=0)
