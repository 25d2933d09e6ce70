"""The Redis Streams backend of the event log: many processes, many nodes, one log.

One Redis stream per run (key ``{prefix}:{stream_id}``), one entry per event with the explicit
id ``{seq}-1``: ordered, and a retried append of an event that already landed fails instead of
duplicating it (exactly-once). Retention: the last ``max_events`` per stream, and a TTL once the
terminal event is written.

Writes go in two lanes through one ordered buffer: a structural event (start, tool calls and
results, steps, usage, the terminal) flushes the buffer at once; text, reasoning and argument
deltas wait at most ``batch_window_s`` (16 ms, one frame) or ``max_batch`` events, and a batch is
one command (a server-side script of ``XADD``s) in one round trip. :meth:`RedisWriter.flush`
(which the engine awaits after ``start`` and after the terminal) returns once everything is in
Redis.

Readers anywhere read with :meth:`RedisLog.batches`: ``XRANGE`` from any seq (resume, late
join), then the process's shared tail: **one** ``XREAD BLOCK`` per process, over every stream
read there, on a connection of its own, fanned out to every local reader from a bounded window
(a reader behind the window catches up with ``XRANGE``). A thousand SSE readers of one run cost
one Redis read per batch, not a thousand; connections per process are bounded (the tail's one,
the control channel's one and a blocking pool for short commands). In the producer's process the
stream's observers and iterators read a local ring as with :class:`~tokenwire.log.MemoryLog`:
they never wait for Redis.

>>> log = RedisLog("redis://127.0.0.1:6379/0", prefix="demo")   # no connection until used
>>> log.key("s1")
'demo:s1'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tokenwire.errors import ObserverOverflow, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Error, Event, decode, encode
from tokenwire.log.base import EventLog, StreamInfo, StreamWriter, replayed
from tokenwire.log.redis_control import RedisControl
from tokenwire.log.redis_runs import RedisOwnership
from tokenwire.log.redis_writer import APPEND_SCRIPT, FIELD, RedisWriter, Tail, entry_id, seq_of

__all__ = ["RedisLog", "RedisWriter"]

logger = logging.getLogger("tokenwire")


class RedisLog(RedisControl, EventLog):
    """Event log on Redis Streams, shared by every process and node that uses the same Redis.

    ``url``: ``redis://host:port/db``. ``max_events`` bounds each stream (exactly: the oldest
    events are trimmed once per batch); ``ttl_s`` is how long a finished stream stays readable;
    ``batch_window_s`` and ``max_batch`` bound how long and how many deltas wait for one write; ``local_events`` bounds
    the producer's in-process ring (its observers' and iterators' window). ``lease_s`` is the
    producer lease (a lost producer is noticed within about 1.5x that); a durable run's readers
    give other nodes ``takeover_s`` more (default 3x ``lease_s``) to take it over before they end
    it with ``error(producer_lost)``. While Redis is
    unreachable a writer buffers and retries, for at most ``unwritable_s`` and ``max_buffered``
    events; past either the stream ends with ``error(transport, log_unavailable)``.
    ``max_connections`` bounds the pool of short commands (a command waits for a free connection);
    the shared tail and the control channel hold one connection each besides.

    Memory in Redis per retained one-token delta: about 100-150 bytes (the event's JSON plus the
    stream entry's overhead).
    """

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tokenwire",
        max_events: int = 65_536,
        ttl_s: float = 3600.0,
        batch_window_s: float = 0.016,
        max_batch: int = 256,
        local_events: int = 4096,
        read_batch: int = 1024,
        lease_s: float = 2.0,
        takeover_s: float | None = None,
        unwritable_s: float = 10.0,
        max_buffered: int = 65_536,
        max_connections: int = 64,
    ):
        if max_events < 1 or ttl_s <= 0 or batch_window_s < 0 or max_batch < 1 or local_events < 1:
            raise ValueError("max_events, ttl_s, max_batch and local_events must be positive")
        self.url = url
        self.prefix = prefix
        self.max_events = max_events
        self.ttl_s = ttl_s
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.local_events = local_events
        self.read_batch = read_batch
        self.lease_s = lease_s
        self.takeover_s = 3 * lease_s if takeover_s is None else takeover_s
        self.unwritable_s = unwritable_s
        self.max_buffered = max_buffered
        self.max_connections = max_connections
        self._redis: aioredis.Redis | None = None
        self._tail_redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._script: Any = None
        self._tails: dict[str, Tail] = {}
        self._tail_task: asyncio.Task[None] | None = None
        self._wake_key = f"{prefix}:wake:{uuid.uuid4().hex}"
        self._ownership: RedisOwnership | None = None
        self._wake_last = "0-0"

    def key(self, stream_id: str) -> str:
        return f"{self.prefix}:{stream_id}"

    def end_key(self, stream_id: str) -> str:
        return f"{self.prefix}:{stream_id}:end"

    def lease_key(self, stream_id: str) -> str:
        return f"{self.prefix}:{stream_id}:lease"

    @property
    def ownership(self) -> RedisOwnership:
        """Leases, run definitions and due runs, shared by every node (:mod:`tokenwire.log.redis_runs`)."""
        if self._ownership is None:
            self._ownership = RedisOwnership(self)
        return self._ownership

    async def _producer_lost(self, stream_id: str) -> None:
        """End a stream whose producer's lease lapsed with ``error(transport, producer_lost)``.

        Several nodes may notice at once: the explicit entry id lets exactly one append win, and
        the append script writes it only while no producer holds the lease (a node that took
        the run over in the meantime keeps it).
        """
        info = await self.info(stream_id)
        if info.finished or await self.redis.exists(self.lease_key(stream_id)):
            return
        terminal = Error(
            code="producer_lost",
            message=f"the node producing stream {stream_id!r} stopped (its lease lapsed); what it wrote is kept",
            retryable=True,
            source="transport",
            stream_id=stream_id,
            seq=info.next_seq,
            ts=time.time(),
        )
        if await self.write(self.key(stream_id), [(terminal.seq, encode(terminal))], terminal=True, token=""):
            await self.ownership.forget(stream_id)

    @property
    def redis(self) -> aioredis.Redis:
        """The client for short commands: a bounded pool where a command waits for a connection."""
        if self._redis is None:
            pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=self.max_connections, timeout=10)
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    # -- writing ---------------------------------------------------------------------------------

    def open(self, stream_id: str, *, at: int = 0, token: str | None = None) -> StreamWriter:
        return RedisWriter(self, stream_id, at=at, token=token)

    async def write(self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str) -> bool:
        """One command for the whole batch (a server-side script of XADDs); an entry that already
        landed (a retried append) is skipped, not duplicated. The writer retries failures. False
        when the stream already ended (another node wrote its terminal) or ``token`` does not
        hold its lease (another node took it over; ``""``: a producer does): nothing was appended."""
        args: list[Any] = [self.max_events, max(1, round(self.ttl_s)) if terminal else 0, token]
        for seq, data in batch:
            args += (entry_id(seq), data)
        keys = [key, key + ":end", key + ":lease", key + ":run"]
        return bool(await self._append_script(keys=keys, args=args))

    @property
    def _append_script(self) -> Any:
        if self._script is None:
            self._script = self.redis.register_script(APPEND_SCRIPT)
        return self._script

    # -- reading ---------------------------------------------------------------------------------

    async def info(self, stream_id: str) -> StreamInfo:
        pipe: Any = self.redis.pipeline(transaction=False)
        key = self.key(stream_id)
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
        first, last = await pipe.execute()
        if not last:
            raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or expired)")
        (first_id, _), (last_id, fields) = first[0], last[0]
        finished = decode(fields[FIELD]).__class__ in TERMINAL_TYPES
        return StreamInfo(seq_of(first_id), seq_of(last_id) + 1, finished)

    def batches(
        self,
        stream_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        idle_s: float | None = None,
        max_lag: int | None = None,
        live_from: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        return self._batches(stream_id, max(from_seq, 0), follow, idle_s, max_lag, live_from)

    async def _batches(
        self, stream_id: str, seq: int, follow: bool, idle_s: float | None, max_lag: int | None, live_from: int | None
    ) -> AsyncIterator[Sequence[Event]]:
        key = self.key(stream_id)
        r: Any = self.redis  # redis-py's reply types are too loose to be useful here
        first = True
        while True:  # history first: XRANGE from seq (no separate lookup: one round trip to resume)
            entries = await r.xrange(key, min=entry_id(seq), count=self.read_batch)
            if not entries:
                if first and not await r.exists(key):
                    raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or expired)")
                if first and seq > 0 and not await r.xrange(key, min=entry_id(seq - 1), count=1):
                    # Nothing at or just before seq: either past the end of a live stream, or trimmed.
                    head = await self.info(stream_id)
                    if seq < head.first_seq:
                        raise SeqEvicted(stream_id, seq, head.first_seq)
                break
            first = False
            batch = [decode(fields[FIELD]) for _, fields in entries]
            if seq_of(entries[0][0]) != seq:
                raise SeqEvicted(stream_id, seq, seq_of(entries[0][0]))  # trimmed while we read
            seq = batch[-1].seq + 1
            ended = batch[-1].__class__ in TERMINAL_TYPES
            history = replayed(batch, live_from)  # what came before the reader: a replay
            if history:
                yield history
            if ended:
                return
            if len(entries) < self.read_batch:
                break
        if not follow:
            return
        tail, wake = self._attach(stream_id, key, seq)
        try:
            if wake:
                await self._wake_tail()  # a stream the blocked XREAD does not cover yet
            async for events in self._follow(tail, key, seq, idle_s, max_lag):
                yield events
        finally:
            self._detach(tail)

    async def _follow(
        self, tail: Tail, key: str, seq: int, idle_s: float | None, max_lag: int | None
    ) -> AsyncIterator[Sequence[Event]]:
        """One reader of the shared tail, from ``seq``."""
        r: Any = self.redis
        while True:
            if seq < tail.first_seq:  # behind the shared window: catch up from Redis
                entries = await r.xrange(key, min=entry_id(seq), count=self.read_batch)
                if not entries or seq_of(entries[0][0]) != seq:
                    raise SeqEvicted(tail.sid, seq, seq_of(entries[0][0]) if entries else tail.first_seq)
                batch: Sequence[Event] = [decode(fields[FIELD]) for _, fields in entries]
            elif seq < tail.next_seq:
                batch = tail.events[seq - tail.first_seq :]
            elif tail.error is not None:
                raise tail.error
            else:
                advanced = tail.advanced
                try:
                    async with asyncio.timeout(idle_s):
                        await advanced.wait()
                except TimeoutError:
                    yield ()  # idle: the caller may send a keep-alive
                continue
            seq = batch[-1].seq + 1
            yield batch
            if batch[-1].__class__ in TERMINAL_TYPES:
                return
            if max_lag is not None and not tail.finished and tail.next_seq - seq > max_lag:
                raise ObserverOverflow(
                    f"reader of stream {tail.sid!r} is {tail.next_seq - seq} events behind (max_lag={max_lag}); "
                    f"resume from seq {seq}"
                )

    # -- the shared tail: one XREAD for every stream this process reads --------------------------------

    def _attach(self, stream_id: str, key: str, seq: int) -> tuple[Tail, bool]:
        """The stream's tail (a new one if none, or if the last one failed), and whether the
        running XREAD must be woken to cover it."""
        tail = self._tails.get(stream_id)
        new = tail is None or tail.error is not None
        if new:
            tail = self._tails[stream_id] = Tail(stream_id, key.encode(), seq, asyncio.get_running_loop().time())
        assert tail is not None
        tail.readers += 1
        if self._tail_task is None:
            self._tail_task = asyncio.get_running_loop().create_task(self._tail_loop(), name="tokenwire-redis-tail")
            return tail, False
        return tail, new

    def _detach(self, tail: Tail) -> None:
        tail.readers -= 1
        if tail.readers == 0 and self._tails.get(tail.sid) is tail:
            del self._tails[tail.sid]  # the next XREAD leaves it out

    async def _wake_tail(self) -> None:
        """End the tail's blocked XREAD now so that its next one covers a new stream: an entry in
        the process's own wake stream (part of every XREAD) returns it at once."""
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=1)
        pipe.expire(self._wake_key, 3600)
        with contextlib.suppress(RedisError, OSError):
            await pipe.execute()

    @property
    def _tail_client(self) -> aioredis.Redis:
        if self._tail_redis is None:  # its own connection: a blocked XREAD never holds up a command
            self._tail_redis = aioredis.Redis.from_url(self.url, max_connections=1)
        return self._tail_redis

    async def _tail_loop(self) -> None:
        """The process's shared tail (owned by this log; it ends when nothing is tailed, and by aclose()).

        Every ``lease_s / 2`` at most it also checks the streams that were quiet: a stream that
        disappeared ends its readers with StreamNotFound, a producer whose lease lapsed is ended
        with ``error(producer_lost)`` (which the next XREAD then delivers).
        """
        loop = asyncio.get_running_loop()
        wait_s = self.lease_s / 2
        block_ms = max(1, round(wait_s * 1000))
        r: Any = self._tail_client
        while True:
            live = [t for t in self._tails.values() if not t.finished]
            if not live:
                self._tail_task = None  # no await since the check: _attach starts a new one
                return
            streams: dict[Any, str] = {t.key: t.last_id for t in live}
            streams[self._wake_key] = self._wake_last
            try:
                reply = await r.xread(streams, count=self.read_batch, block=block_ms)
            except (RedisError, OSError) as exc:
                for t in live:
                    t.fail(exc)  # its readers raise; their clients resume when Redis is back
                continue
            now = loop.time()
            by_key = {t.key: t for t in live}
            for name, entries in reply or ():
                if name == self._wake_key.encode():
                    self._wake_last = entries[-1][0].decode()
                elif (tail := by_key.get(name)) is not None and entries:
                    tail.push(entries, self.read_batch * 4, now)
            quiet = [t for t in live if not t.finished and now - t.heard >= wait_s]
            if quiet:
                await self._check_quiet(quiet, now)

    async def _check_quiet(self, quiet: list[Tail], now: float) -> None:
        pipe: Any = self.redis.pipeline(transaction=False)
        for t in quiet:
            pipe.exists(t.key)
            pipe.exists(self.lease_key(t.sid))
            pipe.exists(self.ownership.run_key(t.sid))
        try:
            found = await pipe.execute()
        except (RedisError, OSError) as exc:
            for t in quiet:
                t.fail(exc)
            return
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
                with contextlib.suppress(RedisError, OSError):
                    await self._producer_lost(t.sid)

    async def aclose(self) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail_task
            self._tail_task = None
        if self._tail_redis is not None:
            await self._tail_redis.aclose()
            self._tail_redis = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
