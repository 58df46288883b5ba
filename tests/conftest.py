"""Shared fixtures: one real Kafka broker per test session, embedded ClickHouse per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

from infra.kafka.broker import LocalBroker
from streams.settings import Settings, load_settings


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> LocalBroker:
    """A real Apache Kafka (KRaft) broker from the Maven jars, for the whole session."""
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), log=lambda m: None)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka_broker: LocalBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, a private data dir, small batches."""
    return load_settings(
        kafka_bootstrap_servers=bootstrap,
        data_dir=tmp_path / "data",
        feature_set="minimal",
        batch_size=500,
        topic_partitions=4,
        consumer_poll_timeout_s=0.2,
    )


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Settings come from the environment: keep the developer's own out of the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("ERASTREAM_CACHE_DIR", os.environ.get("ERASTREAM_CACHE_DIR", str(Path.home() / ".cache" / "erastream")))


_MULTIPROCESSING_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _is_multiprocessing_helper(proc: psutil.Process) -> bool:
    """The fork server and resource tracker end by themselves when this process does."""
    try:
        return any(h in " ".join(proc.cmdline()) for h in _MULTIPROCESSING_HELPERS)
    except psutil.NoSuchProcess:
        return True


def pytest_sessionfinish(session, exitstatus) -> None:
    """Reap whatever a failed or timed-out test left running.

    A stray child (a stage process, a hung pool worker) keeps the job's stdout open, and CI
    then waits on the pipe for ever after the last test; one line names each one killed.
    """
    leftovers = [p for p in psutil.Process().children(recursive=True) if not _is_multiprocessing_helper(p)]
    for proc in leftovers:
        try:
            print(f"\nconftest: stopping leftover process {proc.pid} {' '.join(proc.cmdline())[:120]}")
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
