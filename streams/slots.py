"""Stable worker slots on one host, so a restarted worker reuses its transactional.id.

A worker that dies inside a Kafka transaction leaves it open until the transaction
times out, and read_committed consumers downstream wait for it. A restarted worker
with the same transactional.id fences the dead one and aborts that transaction at
once. Slots are lock files: a live worker holds its lock; a dead one's lock is free.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

_held: list[IO] = []


def acquire_slot(directory: Path, group: str) -> int:
    """The lowest free slot of `group` on this host; held until the process exits."""
    directory.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        handle = open(directory / f"{group}.{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            slot += 1
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        _held.append(handle)
        return slot


def transactional_id(directory: Path, group: str) -> str:
    return f"erastream-{group}-{socket.gethostname()}-{acquire_slot(directory, group)}"
