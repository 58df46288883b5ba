"""The local broker is a real Apache Kafka: produce, consume, groups, transactions."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka.broker import LocalBroker, provision
from streams.kafka import admin_client
from streams.topics import all_topics, create_topics, list_topics

pytestmark = pytest.mark.kafka


def _topic(admin: AdminClient, name: str, partitions: int) -> None:
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()


def test_provision_is_cached_and_fetches_nothing_twice():
    first = provision()
    started = time.monotonic()
    second = provision()
    assert second.home == first.home and (first.home / ".complete").exists()
    assert time.monotonic() - started < 1.0  # no Maven run
    assert any(p.name.startswith("kafka_2.13-4.") for p in first.libs.glob("*.jar"))


def test_broker_status_reports_the_running_node(kafka_broker: LocalBroker):
    state = kafka_broker.status()
    assert state is not None and state.bootstrap == kafka_broker.bootstrap


def test_partitions_split_between_two_consumers_of_one_group(bootstrap, unique):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"split-{unique}"
    _topic(admin, topic, 4)
    def member() -> Consumer:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{unique}", "auto.offset.reset": "earliest",
                      "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 10000})
        c.subscribe([topic])
        return c

    a, b = member(), member()
    # the split first: a member polled before the other joined holds every partition for a while,
    # and what it read then would be no sign of a wrong split
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(a.assignment()) == 2 and len(b.assignment()) == 2):
        for c in (a, b):
            msg = c.poll(0.2)
            assert msg is None or msg.error() is not None, "nothing was produced yet"
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(40):
        producer.produce(topic, key=f"k{i}", value=str(i).encode(), partition=i % 4)
    producer.flush(30)

    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    values: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(set(values)) < 40:
        for name, c in (("a", a), ("b", b)):
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                seen[name].add(msg.partition())
                values.append(int(msg.value()))
    parts_a = {tp.partition for tp in a.assignment()}
    parts_b = {tp.partition for tp in b.assignment()}
    a.close()
    b.close()
    assert len(parts_a) == 2 and len(parts_b) == 2 and parts_a.isdisjoint(parts_b)
    assert sorted(set(values)) == list(range(40))
    assert seen["a"] <= parts_a and seen["b"] <= parts_b


def test_transactions_work_on_the_single_node(bootstrap, unique):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"txn-{unique}"
    _topic(admin, topic, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{unique}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{unique}", "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not got:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg.value())
    consumer.close()
    assert got == [b"committed"]


def test_topics_create_is_idempotent(settings):
    admin = admin_client(settings)
    first = create_topics(admin, partitions=settings.topic_partitions)
    second = create_topics(admin, partitions=settings.topic_partitions)
    assert {t.name for t in first} == set(all_topics())
    assert not any(t.created for t in second)
    listed = list_topics(admin)
    assert all(name in listed and listed[name] >= 1 for name in all_topics())
    assert "eras.raw.dlq" in listed
