"""Fault injection for the delivery tests; inert unless its environment variables are set.

- ERASTREAM_FAILPOINTS="sink.after_insert=2,tsfresh.in_era=1": `hit(name)` counts calls per
  name and SIGKILLs this process on the N-th one, exactly like `kill -9` at that line.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _armed() -> dict[str, int]:
    spec = os.environ.get("ERASTREAM_FAILPOINTS", "")
    points = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition("=")
        points[name] = int(count or 1)
    return points


def hit(name: str) -> None:
    armed = _armed()
    if name not in armed:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)

