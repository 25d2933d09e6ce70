"""The shared tail of a reading process: **one** blocking ``XREAD`` covers every stream the
process reads (on a Redis Cluster, one per shard: a read may name keys of one slot only), on
connections of its own, fanned out to every local reader from a bounded window (a reader behind
the window catches up with ``XRANGE``). Mixed into :class:`~tokenwire.log.redis.RedisLog`.

While Redis does not answer (a restart, a master failing over to its replica), the tail retries
with backoff for up to ``unwritable_s`` before its readers fail: they go on by themselves once
the cluster has promoted a replica. After such an outage a quiet producer gets ``unwritable_s``
(its own retry bound) to write again before it is declared lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tokenwire.errors import LogUnavailable, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event, decode
from tokenwire.log.redis_keys import KeyLayout
from tokenwire.log.redis_writer import FIELD, REDIS_ERRORS, entry_id, out_of_memory

__all__ = ["SharedTail", "Tail"]

logger = logging.getLogger("tokenwire")


class Tail:
    """What the shared tail has read of one stream: a window of events, fanned out to readers."""

    __slots__ = (
        "advanced",
        "error",
        "events",
        "finished",
        "first_seq",
        "group",
        "heard",
        "key",
        "lapsed_since",
        "last_id",
        "readers",
        "sid",
    )

    def __init__(self, stream_id: str, key: bytes, seq: int, now: float, group: int = 0):
        self.sid = stream_id
        self.group = group  # which blocking read covers it (its shard on a cluster; 0 on one instance)
        self.key = key
        self.last_id = entry_id(seq - 1) if seq > 0 else "0-0"
        self.first_seq = seq  # seq of events[0]
        self.events: list[Event] = []
        self.finished = False
        self.error: BaseException | None = None
        self.readers = 0
        self.heard = now  # when the tail last got an entry (or checked the producer's lease)
        self.lapsed_since: float | None = None  # a durable run's lease found lapsed, waiting for a takeover
        self.advanced = asyncio.Event()  # replaced on every advance; readers wait on the one they saw

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.events)

    def _wake(self) -> None:
        done, self.advanced = self.advanced, asyncio.Event()
        done.set()

    def push(self, entries: list[Any], window: int, now: float) -> None:
        batch = [decode(fields[FIELD]) for _, fields in entries]
        if batch[0].seq != self.next_seq:
            self.fail(SeqEvicted(self.sid, self.next_seq, batch[0].seq))  # trimmed while tailing
            return
        self.events += batch
        if len(self.events) > window:  # keep the newest half: a reader behind it uses XRANGE
            drop = len(self.events) - window // 2
            del self.events[:drop]
            self.first_seq += drop
        self.last_id = entries[-1][0].decode()
        self.heard = now
        self.lapsed_since = None  # a producer (maybe a new one) writes: any earlier lapse is over
        self.finished = batch[-1].__class__ in TERMINAL_TYPES
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.finished = True
        self._wake()


class SharedTail:
    """The process's shared tail of a Redis log (see the module docstring)."""

    keys: KeyLayout
    cluster: bool
    read_batch: int
    lease_s: float
    takeover_s: float
    unwritable_s: float
    process: str
    _tails: dict[str, Tail]
    _tail_tasks: dict[int, asyncio.Task[None]]
    _wake_last: dict[int, str]

    async def client(self) -> Any:
        raise NotImplementedError

    async def tail_client(self) -> Any:
        raise NotImplementedError

    def lease_key(self, stream_id: str) -> str:
        raise NotImplementedError

    def run_key(self, stream_id: str) -> str:
        raise NotImplementedError

    async def _producer_lost(self, stream_id: str) -> None:
        raise NotImplementedError

    def _attach(self, stream_id: str, key: str, seq: int) -> tuple[Tail, bool]:
        """The stream's tail (a new one if none, or if the last one failed), and whether the
        running XREAD of its group must be woken to cover it."""
        group = self.keys.shard(stream_id) if self.cluster else 0
        tail = self._tails.get(stream_id)
        new = tail is None or tail.error is not None
        if new:
            loop = asyncio.get_running_loop()
            tail = self._tails[stream_id] = Tail(stream_id, key.encode(), seq, loop.time(), group)
        assert tail is not None
        tail.readers += 1
        running = self._tail_tasks.get(group)
        if running is None or running.done():  # none yet, or one that died: start the group's read
            loop = asyncio.get_running_loop()
            self._tail_tasks[group] = loop.create_task(self._tail_loop(group), name=f"tokenwire-redis-tail-{group}")
            return tail, False
        return tail, new

    def _detach(self, tail: Tail) -> None:
        tail.readers -= 1
        if tail.readers == 0 and self._tails.get(tail.sid) is tail:
            del self._tails[tail.sid]  # the next XREAD leaves it out

    async def _wake_tail(self, group: int) -> None:
        """End a group's blocked XREAD now so that its next one covers a new stream: an entry in
        the process's own wake stream of that group (part of its every XREAD) returns it at once."""
        r = await self.client()
        wake = self.keys.wake_key(group, self.process)
        pipe: Any = r.pipeline(transaction=False)
        pipe.xadd(wake, {"w": b"1"}, maxlen=1)
        pipe.expire(wake, 3600)
        with contextlib.suppress(*REDIS_ERRORS):
            await pipe.execute()

    async def _tail_loop(self, group: int) -> None:
        """One group's blocking read (owned by this log; it ends when the group has nothing to
        tail, and by aclose()).

        Every ``lease_s / 2`` at most it also checks the streams that were quiet: a stream that
        disappeared ends its readers with StreamNotFound, a producer whose lease lapsed is ended
        with ``error(producer_lost)`` (which the next XREAD then delivers).
        """
        try:
            await self._tail_group(group)
        except Exception as exc:  # a bug, not an outage: its readers fail instead of waiting for ever
            logger.exception("event log: the shared tail of shard %d stopped", group)
            for t in self._tails.values():
                if t.group == group and not t.finished:
                    t.fail(exc)
        finally:
            if self._tail_tasks.get(group) is asyncio.current_task():
                del self._tail_tasks[group]

    async def _tail_group(self, group: int) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.lease_s / 2
        block_ms = max(1, round(wait_s * 1000))
        wake = self.keys.wake_key(group, self.process)
        down_since: float | None = None
        failures = 0
        while True:
            live = [t for t in self._tails.values() if not t.finished and t.group == group]
            if not live:
                return  # no await since the check (nor in the finally): _attach starts a new one
            streams: dict[Any, str] = {t.key: t.last_id for t in live}
            streams[wake] = self._wake_last.get(group, "0-0")
            try:
                r: Any = await self.tail_client()
                reply = await r.xread(streams, count=self.read_batch, block=block_ms)
            except REDIS_ERRORS as exc:
                now = loop.time()
                down_since = now if down_since is None else down_since
                if now - down_since > self.unwritable_s:
                    for t in live:
                        t.fail(exc)  # its readers raise; their clients resume when Redis is back
                    down_since, failures = None, 0
                else:  # a restart or a failover: retry, its readers wait
                    failures += 1
                    await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
                continue
            now = loop.time()
            if down_since is not None:
                # Back after an outage. A producer may still be retrying (its client finds the
                # promoted master later than this one did): it has unwritable_s to write before
                # it gives up itself, and so it has that long before it is declared lost.
                for t in live:
                    t.heard = now + max(self.lease_s, self.unwritable_s)
            down_since, failures = None, 0
            by_key = {t.key: t for t in live}
            for name, entries in reply or ():
                if name == wake.encode():
                    self._wake_last[group] = entries[-1][0].decode()
                elif (tail := by_key.get(name)) is not None and entries:
                    tail.push(entries, self.read_batch * 4, now)
            quiet = [t for t in live if not t.finished and now - t.heard >= wait_s]
            if quiet:
                await self._check_quiet(quiet, now)

    async def _check_quiet(self, quiet: list[Tail], now: float) -> None:
        try:
            pipe: Any = (await self.client()).pipeline(transaction=False)
            for t in quiet:
                pipe.exists(t.key)
                pipe.exists(self.lease_key(t.sid))
                pipe.exists(self.run_key(t.sid))
            found = await pipe.execute()
        except REDIS_ERRORS:
            return  # the next XREAD finds out whether Redis is gone
        for i, t in enumerate(quiet):
            t.heard = now
            exists, leased, durable = found[3 * i : 3 * i + 3]
            if not exists:
                t.fail(StreamNotFound(f"no stream {t.sid!r} in this log (unknown, or expired)"))
            elif leased:
                t.lapsed_since = None
            elif durable and now - (t.lapsed_since or now) < self.takeover_s:
                # A durable run: another node may take it over; give it takeover_s before ending it.
                t.lapsed_since = t.lapsed_since or now
            else:
                try:
                    await self._producer_lost(t.sid)
                except REDIS_ERRORS as exc:
                    if out_of_memory(exc):  # Redis is full: nobody can write the end; say so now
                        t.fail(
                            LogUnavailable(f"the event log (Redis) is full and the stream's producer is gone: {exc}")
                        )
