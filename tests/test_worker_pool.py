"""Stage worker pools must not inherit the state of the parent's other threads."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from concurrent.futures.process import BrokenProcessPool

import pytest

from stages.worker_pool import discard_executor, shared_executor, worker_context

_held_elsewhere = threading.Lock()


def _lock_is_free(_: int) -> bool:
    acquired = _held_elsewhere.acquire(timeout=2)
    if acquired:
        _held_elsewhere.release()
    return acquired


def _pool_sees_free_lock(ctx) -> bool:
    """Start a pool while another thread of this process holds a lock; can a worker take it?"""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _held_elsewhere:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(5)
    try:
        with ctx.Pool(1) as pool:
            return pool.map(_lock_is_free, [0])[0]
    finally:
        release.set()
        holder.join()


def _check_in_fresh_process(context: str) -> bool:
    """Run the check in a new interpreter: forking this test process, whose other threads
    (librdkafka, chDB) may hold any lock, can hang the forked child itself, not just the check."""
    code = ("import multiprocessing; from stages.worker_pool import worker_context; "
            "from tests.test_worker_pool import _pool_sees_free_lock; "
            f"ctx = worker_context() if {context!r} == 'worker' else multiprocessing.get_context({context!r}); "
            "print(_pool_sees_free_lock(ctx))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] == "True"


def test_workers_do_not_inherit_a_lock_another_thread_holds():
    # A forked worker would find the lock taken for ever: the CI hang in a tsfresh pool.
    assert _check_in_fresh_process("worker")


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_the_check_catches_a_plain_fork():
    assert not _check_in_fresh_process("fork")


def _no_setup() -> None:
    pass


def _die(_: int) -> None:
    os._exit(3)


def test_shared_executor_is_kept_and_a_broken_one_replaced():
    pool = shared_executor(1, _no_setup)
    assert shared_executor(1, _no_setup) is pool  # workers started once per process
    assert list(pool.map(abs, [-2])) == [2]
    with pytest.raises(BrokenProcessPool):
        list(pool.map(_die, [0]))
    discard_executor(pool)
    fresh = shared_executor(1, _no_setup)
    assert fresh is not pool
    assert list(fresh.map(abs, [-5])) == [5]
    discard_executor(fresh)
