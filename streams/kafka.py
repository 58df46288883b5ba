"""Kafka client configuration: where the brokers are and how each role talks to them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streams.settings import Settings

log = logging.getLogger(__name__)


class NoBrokerError(RuntimeError):
    """Neither KAFKA_BOOTSTRAP_SERVERS nor a running local broker."""


def bootstrap_servers(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else KAFKA_CLIENT_CONFIG's bootstrap.servers, else the local broker that `erastream broker start` runs."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    from_file = settings.kafka_client_properties().get("bootstrap.servers")
    if from_file:
        return from_file
    from infra.kafka.broker import LocalBroker

    state = LocalBroker(settings.broker_state_dir, log=log.info).status()
    if state is None:
        raise NoBrokerError(
            "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS, or start the local one with `erastream broker start`"
        )
    return state.bootstrap


#: Errors after which a client would only retry the same refusal for ever.
_REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL)
_HINTS = {
    KafkaError._AUTHENTICATION: "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
    KafkaError._SSL: "check KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_LOCATION (the CA that signed the broker's certificate)",
}
_verified: set[tuple[tuple[str, str], ...]] = set()
_verified_lock = threading.Lock()
_probe_log = logging.getLogger("erastream.kafka.probe")  # the probe's retries would repeat the client's own
_probe_log.addHandler(logging.NullHandler())
_probe_log.propagate = False


def _base(settings: Settings) -> dict[str, Any]:
    """What every client shares: the brokers and the security settings (KAFKA_CLIENT_CONFIG under the explicit ones).

    A secured connection is tried once per process first, so that a wrong password or CA is
    a clear error at start instead of a client that retries in silence (or, in
    init_transactions, blocks for ever).
    """
    security = settings.kafka_security_properties()
    config = {**security, "bootstrap.servers": bootstrap_servers(settings)}
    if settings.kafka_client_config or config.get("security.protocol", "PLAINTEXT").upper() != "PLAINTEXT":
        verify_connection(config)
    return {**config, "logger": logging.getLogger("librdkafka")}


def verify_connection(config: dict[str, str], timeout: float = 15.0) -> None:
    """Raise KafkaException when the broker refuses these credentials or this TLS setup.

    Also turns a property librdkafka refuses into an error naming the settings it came from.
    Returns once a metadata request succeeds, or quietly after `timeout` when the broker
    just does not answer (a broker that is down is the caller's usual concern). Successes
    are remembered per process.
    """
    key = tuple(sorted(config.items()))
    with _verified_lock:
        if key in _verified:
            return
    errors: list[KafkaError] = []
    try:
        probe = Producer({**config, "error_cb": errors.append, "logger": _probe_log})
    except KafkaException as exc:  # a property librdkafka does not know, or a value it refuses
        error = exc.args[0]
        raise KafkaException(KafkaError(error.code(), (
            f"invalid Kafka client settings: {error.str()} "
            "(see KAFKA_CLIENT_CONFIG and the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_* variables)"
        ))) from None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                probe.list_topics(timeout=0.5)
            except KafkaException:
                probe.poll(0)  # serves error_cb
            else:
                with _verified_lock:
                    _verified.add(key)
                return
            refused = next((e for e in errors if e.code() in _REFUSALS), None)
            if refused is not None:
                who = ""
                if refused.code() == KafkaError._AUTHENTICATION:
                    who = f"SASL {config.get('sasl.mechanism', config.get('sasl.mechanisms', '?'))} as {config.get('sasl.username', '?')!r}: "
                raise KafkaException(KafkaError(refused.code(), f"{refused.str()} ({who}{_HINTS[refused.code()]})"))
    finally:
        probe.flush(0)


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
        config["transaction.timeout.ms"] = settings.kafka_transaction_timeout_ms
    config.update(extra)
    return Producer(config)
