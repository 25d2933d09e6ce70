"""Snapshots for readers that join a run late (``?snapshot=1``): the run's state folded from the
log (:class:`~tokenwire.core.snapshot.Snapshot`) at the position it has now.

The server keeps the latest snapshot of the runs joined lately (a bounded LRU) and folds in only
what the log gained since, so the thousandth viewer of a 100,000-event run does not read it from
``seq`` 0 again; the first reads it once. Any node can take any run's snapshot: the log is the
source, the cache only saves work.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from tokenwire.core.snapshot import Snapshot
from tokenwire.log import EventLog

__all__ = ["Snapshots"]


class Snapshots:
    """The latest snapshot of up to ``max_runs`` runs (see the module docstring)."""

    def __init__(self, log: EventLog, max_runs: int = 64):
        self._log = log
        self._max = max_runs
        self._cache: OrderedDict[str, Snapshot] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def take(self, stream_id: str) -> tuple[int, bool, bytes]:
        """The run's snapshot now: its ``next_seq`` (where the tail starts), whether the run has
        ended (no tail), and its JSON.
        :class:`~tokenwire.errors.SeqEvicted` when retention dropped its start and no snapshot
        of it is kept here, :class:`~tokenwire.errors.StreamNotFound` for an unknown run."""
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:  # one fold per run at a time; the next joiner reuses it
            snap = self._cache.pop(stream_id, None) or Snapshot(stream_id)
            try:
                if not snap.finished:
                    async for event in self._log.read(stream_id, snap.next_seq, follow=False):
                        snap.add(event)
            except BaseException:
                self._locks.pop(stream_id, None)
                raise
            self._cache[stream_id] = snap
            while len(self._cache) > self._max:
                evicted, _ = self._cache.popitem(last=False)
                self._locks.pop(evicted, None)
            return snap.next_seq, snap.finished, snap.to_json()
