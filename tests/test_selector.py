"""Selection beside the sink: the pure rule of when a run is due, and the sink storing on while it runs.

The integration tests run the real sink (in this process, in a thread, on the session broker and
the embedded ClickHouse) with a selection step that really takes long or really fails, and check
that every era is stored meanwhile; the stages upstream are real processes.
"""

from __future__ import annotations

import threading
import time

import pytest

from streams.selector import SelectionPolicy


def test_a_run_is_due_once_its_eras_stop_coming_for_the_quiet_time():
    policy = SelectionPolicy(quiet_s=2.0, max_wait_s=60.0)
    policy.mark("r", now=10.0)
    policy.mark("r", now=11.0)
    assert policy.due(12.5) == []
    assert policy.due(13.0) == ["r"]


def test_a_run_whose_eras_keep_coming_is_due_after_the_longest_wait():
    policy = SelectionPolicy(quiet_s=2.0, max_wait_s=10.0)
    for t in range(0, 12):
        policy.mark("r", now=float(t))
    assert policy.due(9.5) == []
    assert policy.due(10.0) == ["r"]


def test_eras_stored_while_a_selection_ran_keep_the_run_dirty():
    policy = SelectionPolicy(quiet_s=1.0)
    policy.mark("r", now=0.0)
    policy.mark("r", now=5.0)  # stored after the selection started at 3.0
    policy.done("r", started=3.0)
    assert policy.pending and policy.due(6.0) == ["r"]
    policy.done("r", started=6.0)
    assert not policy.pending and policy.due(100.0) == []


def test_a_failed_run_is_retried_with_a_doubling_backoff_that_new_eras_do_not_shorten():
    policy = SelectionPolicy(quiet_s=0.0, first_backoff_s=1.0, max_backoff_s=4.0)
    policy.mark("r", now=0.0)
    assert policy.failed("r", now=0.0) == 1.0
    policy.mark("r", now=0.5)
    assert policy.due(0.9) == [] and policy.due(1.0) == ["r"]
    assert policy.failed("r", now=1.0) == 2.0
    assert policy.failed("r", now=3.0) == 4.0
    assert policy.failed("r", now=7.0) == 4.0  # capped
    policy.done("r", started=11.5)
    assert policy.failures == {} and not policy.pending


def test_runs_are_due_independently():
    policy = SelectionPolicy(quiet_s=1.0)
    policy.mark("a", now=0.0)
    policy.mark("b", now=5.0)
    assert policy.due(2.0) == ["a"]
    assert policy.due(6.0) == ["a", "b"]


# ------------------------------------------------------------------ with the real sink

class _SinkInThread:
    """The real SinkRunner in a thread of the test, with a given selection step."""

    def __init__(self, settings, select):
        from stages.clickhouse import connect
        from streams.sink import SinkRunner

        self.client = connect(None, settings.clickhouse_path)
        self.stop = threading.Event()
        self.runner = SinkRunner(settings, client=self.client, select=select)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.runner.run(self.stop.is_set)
        except BaseException as exc:  # the test asserts there was none
            self.error = exc

    def close(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the sink did not stop"
        self.client.close()  # chDB allows one data directory per process at a time


def _pipeline(settings, unique, tmp_path, days=4):
    from tests.harness import PipelineUnderTest
    from tests.test_delivery import _input

    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60})
    pipe = PipelineUnderTest(cfg)
    for stage in ("preprocess", "tsfresh", "rolling"):
        pipe.start(stage)
    return cfg, pipe, _input(tmp_path, "in", days=days)


@pytest.mark.kafka
def test_a_selection_that_takes_long_does_not_stall_storage(settings, unique, tmp_path):
    from tests.test_delivery import _expected
    from streams.selector import run_selection

    release, entered = threading.Event(), threading.Event()
    cfg, pipe, path = _pipeline(settings, unique, tmp_path)
    sink = None
    try:
        def slow_select(run):  # the real selection, after a wait far longer than the run's storing takes
            entered.set()
            release.wait(300)
            return run_selection(sink.runner.writer, sink.runner._lock, run, cfg)

        sink = _SinkInThread(cfg, slow_select)
        first = pipe.ingest(path)
        pipe.wait_stored(first.eras[:1])
        assert entered.wait(60), "selection never started"
        # selection is now blocked; everything else must still be stored
        later = pipe.ingest(_second_input(tmp_path))
        pipe.wait_stored(first.eras + later.eras, timeout=240)
        assert not _ours(pipe, cfg), "no selection can have finished while it was blocked"
        release.set()
        deadline = time.monotonic() + 60
        while not _ours(pipe, cfg) and time.monotonic() < deadline:
            pipe.watcher.poll()
        assert _ours(pipe, cfg)
        assert sink.error is None
        with sink.runner._lock:
            for table in ("era_features", "rolling_features"):
                plain, final = _counts(sink.client, table, cfg.run_id)
                assert plain == final > 0
            eras = sink.client.query("SELECT count() FROM eras FINAL WHERE run_id = {r:String}",
                                     parameters={"r": cfg.run_id}).result_rows[0][0]
        assert eras == len(set(first.eras) | set(later.eras)) == len(_expected(path)) + len(later.eras)
    finally:
        release.set()
        if sink is not None:
            sink.close()
        pipe.close()


@pytest.mark.kafka
def test_a_failing_selection_is_retried_and_the_sink_goes_on(settings, unique, tmp_path, caplog):
    from streams.selector import run_selection

    calls = []
    cfg, pipe, path = _pipeline(settings, unique, tmp_path, days=2)
    sink = None
    try:
        def failing_once(run):  # this test's run fails once; the shared sink group may bring other runs too
            if run == cfg.run_id:
                calls.append(time.monotonic())
                if len(calls) == 1:
                    raise RuntimeError("selection blew up")
            return run_selection(sink.runner.writer, sink.runner._lock, run, cfg)

        sink = _SinkInThread(cfg, failing_once)
        report = pipe.ingest(path)
        pipe.wait_stored(report.eras)
        deadline = time.monotonic() + 90
        while not _ours(pipe, cfg) and time.monotonic() < deadline:
            pipe.watcher.poll()
        assert _ours(pipe, cfg), f"no selection after the failure; calls: {len(calls)}"
        assert len(calls) >= 2 and calls[1] - calls[0] >= 0.9  # retried after the backoff
        assert "selection of run" in caplog.text and "selection blew up" in caplog.text
        assert sink.error is None and sink.thread.is_alive()
    finally:
        if sink is not None:
            sink.close()
        pipe.close()


def _second_input(tmp_path):
    from tests.test_delivery import _input

    return _input(tmp_path, "later", days=3, seed=5, start="2025-01-01")


def _counts(client, table, run_id):
    from tests.harness import count_rows

    return count_rows(client, table, run_id)


def _ours(pipe, cfg) -> list[dict]:
    return [s for s in pipe.watcher.selections if s["run_id"] == cfg.run_id]
