"""Kafka client configuration: where the brokers are and how each role talks to them."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.settings import Settings

log = logging.getLogger(__name__)


class NoBrokerError(RuntimeError):
    """Neither KAFKA_BOOTSTRAP_SERVERS nor a running local broker."""


def bootstrap_servers(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the local broker that `erastream broker start` runs."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    from infra.kafka.broker import LocalBroker

    state = LocalBroker(settings.broker_state_dir, log=log.info).status()
    if state is None:
        raise NoBrokerError(
            "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS, or start the local one with `erastream broker start`"
        )
    return state.bootstrap


def _base(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers(settings), "logger": logging.getLogger("librdkafka")}


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(_base(settings))


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer that reads committed data only and commits offsets by hand."""
    config = {
        **_base(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.max.bytes": 16 * 1024 * 1024,
    }
    config.update(extra)
    return config


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def producer(settings: Settings, transactional_id: str | None = None, **extra: Any) -> Producer:
    """An idempotent producer; transactional when given an id."""
    config = {
        **_base(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "zstd",
        "message.max.bytes": 1_000_000,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = 60_000
    config.update(extra)
    return Producer(config)
