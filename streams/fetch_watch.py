"""Consumers that sit behind data they never fetch, found and restarted.

After the broker restarts or freezes, a librdkafka consumer can keep its assignment and poll
without error yet never fetch again (confluentinc/librdkafka#5153, open): seen here as an
`eras.done` watcher that never saw the last notices and as a stage that, after its group
membership was lost and its partitions assigned back, never read them. A new consumer at the
same offsets fetches again. The rule is `FetchStall`; `FetchWatch` applies it to a consumer
that has been quiet a while, asking a fresh reader for the high watermarks (the stalled
consumer's own answers cannot be trusted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.settings import Settings
from streams.topic_reader import TP, reader, watermarks

log = logging.getLogger(__name__)


@dataclass
class FetchStall:
    """Partitions behind their high watermark at the same position on two checks in a row.

    `slack` offsets behind count as caught up: a partition whose last record is the marker that
    ends a transaction keeps the next offset one short of the high watermark for good.
    """

    slack: int = 1
    _behind: dict[TP, int] = field(default_factory=dict)
    _restarted: dict[TP, int] = field(default_factory=dict)

    def check(self, positions: dict[TP, int], ends: dict[TP, int]) -> dict[TP, int]:
        """The stalled partitions; each position is reported once: if a new consumer stays there
        too, what lies ahead is not fetchable data (aborted records, say), not a stalled fetch."""
        behind = {tp: at for tp, at in positions.items() if tp in ends and ends[tp] - at > self.slack}
        stalled = {tp: at for tp, at in behind.items()
                   if self._behind.get(tp) == at and self._restarted.get(tp) != at}
        self._behind = {} if stalled else behind
        self._restarted.update(stalled)
        return stalled

    def reset(self) -> None:
        self._behind = {}


def member_of(settings: Settings, group_id: str, member_id: str | None) -> bool | None:
    """Whether the broker lists this member in the group; None when it cannot be asked now."""
    from streams import kafka

    if not member_id:
        return False
    try:
        admin = kafka.admin_client(settings)  # held: a future of a collected client never completes
        description = admin.describe_consumer_groups([group_id], request_timeout=5)[group_id].result(timeout=10)
    except Exception as exc:  # noqa: BLE001 - the broker away, or the call timed out: decide later
        log.debug("cannot describe group %s: %s", group_id, exc)
        return None
    return any(m.member_id == member_id for m in description.members)


class FetchWatch:
    """Tells a consume loop when its consumer should be replaced; call `quiet` after an empty poll."""

    def __init__(self, settings: Settings, name: str, check_every_s: float = 10.0, slack: int = 1):
        self.settings = settings
        self.name = name
        self.check_every_s = check_every_s
        self.rule = FetchStall(slack)
        self._quiet_since = time.monotonic()
        self._outside = 0

    def active(self) -> None:
        """Messages came: the consumer fetches."""
        self._quiet_since = time.monotonic()
        self.rule.reset()

    def quiet(self, current: Callable[[], dict[TP, int]], consumer: Consumer | None = None,
              group_id: str | None = None) -> bool:
        """True when the positions (next offsets to read) stalled behind data; checks every check_every_s.

        Given the group's consumer: one that holds no partitions and that the broker does not
        list as a member of its group, twice in a row, is stuck outside it (the other face of
        the same librdkafka stall: it lost its membership in a freeze and never joined again).
        """
        if time.monotonic() - self._quiet_since < self.check_every_s:
            return False
        self._quiet_since = time.monotonic()
        positions = current()
        if not positions:
            log.debug("%s: fetch watch: no partitions", self.name)
            return self._outside_group(consumer, group_id)
        self._outside = 0
        try:
            probe = reader(self.settings)
            try:
                ends = {tp: high for tp, (_, high) in watermarks(probe, list(positions), timeout=5).items()}
            finally:
                probe.close()
        except KafkaException:
            return False  # the broker is away: nothing to decide yet
        stalled = self.rule.check(positions, ends)
        log.debug("%s: fetch watch: positions %s, ends %s", self.name, sorted(positions.items()), sorted(ends.items()))
        if stalled:
            where = ", ".join(f"{t}[{p}] at {o} of {ends[(t, p)]}" for (t, p), o in sorted(stalled.items()))
            log.warning("%s: consumer stalled behind data (%s); starting a new one at the same offsets", self.name, where)
        return bool(stalled)

    def _outside_group(self, consumer: Consumer | None, group_id: str | None) -> bool:
        if consumer is None or group_id is None:
            return False
        member = member_of(self.settings, group_id, consumer.memberid())
        if member is None:
            return False
        self._outside = 0 if member else self._outside + 1
        if self._outside >= 2:
            log.warning("%s: consumer holds no partitions and is no member of group %s; starting a new one",
                        self.name, group_id)
            self._outside = 0
            return True
        return False


def positions_of(consumer: Consumer, settings: Settings, group_id: str) -> dict[TP, int]:
    """Next offset to read per assigned partition; where it has none yet (nothing consumed since
    it was assigned), the group's committed offset, asked by a fresh consumer of the group that
    never joins it: the stalled consumer's own requests may never complete."""
    from streams import kafka

    assigned = consumer.assignment()
    if not assigned:
        return {}
    out: dict[TP, int] = {}
    missing: list[TopicPartition] = []
    for tp in consumer.position(assigned):
        if tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
        else:
            missing.append(TopicPartition(tp.topic, tp.partition))
    if missing:
        probe = Consumer(kafka.consumer_config(settings, group_id))
        try:
            for tp in probe.committed(missing, timeout=5):
                out[(tp.topic, tp.partition)] = max(tp.offset, 0)
        except KafkaException:
            pass
        finally:
            probe.close()
    return out
