"""The Redis Streams backend of the event log: many processes, many nodes, one log.

One Redis stream per run (key ``{prefix}:{<shard tag>}:{stream_id}``, :mod:`tokenwire.log.redis_keys`),
one entry per event with the explicit id ``{seq}-1``: ordered, and a retried append of an event
that already landed fails instead of duplicating it (exactly-once). Retention: the last
``max_events`` and ``max_bytes`` per stream, a TTL once the terminal event is written, and
``idle_ttl_s`` after the last append for a stream that never gets one (every producer gone).

The same URL names one Redis or any node of a **Redis Cluster** (or Valkey): the log finds out
on its first command. Every key of a stream hashes to its shard's slot, so each append, lease
change and shard read is one command on one master; the masters share the streams evenly.

Writes go in two lanes through one ordered buffer: a structural event (start, tool calls and
results, steps, usage, the terminal) flushes the buffer at once; text, reasoning and argument
deltas wait at most ``batch_window_s`` (16 ms, one frame) or ``max_batch`` events, and a batch is
one command (a server-side script of ``XADD``s) in one round trip. :meth:`RedisWriter.flush`
(which the engine awaits after ``start`` and after the terminal) returns once everything is in
Redis.

Readers anywhere read with :meth:`RedisLog.batches`: ``XRANGE`` from any seq (resume, late
join), then the process's shared tail (:mod:`tokenwire.log.redis_tail`): **one** ``XREAD BLOCK``
per process (per shard on a cluster), over every stream read there, fanned out to every local
reader from a bounded window. A thousand SSE readers of one run cost one Redis read per batch,
not a thousand; connections per process are bounded (the tail's, the control channel's and a
blocking pool for short commands). In the producer's process the
stream's observers and iterators read a local ring as with :class:`~tokenwire.log.MemoryLog`:
they never wait for Redis.

>>> log = RedisLog("redis://127.0.0.1:6379/0", prefix="demo")   # no connection until used
>>> log.key("s1")
'demo:{s16.11}:s1'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tokenwire.errors import ObserverOverflow, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Error, Event, decode, encode
from tokenwire.log.base import EventLog, StreamInfo, StreamWriter, replayed
from tokenwire.log.redis_control import RedisControl
from tokenwire.log.redis_keys import SHARDS, KeyLayout
from tokenwire.log.redis_runs import RedisOwnership
from tokenwire.log.redis_tail import SharedTail, Tail
from tokenwire.log.redis_writer import APPEND_SCRIPT, FIELD, RedisWriter, entry_id, seq_of

__all__ = ["RedisLog", "RedisWriter"]

logger = logging.getLogger("tokenwire")


class RedisLog(RedisControl, SharedTail, EventLog):
    """Event log on Redis Streams, shared by every process and node that uses the same Redis.

    ``url``: ``redis://host:port/db``, one instance or any node of a cluster. ``max_events`` and
    ``max_bytes`` (of event payloads; ``None``: no byte bound) bound each stream (exactly: the
    oldest events are trimmed once per batch); ``ttl_s`` is how long a finished stream stays
    readable, ``idle_ttl_s`` how long one that stopped without an end does; ``shards``: streams
    per blocking read on a cluster (:mod:`tokenwire.log.redis_keys`; the same on every node);
    ``batch_window_s`` and ``max_batch`` bound how long and how many deltas wait for one write; ``local_events`` bounds
    the producer's in-process ring (its observers' and iterators' window). ``lease_s`` is the
    producer lease (a lost producer is noticed within about 1.5x that); a durable run's readers
    give other nodes ``takeover_s`` more (default 3x ``lease_s``) to take it over before they end
    it with ``error(producer_lost)``. While Redis is
    unreachable a writer buffers and retries, for at most ``unwritable_s`` and ``max_buffered``
    events; past either the stream ends with ``error(transport, log_unavailable)``.
    ``max_connections`` bounds the pool of short commands (a command waits for a free connection;
    on a cluster the bound is per node, and a command past it fails like an outage and is
    retried); the shared tail (one per shard read, on a cluster) and the control channel hold
    connections of their own besides.

    On a cluster the terminal batch waits up to ``replica_wait_s`` for a replica to have it
    (Redis replicates asynchronously); the earlier batches need no wait (see
    :mod:`tokenwire.log.redis_writer`). A Redis at ``maxmemory`` ends the stream with
    ``error(transport, log_unavailable)`` at once. A reader of an owner's runs (the server's
    "follow my runs") looks for new ones every ``index_poll_s`` while it waits.

    A command (or a connect) that gets no answer for ``command_timeout_s`` fails like an outage
    and is retried: a node cut off from Redis by a partition (packets dropped, nothing refused)
    finds out then, not when TCP gives up (minutes), and a writer cut off that way learns it was
    taken over within that long of the partition healing.

    Memory in Redis per retained one-token delta: about 100-150 bytes (the event's JSON plus the
    stream entry's overhead; ``docs/deployment.md`` has the measured figures and how to size).
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
        max_bytes: int | None = 16 * 2**20,
        idle_ttl_s: float = 86_400.0,
        shards: int = SHARDS,
        replica_wait_s: float = 0.5,
        index_poll_s: float = 0.25,
        command_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        if max_events < 1 or ttl_s <= 0 or batch_window_s < 0 or max_batch < 1 or local_events < 1:
            raise ValueError("max_events, ttl_s, max_batch and local_events must be positive")
        if idle_ttl_s <= 0 or (max_bytes is not None and max_bytes < 1):
            raise ValueError("idle_ttl_s and max_bytes must be positive")
        self.url = url
        self.prefix = prefix
        self.keys = KeyLayout(prefix, shards)
        self.max_bytes = max_bytes
        self.idle_ttl_s = idle_ttl_s
        self.replica_wait_s = replica_wait_s
        self.index_poll_s = index_poll_s
        self.command_timeout_s = command_timeout_s
        self.clock = clock
        """This node's wall clock (for tests: a node whose clock is off); the leases' due scores
        are kept on Redis's clock (:mod:`tokenwire.log.redis_runs`)."""
        self.cluster = False  # known after the first command (client())
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
        self._redis: Any = None
        self._tail_redis: Any = None
        self._connecting = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._script: Any = None
        self._tails: dict[str, Tail] = {}
        self._tail_tasks: dict[int, asyncio.Task[None]] = {}
        self.process = uuid.uuid4().hex  # this process's wake-up streams
        self._ownership: RedisOwnership | None = None
        self._wake_last: dict[int, str] = {}

    def key(self, stream_id: str) -> str:
        return self.keys.key(stream_id)

    def end_key(self, stream_id: str) -> str:
        return self.key(stream_id) + ":end"

    def lease_key(self, stream_id: str) -> str:
        return self.key(stream_id) + ":lease"

    def run_key(self, stream_id: str) -> str:
        return self.key(stream_id) + ":run"

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
        if info.finished or await (await self.client()).exists(self.lease_key(stream_id)):
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
        if await self.write(self.key(stream_id), [(terminal.seq, encode(terminal))], terminal=True, token="") == 1:
            await self.ownership.forget(stream_id)

    async def client(self) -> Any:
        """The client for short commands, connected on first use: a ``redis.asyncio.Redis`` on a
        bounded pool (a command waits for a connection), or a ``RedisCluster`` when the URL names
        a node of a cluster (one ``INFO cluster`` finds out)."""
        if self._redis is None:
            async with self._connecting:
                if self._redis is None:
                    bound: dict[str, Any] = {"socket_timeout": self.command_timeout_s}
                    bound["socket_connect_timeout"] = self.command_timeout_s
                    probe = aioredis.Redis.from_url(self.url, **bound)
                    try:
                        info = await probe.info("cluster")
                    finally:
                        await probe.aclose()
                    self.cluster = bool(info.get("cluster_enabled"))
                    if self.cluster:
                        self._redis = RedisCluster.from_url(self.url, max_connections=self.max_connections, **bound)
                    else:
                        pool = aioredis.BlockingConnectionPool.from_url(
                            self.url, max_connections=self.max_connections, timeout=10, **bound
                        )
                        self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    async def tail_client(self) -> Any:
        """The shared tail's client: connections of its own, so that a blocked XREAD never holds
        up a command (one on one instance; one per shard read, at most, on a cluster)."""
        if self._tail_redis is None:
            await self.client()
            # Its reads block for lease_s / 2: one that takes a command's time longer is cut off.
            bound: dict[str, Any] = {"socket_timeout": self.lease_s / 2 + self.command_timeout_s}
            bound["socket_connect_timeout"] = self.command_timeout_s
            if self.cluster:
                self._tail_redis = RedisCluster.from_url(self.url, **bound)
            else:
                self._tail_redis = aioredis.Redis.from_url(self.url, max_connections=1, **bound)
        return self._tail_redis

    # -- writing ---------------------------------------------------------------------------------

    def open(self, stream_id: str, *, at: int = 0, token: str | None = None) -> StreamWriter:
        return RedisWriter(self, stream_id, at=at, token=token)

    async def write(self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str) -> int:
        """One command for the whole batch (a server-side script of XADDs); an entry that already
        landed (a retried append) is skipped, not duplicated. The writer retries failures. 0 when
        the stream already ended (another node wrote its terminal) or ``token`` does not hold its
        lease (another node took it over; ``""``: a producer does): nothing was appended.
        ``-1 - next_seq`` when the stream lacks events before the batch (a failover lost them)."""
        r = await self.client()
        keys, args = self.append_args(key, batch, terminal=terminal, token=token)
        node = self._replicated_node(r, key) if terminal else None
        if node is None:
            if self._script is None:
                self._script = r.register_script(APPEND_SCRIPT)
            return int(await self._script(keys=keys, args=args))
        # The end of a stream on a cluster: WAIT until a replica has it. WAIT counts the writes of
        # its own connection, so the append goes first on that same one (a pipeline to one node).
        pipe: Any = r.pipeline(transaction=False)
        pipe.execute_command("EVAL", APPEND_SCRIPT, len(keys), *keys, *args, target_nodes=node)
        pipe.execute_command("WAIT", 1, round(self.replica_wait_s * 1000), target_nodes=node)
        written, acked = await pipe.execute()
        if written == 1 and not acked:
            logger.warning("event log: no replica confirmed the end of %s within %.1f s", key, self.replica_wait_s)
        return int(written)

    def append_args(
        self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`~tokenwire.log.redis_writer.APPEND_SCRIPT` for a batch."""
        ttl = max(1, round(self.ttl_s)) if terminal else 0
        args: list[Any] = [self.max_events, ttl, token, round(self.idle_ttl_s * 1000), round(self.lease_s * 1000)]
        args.append(self.max_bytes or 0)
        for seq, data in batch:
            args += (entry_id(seq), data)
        return [key, key + ":end", key + ":lease", key + ":run", key + ":bytes"], args

    def _replicated_node(self, r: Any, key: str) -> Any:
        """The master of ``key`` when the log is a cluster where it has a replica to wait for."""
        if not self.cluster or self.replica_wait_s <= 0:
            return None
        if len(r.nodes_manager.slots_cache.get(r.keyslot(key), ())) < 2:
            return None
        return r.get_node_from_key(key)

    # -- reading ---------------------------------------------------------------------------------

    async def info(self, stream_id: str) -> StreamInfo:
        pipe: Any = (await self.client()).pipeline(transaction=False)
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
        r: Any = await self.client()  # redis-py's reply types are too loose to be useful here
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
                await self._wake_tail(tail.group)  # a stream the blocked XREAD does not cover yet
            async for events in self._follow(tail, key, seq, idle_s, max_lag):
                yield events
        finally:
            self._detach(tail)

    async def _follow(
        self, tail: Tail, key: str, seq: int, idle_s: float | None, max_lag: int | None
    ) -> AsyncIterator[Sequence[Event]]:
        """One reader of the shared tail, from ``seq``."""
        r: Any = await self.client()
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

    async def aclose(self) -> None:
        tasks, self._tail_tasks = list(self._tail_tasks.values()), {}
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
