"""How the CPU stages start worker processes: never by a bare fork() of a busy process.

A stage process runs librdkafka's threads, the runner's compute thread and BLAS/numba
thread pools. fork() copies only the calling thread, so a child can inherit a lock that
another thread held at that instant and wait on it forever; CI caught a tsfresh pool worker
doing exactly that, and the pool's join (and the job) never ended. The forkserver start
method forks workers from a small single-threaded server process instead; preloading the
heavy imports into that server keeps each worker's start cheap.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

#: Imported once in the fork server, so workers start with them already loaded.
PRELOAD = ("numpy", "pandas", "tsfresh", "stages.feature_engine")


def worker_context() -> BaseContext:
    """The multiprocessing context every stage pool uses (forkserver; spawn where absent)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))  # takes effect when the server first starts
    return ctx
