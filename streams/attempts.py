"""How often an era's compute was started, kept on disk, so an era that kills its worker is found out.

An era that crashes its worker process (an OOM kill, a segfault in a kernel) is read again by
the restarted worker and would crash it again, for ever. Before computing, the runner records
the attempt here; after the era's outputs are committed it forgets it. A worker that finds an
era already started `max_attempts` times dead-letters it instead of computing it.

One JSON file per consumer group under DATA_DIR/attempts, shared by the group's workers on
this host (an flock guards each read-modify-write); an era is identified by its key and the
offset of its first chunk, so a replayed era starts with a clean count.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class AttemptLedger:
    def __init__(self, directory: Path, group: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{group}.json"

    @staticmethod
    def era_id(key: str, partition: int, first_offset: int) -> str:
        return f"{key}@{partition}:{first_offset}"

    def start(self, era: str) -> int:
        """Record one more attempt of `era`; returns how many attempts came before this one."""
        with self._locked() as entries:
            before = entries.get(era, 0)
            entries[era] = before + 1
        return before

    def forget(self, eras: list[str]) -> None:
        if not eras:
            return
        with self._locked() as entries:
            for era in eras:
                entries.pop(era, None)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text()) if self.path.exists() else {}
            except ValueError:
                entries = {}  # a torn write (power loss): counts restart, nothing else is lost
            yield entries
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w") as fh:
                json.dump(entries, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
