"""Issue 8 item 5: an era whose compute passes ERA_COMPUTE_TIMEOUT_S is abandoned, dead-lettered
and counted, and the stage goes on in a fresh process.

Real parts and a real fault: the session broker, a preprocess process and a tsfresh process
whose feature pool has two worker processes (N_JOBS=2, eras big enough to be split over them).
After a first era warmed the pool, its worker processes are frozen with SIGSTOP: the next era's
compute never returns. The runner must give up on it after the timeout, kill the frozen workers,
dead-letter the era's chunks with the reason, replace its own process (same pid, exec) and
compute the era after it with a new pool.
"""

from __future__ import annotations

import os
import signal
import socket
import urllib.request

import pandas as pd
import psutil
import pytest

from schemas.codec import decode_feature_batch
from stages.sample_data import generate_sample
from streams.topic_reader import BoundedRead, reader
from streams.topics import ERAS_CLEAN, FEATURES_TSFRESH, dlq
from streams.workers import spawn_worker
from tests.harness import PipelineUnderTest, wait_until
from tests.test_dead_letters import _ends, _start_group_at_end

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TIMEOUT_S = 30  # above the first era's compute with the pool's start on a loaded 2-core machine


def _day(tmp_path, day: str):
    """One era of 1,440 rows x 17 sensors: over the engine's threshold for using its pool."""
    frame = generate_sample(days=1, freq="60s", seed=5, compartments=("gh_t",))
    frame["timestamp"] = frame["timestamp"] - frame["timestamp"].min() + pd.Timestamp(day)
    path = tmp_path / f"{day}.csv"
    frame.to_csv(path, index=False)
    return path


def _messages(settings, since: dict, topic: str) -> list:
    c = reader(settings)
    try:
        spans = {tp: (since.get(tp, 0), end) for tp, end in _ends(settings, [topic]).items()}
        return list(BoundedRead(c, spans, timeout=30))
    finally:
        c.close()


def _wait(condition, seconds: float, what: str, pipe: PipelineUnderTest):
    return wait_until(condition, seconds, what, lambda: pipe.logs(6000))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_era_whose_compute_hangs_is_abandoned_and_the_stage_goes_on(settings, unique, tmp_path):
    port = _free_port()
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "feature_set": "efficient", "n_jobs": 2,
                                      "era_compute_timeout_s": TIMEOUT_S})
    group = f"erastream.test.timeout.{unique}"
    pipe = PipelineUnderTest(cfg)
    try:
        _start_group_at_end(cfg, group, [ERAS_CLEAN])  # other tests' eras are not this worker's business
        features_start = _ends(cfg, [FEATURES_TSFRESH])
        letters_start = _ends(cfg, [dlq(ERAS_CLEAN)])
        pipe.start("preprocess")
        tsfresh = spawn_worker(cfg.model_copy(update={"metrics_port": port}), "tsfresh", 0, pipe.log_dir, group_id=group)
        pipe.procs["tsfresh"] = [tsfresh]

        def features_of(key: str):
            return [b for b in (decode_feature_batch(m.value()) for m in _messages(cfg, features_start, FEATURES_TSFRESH))
                    if b.era_key == key and b.run_id == cfg.run_id]

        (warm,) = pipe.ingest(_day(tmp_path, "2026-03-01")).eras
        _wait(lambda: features_of(warm), 180, f"features of {warm}", pipe)

        stage = psutil.Process(tsfresh.pid)
        workers = [w for child in stage.children() for w in child.children()]  # forkserver -> pool workers
        assert len(workers) == 2, [w.cmdline() for w in stage.children(recursive=True)]
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)

        (hung,) = pipe.ingest(_day(tmp_path, "2026-03-02")).eras
        letters = _wait(lambda: [m for m in _messages(cfg, letters_start, dlq(ERAS_CLEAN)) if m.key() == hung.encode()],
                        TIMEOUT_S + 120, f"dead letters of {hung}", pipe)
        headers = {k: v.decode() for k, v in letters[0].headers()}
        assert headers["erastream.error_type"] == "EraComputeTimedOut", headers
        assert f"ERA_COMPUTE_TIMEOUT_S={TIMEOUT_S}" in headers["erastream.error"]
        assert "2 pool worker process(es) killed" in headers["erastream.error"]
        assert {m.value() for m in letters} and len(letters) == len({m.offset() for m in letters})
        for worker in workers:  # killed, not left frozen
            assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE

        (after,) = pipe.ingest(_day(tmp_path, "2026-03-03")).eras
        _wait(lambda: features_of(after), 180, f"features of {after} after the restart", pipe)
        assert tsfresh.poll() is None  # the same process (pid) goes on: it was replaced in place
        log = (pipe.log_dir / "tsfresh-0.log").read_text()
        assert "restarting this worker process in place" in log
        assert not features_of(hung)

        def timed_out_metric() -> str:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                return ""
            return next((line for line in body.splitlines() if line.startswith("erastream_eras_timed_out_total{")), "")

        line = _wait(timed_out_metric, 30, "the timed-out counter", pipe)
        assert line.endswith(" 1.0"), line  # counted once, across the process's replacement
    finally:
        for proc in psutil.Process(os.getpid()).children(recursive=True):
            if proc.status() == psutil.STATUS_STOPPED:
                proc.send_signal(signal.SIGCONT)
        pipe.close()
