"""The commit protocol's bound on librdkafka calls that ignore their own timeout (librdkafka#5456:
send_offsets_to_transaction blocking for good after the group coordinator went away).

A unit test of the rule in streams/commit.py with a stand-in producer whose call blocks: the
real hang needs a broker restart at the right moment and is rare (seen once in a delivery run).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams import commit
from streams.commit import CallHung, Output, RetryPolicy, TransactionAborted, Transactions, bounded_call


def test_bounded_call_returns_raises_or_gives_up():
    assert bounded_call(lambda t: t * 2, 0.5, grace=0.5) == 1.0
    with pytest.raises(ValueError):
        bounded_call(lambda t: (_ for _ in ()).throw(ValueError("x")), 0.5, grace=0.5)
    started = time.monotonic()
    with pytest.raises(CallHung):
        bounded_call(lambda t: threading.Event().wait(), 0.2, grace=0.3)
    assert time.monotonic() - started < 3


class _Producer:
    """Records the transaction calls; send_offsets_to_transaction blocks for good when told to."""

    def __init__(self, hang: bool):
        self.hang = hang
        self.calls: list[str] = []
        self.release = threading.Event()

    def init_transactions(self, timeout):
        self.calls.append("init")

    def begin_transaction(self):
        self.calls.append("begin")

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        self.calls.append("produce")
        on_delivery(None, None)

    def poll(self, timeout=0):
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append("send_offsets")
        if self.hang:
            self.release.wait()  # ignores its timeout, as librdkafka#5456 does

    def flush(self, timeout=None):
        return 0

    def commit_transaction(self, timeout):
        self.calls.append("commit")

    def abort_transaction(self, timeout):
        self.calls.append("abort")

    def purge(self):
        self.calls.append("purge")


class _Consumer:
    def consumer_group_metadata(self):
        return object()


def test_a_hung_send_offsets_gives_up_the_producer_and_the_next_batch_commits_with_a_new_one(monkeypatch):
    monkeypatch.setattr(commit, "CALL_GRACE_S", 0.3)
    made: list[_Producer] = []

    def make(tid, error_cb):
        made.append(_Producer(hang=not made))  # the first producer hangs, the next does not
        return made[-1]

    txns = Transactions(make, "tid", "test", retry=RetryPolicy(step_timeout_s=0.2))
    batch = [Output("t", b"k", b"v")]
    offsets = [TopicPartition("src", 0, 5)]
    started = time.monotonic()
    with pytest.raises(TransactionAborted, match="still blocked"):
        txns.commit(batch, offsets, _Consumer())
    assert time.monotonic() - started < 5
    hung = made[0]
    assert hung.calls == ["init", "begin", "produce", "send_offsets"]  # no abort or purge into a blocked producer
    txns.commit(batch, offsets, _Consumer())
    assert len(made) == 2 and made[1].calls == ["init", "begin", "produce", "send_offsets", "commit"]
    assert txns.restarts == 1 and txns.commits == 1
    hung.release.set()


class _FencedProducer(_Producer):
    """Its transaction was fenced by a newer instance: abort and flush raise the fatal error
    (seen after a broker SIGKILL and restart: the stage died on flush(0) while discarding it)."""

    def __init__(self):
        super().__init__(hang=False)
        self.error = KafkaError(KafkaError._FENCED, "This instance has been fenced by a newer instance", fatal=True)

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append("send_offsets")
        raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Not coordinator", txn_requires_abort=True))

    def abort_transaction(self, timeout):
        self.calls.append("abort")
        raise KafkaException(self.error)

    def flush(self, timeout=None):
        raise KafkaException(self.error)


def test_a_producer_fenced_during_its_abort_is_replaced_and_the_writer_goes_on():
    made: list[_Producer] = []

    def make(tid, error_cb):
        made.append(_FencedProducer() if not made else _Producer(hang=False))
        return made[-1]

    txns = Transactions(make, "tid", "test", retry=RetryPolicy(step_timeout_s=0.2))
    batch = [Output("t", b"k", b"v")]
    offsets = [TopicPartition("src", 0, 5)]
    with pytest.raises(TransactionAborted, match="NOT_COORDINATOR"):
        txns.commit(batch, offsets, _Consumer())
    assert made[0].calls == ["init", "begin", "produce", "send_offsets", "abort", "purge"]
    txns.commit(batch, offsets, _Consumer())
    assert len(made) == 2 and made[1].calls[-1] == "commit" and txns.restarts == 1
    txns.close()
