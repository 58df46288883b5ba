"""The one Kafka commit protocol: every transactional writer of the pipeline goes through it.

A writer (a stage, the sink's Kafka side, a dead-letter replay, ingest, the follower) hands
:class:`Transactions` a batch: the messages to produce and, when it consumes, the consumer
offsets that the batch covers. :meth:`Transactions.commit` then runs the numbered steps

1. begin a transaction,
2. produce every message, each with a delivery report,
3. add the consumer offsets to the transaction (``send_offsets_to_transaction``),
4. flush, and check that every message was delivered,
5. commit the transaction (retriable errors retried, a bounded number of times),

and either returns (all of it committed) or aborts and raises :class:`TransactionAborted` (none
of it committed; a consuming caller then closes its consumer and subscribes a new one, which
reads again from the committed offsets: seeking the old one back is not enough, because a
consumer whose partitions were lost in the abort's cause and assigned back resumes at its
in-memory positions, past the aborted records). Every call that waits on the broker runs with
a timeout, and one that blocks past it (librdkafka#5456) is given up (:func:`bounded_call`).
Aborting is bounded too: when the broker cannot even abort (it is down, or the producer was
fenced, hit a fatal error or has a call hung inside it) the producer is thrown away, and the next
batch starts a new one with the same ``transactional.id``, whose ``init_transactions``
aborts whatever the old one left open; that start waits for the broker as long as it takes.

Transactional ids are stable per writer (a stage's worker slot on its host, a follower's
directory, the replay group, ingest's slot), so a restarted writer fences its dead
predecessor and aborts its open transaction at once instead of blocking read_committed
readers for the transaction timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams import failpoints

log = logging.getLogger(__name__)

StopFlag = Callable[[], bool]


@dataclass
class Output:
    """One message to produce."""

    topic: str
    key: str | bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: the source partition whose input this output was computed from (None: not tied to one);
    #: outputs of a partition revoked before the commit are left out of it
    source_partition: int | None = None


class TransactionAborted(RuntimeError):
    """The batch was not committed (aborted, or its transaction could not be finished)."""


class CallHung(RuntimeError):
    """A librdkafka transaction call that outlived its own timeout by CALL_GRACE_S.

    ``send_offsets_to_transaction`` can block past its timeout when the group coordinator went
    away during the transaction (confluentinc/librdkafka#5456, open; seen here as a preprocess
    that sat 4 minutes in its commit after a broker restart, SIGTERM unanswered). The producer
    is given up (its call never returns) and the next batch starts a new one, whose
    init_transactions fences it.
    """


#: seconds a transaction call may run past the timeout it was given before it counts as hung
CALL_GRACE_S = 10.0


def in_daemon_thread(call: Callable[[], Any], name: str) -> Future:
    """call() in a daemon thread of its own, its result or exception in the returned Future.
    A call that never returns (abandoned at a timeout) never holds up the interpreter's exit,
    as a ThreadPoolExecutor's threads would (they are joined at exit)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def bounded_call(call: Callable[[float], Any], timeout: float, grace: float | None = None) -> Any:
    """call(timeout) waited for at most timeout + grace (CALL_GRACE_S by default); raises
    CallHung after that (the thread is left to the blocked call; confluent-kafka releases the
    GIL in it)."""
    grace = CALL_GRACE_S if grace is None else grace
    future = in_daemon_thread(lambda: call(timeout), "txn-call")
    try:
        return future.result(timeout + grace)
    except FuturesTimeout:
        raise CallHung(f"a transaction call still blocked {timeout + grace:.0f} s after it began "
                       f"(timeout {timeout:.0f} s)") from None


class BrokerUnavailable(RuntimeError):
    """The producer could not start its transactions before the caller asked to stop."""


@dataclass
class RetryPolicy:
    """How often and how long a step is retried before the batch is given up."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    step_timeout_s: float = 30.0

    def delays(self):
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_s)


class Transactions:
    """A transactional producer with the commit protocol of this module.

    ``make_producer(transactional_id, error_cb)`` builds the producer (streams.kafka.producer
    with the settings in production); ``name`` labels the log lines.
    """

    def __init__(
        self,
        make_producer: Callable[..., Producer],
        transactional_id: str,
        name: str,
        retry: RetryPolicy | None = None,
        should_stop: StopFlag | None = None,
        failpoint: str | None = None,
    ):
        self.failpoint = f"{failpoint or name}.in_transaction"  # tests: SIGKILL with the transaction open
        self.make_producer = make_producer
        self.transactional_id = transactional_id
        self.name = name
        self.retry = retry or RetryPolicy()
        self.should_stop = should_stop or (lambda: False)
        self._producer: Producer | None = None
        self._delivery_errors: list[str] = []
        self._fatal: KafkaError | None = None
        self.commits = 0
        self.aborts = 0
        self.restarts = 0

    # ------------------------------------------------------------ lifecycle
    @property
    def producer(self) -> Producer:
        """The live producer, started (and its transactions initialised) on first use."""
        if self._producer is None:
            self._start()
        assert self._producer is not None
        return self._producer

    def _start(self) -> None:
        """A new producer whose init_transactions fences any predecessor with this id.

        Waits, with backoff, for as long as the broker is away; gives up only when the caller
        asks to stop.
        """
        delay = self.retry.backoff_s
        while True:
            self._fatal = None
            producer = self.make_producer(self.transactional_id, self._on_error)
            try:
                bounded_call(producer.init_transactions, self.retry.step_timeout_s)
            except (KafkaException, CallHung) as exc:
                error = exc.args[0]
                log.warning("%s: cannot start transactions yet (%s); retrying in %.1f s", self.name, error, delay)
                if isinstance(exc, KafkaException):
                    _discard(producer)
                if self.should_stop():
                    raise BrokerUnavailable(f"{self.name}: no transactions before stop: {error}") from exc
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_backoff_s)
                continue
            self._producer = producer
            return

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout)
            except KafkaException as exc:  # a fenced producer raises: nothing of it is left to deliver
                log.warning("%s: closing the producer: %s", self.name, _describe(exc))
            self._producer = None

    def _reset(self, reason: str, discard: bool = True) -> None:
        """Throw the producer away; the next batch starts a new one (fencing this one). One
        with a call still blocked inside it (CallHung) is only let go: discard=False."""
        log.warning("%s: new producer for transactional.id %s (%s)", self.name, self.transactional_id, reason)
        if discard and self._producer is not None:
            _discard(self._producer)
        self._producer = None
        self.restarts += 1

    def _on_error(self, error: KafkaError) -> None:
        """error_cb: librdkafka's errors outside any call (a broker gone, a fatal error)."""
        if error.fatal():
            self._fatal = error
            log.error("%s: fatal producer error: %s", self.name, error)
        elif error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.warning("%s: %s", self.name, error)
        else:
            log.info("%s: producer: %s", self.name, error)

    def _on_delivery(self, error: KafkaError | None, msg: Any) -> None:
        if error is not None:
            self._delivery_errors.append(f"{msg.topic()}[{msg.partition()}]: {error}")

    # --------------------------------------------------------------- commit
    def commit(
        self,
        outputs: list[Output],
        offsets: list[TopicPartition] | None = None,
        consumer: Any = None,
    ) -> None:
        """Steps 1-5 of the module docstring; raises TransactionAborted when nothing was committed."""
        if not outputs and not offsets:
            return
        producer = self.producer
        self._delivery_errors = []
        try:
            producer.begin_transaction()  # 1
            for out in outputs:  # 2
                self._produce(producer, out)
            if offsets:  # 3
                self._retrying("send offsets", lambda t: producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), t))
            failpoints.hit(self.failpoint)
            remaining = producer.flush(self.retry.step_timeout_s)  # 4
            if remaining:
                raise TransactionAborted(f"{remaining} message(s) still undelivered after {self.retry.step_timeout_s:.0f} s")
            if self._delivery_errors:
                raise TransactionAborted(f"{len(self._delivery_errors)} message(s) not delivered: {self._delivery_errors[0]}")
            if self._fatal is not None:
                raise KafkaException(self._fatal)
            self._retrying("commit", producer.commit_transaction)  # 5
        except (KafkaException, TransactionAborted, CallHung) as exc:
            self._abort(exc)
            raise TransactionAborted(f"{self.name}: transaction aborted: {_describe(exc)}") from exc
        self.commits += 1

    def _produce(self, producer: Producer, out: Output) -> None:
        while True:
            try:
                producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers or None,
                                 on_delivery=self._on_delivery)
                producer.poll(0)
                return
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                producer.poll(0.5)

    def _retrying(self, step: str, call: Callable[[float], Any]) -> None:
        """Run a step, retrying it while librdkafka says the error is retriable; a call that
        hangs past its timeout raises CallHung (see bounded_call)."""
        delays = self.retry.delays()
        while True:
            try:
                bounded_call(call, self.retry.step_timeout_s)
                return
            except KafkaException as exc:
                error = exc.args[0]
                delay = next(delays, None) if error.retriable() else None
                if delay is None:
                    raise
                log.warning("%s: %s failed (%s); retrying in %.1f s", self.name, step, error, delay)
                time.sleep(delay)

    def _abort(self, cause: BaseException) -> None:
        """Abort the open transaction, or throw the producer away when it cannot."""
        self.aborts += 1
        log.warning("%s: aborting the transaction: %s", self.name, _describe(cause))
        error = cause.args[0] if isinstance(cause, KafkaException) else None
        if self._producer is None:
            return
        if isinstance(cause, CallHung):  # a call is still blocked inside it: no abort, no purge
            self._reset(str(cause), discard=False)
            return
        if (error is not None and error.fatal()) or self._fatal is not None:
            self._reset(f"fatal: {error or self._fatal}")
            return
        try:
            self._retrying("abort", self._producer.abort_transaction)
        except KafkaException as exc:
            self._reset(f"abort failed: {exc.args[0]}")
        except CallHung as exc:
            self._reset(f"abort: {exc}", discard=False)


def _discard(producer: Producer) -> None:
    """Let a producer go without waiting on the broker (its transaction is aborted by the next init)."""
    try:
        producer.purge()
        producer.flush(0)
    except Exception:  # noqa: BLE001 - a fenced or dead producer raises (flush: _FENCED); nothing else to do
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        kind = "fatal" if error.fatal() else "abortable" if error.txn_requires_abort() else "retriable" if error.retriable() else "error"
        return f"{error.name()} ({kind}): {error.str()}"
    return str(exc)


def transactions_for(
    settings: Any, transactional_id: str, name: str, should_stop: StopFlag | None = None, failpoint: str | None = None
) -> Transactions:
    """Transactions whose producers come from streams.kafka with these settings."""
    from streams import kafka

    def make(tid: str, error_cb: Callable[[KafkaError], None]) -> Producer:
        return kafka.producer(settings, transactional_id=tid, error_cb=error_cb)

    return Transactions(make, transactional_id, name, should_stop=should_stop, failpoint=failpoint)
