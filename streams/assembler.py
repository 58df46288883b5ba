"""Era reassembly with commit-safe offsets.

A stage that needs a whole era buffers its chunks. It may commit, per partition,
only up to the first offset that an unfinished era still needs: a crash then
re-reads exactly what was not finished. After a restart or rebalance, a chunk
whose era's first chunk was not seen since the resume offset belongs to an era
that was already finished (the commit rule guarantees it), so it is skipped.

An era that never completes (its other chunks were dead-lettered upstream, a stopped follower
left it open, a chunk index lies beyond the era's count) would hold its partition's committed
offset back for ever: :meth:`EraAssembler.stalled` hands out eras that received no chunk for
a given time, so the stage dead-letters them and the offset moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.codec import EraChunk


@dataclass
class CompleteEra:
    """All chunks of one era, in chunk order, and where they came from."""

    key: str
    partition: int
    chunks: list[EraChunk]
    offsets: list[int]

    @property
    def first(self) -> EraChunk:
        return self.chunks[0]


@dataclass
class StalledEra:
    """The chunks of an era that stopped receiving chunks, and why it cannot complete."""

    key: str
    partition: int
    chunks: list[EraChunk]
    offsets: list[int]
    reason: str


@dataclass
class _PendingEra:
    first_offset: int
    last_seen: float
    chunks: dict[int, EraChunk] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    last_index: int | None = None

    def complete(self) -> bool:
        return self.last_index is not None and len(self.chunks) == self.last_index + 1

    def why_incomplete(self) -> str:
        have = sorted(self.chunks)
        if self.last_index is None:
            return f"its last chunk never came (chunks {_ranges(have)} received)"
        beyond = [i for i in have if i > self.last_index]
        if beyond:
            return f"chunk index {beyond[0]} lies beyond the era's count of {self.last_index + 1}"
        missing = sorted(set(range(self.last_index + 1)) - set(have))
        return f"chunk(s) {_ranges(missing)} of {self.last_index + 1} never came"


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out: list[str] = []
    for i in indices:
        if out and i == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out) or "none"


class EraAssembler:
    """Buffers era chunks per partition and hands out whole eras."""

    def __init__(self) -> None:
        self._open: dict[int, dict[str, _PendingEra]] = {}
        self._next: dict[int, int] = {}
        self.skipped = 0

    def add(self, chunk: EraChunk, partition: int, offset: int, now: float = 0.0) -> CompleteEra | None:
        """Buffer one chunk (arrived at monotonic time `now`); returns the era when it completes it."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        eras = self._open.setdefault(partition, {})
        pending = eras.get(chunk.era_key)
        if chunk.chunk_index == 0:
            # a first chunk always (re)starts the era: a replayed era supersedes a half-read one
            pending = eras[chunk.era_key] = _PendingEra(first_offset=offset, last_seen=now)
        elif pending is None:
            self.skipped += 1
            return None
        pending.last_seen = max(pending.last_seen, now)
        pending.chunks[chunk.chunk_index] = chunk
        pending.offsets[chunk.chunk_index] = offset
        if chunk.last:
            pending.last_index = chunk.chunk_index
        if not pending.complete():
            return None
        del eras[chunk.era_key]
        order = sorted(pending.chunks)
        return CompleteEra(
            key=chunk.era_key,
            partition=partition,
            chunks=[pending.chunks[i] for i in order],
            offsets=[pending.offsets[i] for i in order],
        )

    def stalled(self, now: float, timeout: float) -> list[StalledEra]:
        """Remove and return the eras that received no chunk for `timeout` seconds before `now`."""
        out: list[StalledEra] = []
        for partition, eras in self._open.items():
            for key, pending in list(eras.items()):
                idle = now - pending.last_seen
                if idle < timeout:
                    continue
                del eras[key]
                order = sorted(pending.chunks)
                out.append(StalledEra(
                    key, partition, [pending.chunks[i] for i in order], [pending.offsets[i] for i in order],
                    f"era {key} stalled: no chunk for {idle:.0f} s (ERA_STALL_TIMEOUT_S={timeout:g}) and "
                    f"{pending.why_incomplete()}",
                ))
        return out

    def note_consumed(self, partition: int, offset: int) -> None:
        """A message that is not an era chunk (a dead letter) still moves the position."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def safe_offset(self, partition: int) -> int | None:
        """The offset to commit for a partition, or None when nothing was read there."""
        if partition not in self._next:
            return None
        open_eras = self._open.get(partition, {})
        if open_eras:
            return min(p.first_offset for p in open_eras.values())
        return self._next[partition]

    def partitions(self) -> list[int]:
        return sorted(self._next)

    def in_flight(self) -> int:
        return sum(len(eras) for eras in self._open.values())

    def drop(self, partitions: list[int]) -> None:
        """Forget revoked partitions: their new owner re-reads from the committed offset."""
        for p in partitions:
            self._open.pop(p, None)
            self._next.pop(p, None)

    def clear(self) -> None:
        self._open.clear()
        self._next.clear()
