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
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Callable

from threadpoolctl import threadpool_limits

#: Imported once in the fork server, so workers start with them already loaded.
PRELOAD = ("numpy", "pandas", "tsfresh", "stages.feature_engine")


def one_blas_thread_per_worker() -> None:
    """Pool initializer: BLAS limited to one thread for the worker's life. Several BLAS thread
    pools on a few cores ran 3-9x slower (DESIGN.md, cost facts); stages scale by processes."""
    threadpool_limits(limits=1)


def worker_context() -> BaseContext:
    """The multiprocessing context every stage pool uses (forkserver; spawn where absent)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))  # takes effect when the server first starts
    return ctx


_shared: dict[tuple[int, Callable[[], None]], ProcessPoolExecutor] = {}
_shared_lock = threading.Lock()


def shared_executor(workers: int, initializer: Callable[[], None]) -> ProcessPoolExecutor:
    """A process pool kept for the life of this process, one per (size, initializer).

    A stage computes era after era; a fresh pool per era paid the workers' start (imports,
    numba's cached kernels loaded from disk) every time: ~0.5 s an era on 2 cores.
    """
    key = (workers, initializer)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            pool = ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=initializer)
            _shared[key] = pool
        return pool


def kill_worker_processes() -> int:
    """SIGKILL every worker process this process started (all pools: ours and tsfresh's), and
    forget the pools. For a compute abandoned after its timeout: a frozen or runaway worker
    would otherwise outlive the process that replaces this one. Returns how many were killed."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)
    return len(children)


def discard_executor(pool: ProcessPoolExecutor) -> None:
    """Forget a pool that broke (a worker died); the next call to shared_executor starts anew."""
    with _shared_lock:
        for key, known in list(_shared.items()):
            if known is pool:
                del _shared[key]
    pool.shutdown(wait=False, cancel_futures=True)
