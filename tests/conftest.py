"""Shared fixtures: one real Kafka broker per test session, embedded ClickHouse per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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
