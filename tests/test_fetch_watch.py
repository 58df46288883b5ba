"""The rule that finds a consumer stalled behind data (librdkafka#5153), alone."""

import time

import pytest

from streams.fetch_watch import FetchStall

A, B = ("t", 0), ("t", 1)


def test_a_partition_behind_at_the_same_position_twice_is_stalled():
    rule = FetchStall(slack=1)
    assert rule.check({A: 5, B: 9}, {A: 20, B: 10}) == {}  # first look: behind, but maybe on its way
    assert rule.check({A: 5, B: 9}, {A: 20, B: 10}) == {A: 5}  # B is only a transaction marker short


def test_a_partition_that_moves_is_not_stalled():
    rule = FetchStall()
    rule.check({A: 5}, {A: 20})
    assert rule.check({A: 8}, {A: 20}) == {}
    assert rule.check({A: 8}, {A: 20}) == {A: 8}


def test_a_position_is_reported_once_a_new_consumer_stays_there_too():
    rule = FetchStall()
    rule.check({A: 5}, {A: 20})
    assert rule.check({A: 5}, {A: 20}) == {A: 5}
    rule.check({A: 5}, {A: 20})
    assert rule.check({A: 5}, {A: 20}) == {}  # aborted records ahead, not a stall: no restart loop
    rule.check({A: 6}, {A: 20})
    assert rule.check({A: 6}, {A: 20}) == {A: 6}


def test_without_slack_one_record_behind_counts():
    rule = FetchStall(slack=0)
    rule.check({A: 9}, {A: 10})
    assert rule.check({A: 9}, {A: 10}) == {A: 9}


def test_reset_after_messages_forgets_the_last_look():
    rule = FetchStall()
    rule.check({A: 5}, {A: 20})
    rule.reset()
    assert rule.check({A: 5}, {A: 20}) == {}


@pytest.mark.kafka
def test_the_broker_says_whether_a_consumer_is_a_member_of_its_group(settings, unique):
    from confluent_kafka.admin import NewTopic

    from streams import kafka
    from streams.fetch_watch import member_of, positions_of

    # a topic of its own, empty: on the shared eras.raw the first poll may hand over a message
    # left by another test, and the position moves past it
    topic = f"erastream.test.member.{unique}"
    admin = kafka.admin_client(settings)
    for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        future.result(30)
    group = f"erastream.test.member.{unique}"
    consumer = kafka.consumer(settings, group)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            assert consumer.poll(0.2) is None
        assert consumer.assignment()
        assert member_of(settings, group, consumer.memberid()) is True
        assert member_of(settings, group, "not-a-member-id") is False
        assert member_of(settings, group, None) is False
        # nothing consumed since the assignment: positions are the group's committed offsets (none: 0)
        assert positions_of(consumer, settings, group) == {(topic, 0): 0, (topic, 1): 0}
    finally:
        consumer.close()
