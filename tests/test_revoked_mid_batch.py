"""Issue 8 item 4: a partition revoked while a worker's batch is in hand gets none of that batch's
outputs from it, so every era reaches features.tsfresh once.

Real parts and a real fault: the session broker, a preprocess process, two tsfresh processes in
one group. Worker A takes a batch of eight eras over four partitions; each era is really slow to
compute (tsfresh itself, the comprehensive set). Once A has computed one era (its outputs wait
for the batch's commit), A is frozen with SIGSTOP for longer than the session timeout and worker
B joins: the group drops A and B takes every partition and computes every era. Thawed, A learns
its partitions are gone while its batch is still in hand; had it produced what it had computed,
those eras would be in the topic twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from schemas.codec import decode_feature_batch
from streams.topic_reader import BoundedRead, partitions, reader, watermarks
from streams.topics import FEATURES_TSFRESH
from streams.workers import spawn_worker
from tests.harness import PipelineUnderTest
from tests.test_delivery import _input

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _ends(settings) -> dict:
    c = reader(settings)
    try:
        tps = [(FEATURES_TSFRESH, p) for p in partitions(c, [FEATURES_TSFRESH])[FEATURES_TSFRESH]]
        return {tp: high for tp, (_, high) in watermarks(c, tps).items()}
    finally:
        c.close()


def _produced(settings, since: dict, run_id: str) -> Counter:
    """(era key, chunk index) -> how many committed feature messages of the run carry it."""
    c = reader(settings)
    try:
        spans = {tp: (since.get(tp, 0), end) for tp, end in _ends(settings).items()}
        batches = [decode_feature_batch(m.value()) for m in BoundedRead(c, spans)]
    finally:
        c.close()
    return Counter((b.era_key, b.chunk_index) for b in batches if b.run_id == run_id)


def _log(pipe, name: str) -> str:
    path = pipe.log_dir / name
    return path.read_text() if path.exists() else ""


def test_outputs_of_a_partition_revoked_mid_batch_are_not_produced(settings, unique, tmp_path):
    cfg = settings.model_copy(update={"run_id": f"run-{unique}", "batch_size": 60, "feature_set": "comprehensive",
                                      "feature_engine": "tsfresh", "n_jobs": 1, "session_timeout_ms": 6000})
    pipe = PipelineUnderTest(cfg)
    try:
        pipe.start("preprocess")
        report = pipe.ingest(_input(tmp_path, "in", days=8))
        assert len(report.eras) == 8
        deadline = time.monotonic() + 120
        while _log(pipe, "preprocess-0.log").count("preprocess: era") < 8 and time.monotonic() < deadline:
            time.sleep(0.3)
        before = _ends(cfg)

        a = pipe.start("tsfresh")[0]  # A: its first batch holds every era
        deadline = time.monotonic() + 120
        while "tsfresh: era" not in _log(pipe, "tsfresh-0.log") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "tsfresh: era" in _log(pipe, "tsfresh-0.log"), pipe.logs()
        os.kill(a.pid, signal.SIGSTOP)
        try:
            pipe.procs["tsfresh"].append(spawn_worker(cfg, "tsfresh", 1, pipe.log_dir))  # B
            deadline = time.monotonic() + 240
            produced = Counter()
            while time.monotonic() < deadline:
                produced = _produced(cfg, before, cfg.run_id)
                if len({era for era, _ in produced}) == 8:
                    break
                time.sleep(1)
            assert {era for era, _ in produced} == set(report.eras), pipe.logs()
        finally:
            os.kill(a.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60  # A thawed: it must find its partitions gone and commit none of its batch
        while "revoked partitions left out of the commit" not in _log(pipe, "tsfresh-0.log") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        pipe.stop()
        a_log = _log(pipe, "tsfresh-0.log")
        produced = _produced(cfg, before, cfg.run_id)
        twice = {key: n for key, n in produced.items() if n > 1}
        assert not twice, f"produced more than once: {twice}\n{pipe.logs()}"
        assert {era for era, _ in produced} == set(report.eras)
        # Run alone, A's batch is these eight eras and A logs "output(s) of revoked partitions left
        # out of the commit" (and 08f93ec produces era 03-01 twice). In the full suite the shared
        # erastream.tsfresh group can hand A other tests' leftovers first, so that line is not
        # asserted: the no-duplicates check above is what must hold either way.
        del a_log
    finally:
        pipe.close()
