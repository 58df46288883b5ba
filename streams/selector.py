"""Unsupervised selection beside the sink's consume loop, in a thread of its own.

Selection reads a run's whole feature matrix and fits on it: it can take long, and it fails
when ClickHouse does. Run inside the consume loop it stalled storage (nothing was stored while
it ran) and a failure ended the sink. Here the loop only marks the runs that got new finished
eras; the thread runs selection once a run's eras stop arriving for a moment (or it waited
long enough while they keep coming), retries a failed run with backoff, and sends each result's
notice to `eras.done` with its own transactional producer. With the embedded ClickHouse both
threads share one client, so its calls go through one lock (selection's own fit runs outside it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ContextManager

import pandas as pd

from stages.clickhouse import ClickHouseWriter, classify_error
from streams.commit import Output, TransactionAborted, Transactions

log = logging.getLogger(__name__)

@dataclass
class SelectionPolicy:
    """When a run's selection is due: a pure rule over the times its eras were stored.

    Due once no new era of the run came for `quiet_s`, or once it has waited `max_wait_s`
    while eras keep coming (a long stream still gets selections). A failed run is retried
    after a backoff that doubles up to `max_backoff_s`; a new era does not bring it forward.
    """

    quiet_s: float = 2.0
    max_wait_s: float = 60.0
    first_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    first_marked: dict[str, float] = field(default_factory=dict)
    last_marked: dict[str, float] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def mark(self, run_id: str, now: float) -> None:
        self.first_marked.setdefault(run_id, now)
        self.last_marked[run_id] = now

    def due(self, now: float) -> list[str]:
        return sorted(
            run for run, first in self.first_marked.items()
            if now >= self.retry_at.get(run, 0.0)
            and (now - self.last_marked[run] >= self.quiet_s or now - first >= self.max_wait_s)
        )

    def done(self, run_id: str, started: float) -> None:
        """Selected with the eras stored up to `started`; eras marked since keep the run dirty."""
        self.failures.pop(run_id, None)
        self.retry_at.pop(run_id, None)
        if self.last_marked.get(run_id, 0.0) <= started:
            self.first_marked.pop(run_id, None)
            self.last_marked.pop(run_id, None)
        else:
            self.first_marked[run_id] = self.last_marked[run_id]

    def failed(self, run_id: str, now: float) -> float:
        """Record a failure; the seconds until the retry."""
        n = self.failures[run_id] = self.failures.get(run_id, 0) + 1
        wait = min(self.first_backoff_s * 2 ** (n - 1), self.max_backoff_s)
        self.retry_at[run_id] = now + wait
        return wait

    @property
    def pending(self) -> bool:
        return bool(self.first_marked)


def run_selection(writer: ClickHouseWriter, lock: ContextManager[Any], run_id: str, settings: Any) -> dict | None:
    """Select over the run's stored eras and store the result; the eras.done notice body."""
    from stages.clickhouse import feature_matrix
    from stages.selection import select_features

    with lock:
        complete = writer.client.query(
            "SELECT count() FROM eras FINAL WHERE run_id = {r:String} AND tsfresh_at IS NOT NULL AND rolling_at IS NOT NULL",
            parameters={"r": run_id},
        ).result_rows[0][0]
        matrix = feature_matrix(writer.client, run_id)
    if matrix.empty:
        return None
    started = time.perf_counter()
    result = select_features(matrix.reset_index(drop=True), settings.variance_threshold,
                             settings.correlation_threshold, settings.pca_components)
    selection_id = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S.%fZ")
    with lock:
        writer.write_selection(result.table, selection_id, run_id, eras=len(matrix))
    log.info("sink: selection %s over %d eras kept %d of %d features in %.2f s", selection_id, len(matrix),
             len(result.selected), matrix.shape[1], time.perf_counter() - started)
    return {"kind": "selection", "run_id": run_id, "eras": len(matrix), "complete_eras": int(complete),
            "kept": len(result.selected), "features": int(matrix.shape[1])}


class SelectionWorker:
    """The thread: takes marked runs, selects when due, sends notices; never stops the sink."""

    def __init__(self, name: str, transactions: Transactions, notice: Callable[[str, dict], Output],
                 select: Callable[[str], dict | None], policy: SelectionPolicy | None = None):
        self.name = name
        self.transactions = transactions
        self.notice = notice
        self.select = select
        self.policy = policy or SelectionPolicy()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}-selection", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self, run_ids: set[str]) -> None:
        if not run_ids:
            return
        with self._cond:
            now = time.monotonic()
            for run in run_ids:
                self.policy.mark(run, now)
            self._cond.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Let a selection that runs finish (up to `timeout`); pending runs are not selected."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: selection still running after %.0f s; leaving it", self.name, timeout)
        self.transactions.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                due = self.policy.due(time.monotonic())
                if not due:
                    self._cond.wait(0.5)
                    continue
            for run in due:
                self._select_one(run)

    def _select_one(self, run: str) -> None:
        started = time.monotonic()
        try:
            body = self.select(run)
        except Exception as exc:  # ClickHouse down, or selection itself failing: storage goes on regardless
            with self._cond:
                wait = self.policy.failed(run, time.monotonic())
            log.warning("%s: selection of run %s failed (%s); retry in %.0f s", self.name, run,
                        classify_error(exc), wait)
            return
        with self._cond:
            self.policy.done(run, started)
        if body is None:
            return
        try:
            self.transactions.commit([self.notice(run, body)])
        except TransactionAborted as exc:
            log.warning("%s: selection notice of run %s not sent: %s", self.name, run, exc)


def shared_lock(embedded: bool) -> ContextManager[Any]:
    """One lock for a client two threads share (embedded chDB); none needed for a server's separate clients."""
    return threading.Lock() if embedded else contextlib.nullcontext()
