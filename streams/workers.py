"""Stage processes: run one in this process, or N as children in one consumer group."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

from pydantic import SecretStr

from streams.settings import Settings
from streams.topics import STAGE_INPUTS

log = logging.getLogger(__name__)

STAGES = tuple(STAGE_INPUTS)
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class StopSignal:
    """Set by SIGTERM/SIGINT; the runner finishes its batch and leaves the group cleanly.

    Used as a context manager, the previous handlers come back on exit: a stage run inside a
    longer-lived process (a replay, a test) must not leave SIGTERM caught, or that process and
    every child it forks later would ignore it.
    """

    def __init__(self) -> None:
        self.stopped = False
        self._previous = {sig: signal.signal(sig, self._set) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _set(self, signum, frame) -> None:  # noqa: ARG002
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped

    def __enter__(self) -> StopSignal:
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def default_n_jobs(settings: Settings, workers: int) -> Settings:
    """N_JOBS, when neither the environment nor a flag set it: the cores the stage's own worker
    processes leave over (os.cpu_count() - workers, at least 1), so N workers with their tsfresh
    pools use the machine without the user sizing the pool by hand."""
    if "n_jobs" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"n_jobs": max(1, (os.cpu_count() or 1) - workers)})


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
    with StopSignal() as signalled:
        stop = signalled if until is None else (lambda: signalled() or until())
        if name == "sink":
            from streams.sink import SinkRunner

            SinkRunner(settings, group_id=group_id, run_id=run_id).run(stop)
            return
        from streams.processors import PROCESSORS
        from streams.runner import TransactionalStageRunner

        (topic,) = STAGE_INPUTS[name]
        TransactionalStageRunner(settings, name, topic, PROCESSORS[name](settings), group_id=group_id,
                                 run_id=run_id).run(stop)


def replace_process(reason: str) -> NoReturn:
    """Run this process's own command line again in its place (exec: same pid, fresh interpreter).

    For a stage whose compute was abandoned at ERA_COMPUTE_TIMEOUT_S: the stuck thread dies
    with the old image, and a supervisor (`stage --workers N`, `erastream run`, systemd)
    sees the same process go on instead of a death to report or restart.
    """
    log.warning("%s; restarting this worker process in place (pid %d)", reason, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


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
    settings = default_n_jobs(settings, workers)
    return [spawn_worker(settings, name, i, log_dir, group_id, extra_env) for i in range(workers)]


def spawn_worker(
    settings: Settings,
    name: str,
    index: int,
    log_dir: Path | None = None,
    group_id: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start worker number `index` of a stage (its metrics port and log file follow the index)."""
    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    for var in BLAS_THREAD_VARS:
        env.setdefault(var, "1")
    if settings.metrics_port:  # one /metrics port per worker process
        env["METRICS_PORT"] = str(settings.metrics_port + index)
    cmd = [sys.executable, "-m", "streams.cli", "stage", name, "--workers", "1"]
    if group_id:
        cmd += ["--group", group_id]
    out = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{name}-{index}.log", "ab")
    try:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL)
    finally:
        if out is not None:
            out.close()


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


def restart_delay(failures: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before restarting a worker after `failures` deaths in a row (1, 2, 4, ... cap)."""
    return min(cap, base * 2 ** max(failures - 1, 0))


@dataclass
class _Slot:
    proc: subprocess.Popen
    started: float
    failures: int = 0  # deaths in a row; reset once a worker outlived STABLE_S
    restart_at: float | None = None  # dead, waiting for its backoff


def supervise(
    start: Callable[[int], subprocess.Popen],
    workers: int,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    stable_s: float = 60.0,
    tick: float = 0.2,
) -> int:
    """Run `workers` children made by start(i), restarting one that dies until SIGTERM/SIGINT.

    A child that exits non-zero or by a signal, without having been asked to stop, is started
    again after restart_delay() (doubling per death in a row, capped; a child that ran for
    stable_s starts the count afresh). A child that exits 0 by itself is left stopped. On
    SIGTERM/SIGINT every child gets SIGTERM, nothing is restarted any more, and the result is
    the worst exit code of the children (0 when all stopped cleanly).
    """
    stopping = False
    slots = [_Slot(start(i), time.monotonic()) for i in range(workers)]

    def stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True
        for slot in slots:
            if slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping:
            now = time.monotonic()
            for i, slot in enumerate(slots):
                if slot.restart_at is not None:
                    if now >= slot.restart_at and not stopping:
                        slot.proc, slot.started, slot.restart_at = start(i), now, None
                        log.info("worker %d restarted as pid %d", i, slot.proc.pid)
                    continue
                code = slot.proc.poll()
                if code is None or code == 0:
                    continue
                slot.failures = 1 if now - slot.started >= stable_s else slot.failures + 1
                delay = restart_delay(slot.failures, base_delay, max_delay)
                how = f"signal {-code}" if code < 0 else f"code {code}"
                log.warning("worker %d (pid %d) died with %s; restarting in %.1f s (death %d in a row)",
                            i, slot.proc.pid, how, delay, slot.failures)
                slot.restart_at = now + delay
            if all(s.restart_at is None and s.proc.poll() == 0 for s in slots):
                break  # every child finished by itself
            time.sleep(tick)
        codes = [slot.proc.wait() for slot in slots]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((abs(c) for c in codes), default=0)
