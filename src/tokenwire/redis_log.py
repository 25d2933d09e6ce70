"""The Redis Streams backend of the event log: many processes, many nodes, one log.

One Redis stream per run (key ``{prefix}:{stream_id}``), one entry per event with the explicit
id ``{seq}-1``: ordered, and a retried append of an event that already landed fails instead of
duplicating it (exactly-once). Retention: ``MAXLEN ~ max_events`` per stream, and a TTL once the
terminal event is written.

Writes go in two lanes through one ordered buffer: a structural event (start, tool calls and
results, steps, usage, the terminal) flushes the buffer at once; text, reasoning and argument
deltas wait at most ``batch_window_s`` (16 ms, one frame) or ``max_batch`` events, and a batch is
one command (a server-side script of ``XADD``s) in one round trip. :meth:`RedisWriter.flush`
(which the engine awaits after ``start`` and after the terminal) returns once everything is in
Redis.

Readers anywhere read with :meth:`RedisLog.batches`: ``XRANGE`` from any seq (resume, late
join), then ``XREAD BLOCK`` to tail. In the producer's process the stream's observers and
iterators read a local ring as with :class:`~tokenwire.log.MemoryLog`: they never wait for Redis.

>>> log = RedisLog("redis://127.0.0.1:6379/0", prefix="demo")   # no connection until used
>>> log.key("s1")
'demo:s1'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tokenwire.errors import LogUnavailable, ObserverOverflow, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Error, Event, ReasoningDelta, TextDelta, ToolCallDelta, decode, encode
from tokenwire.log import EventLog, StreamInfo, StreamWriter, _StreamRing

__all__ = ["RedisLog", "RedisWriter"]

logger = logging.getLogger("tokenwire")

_DELTAS = (TextDelta, ReasoningDelta, ToolCallDelta)
_FIELD = b"e"


_APPEND = """
local key, maxlen, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local ok = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, ARGV[i], 'e', ARGV[i + 1])
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'equal or smaller', 1, true) then
    return redis.error_reply(ok.err)
  end
end
if ttl > 0 then redis.call('EXPIRE', key, ttl) end
return 1
"""
"""Appends a batch in one command: explicit ids; an id that is already there (a retry) is skipped."""


def _entry_id(seq: int) -> str:
    return f"{seq}-1"


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class RedisWriter(_StreamRing):
    """One stream's writer: a local ring for in-process readers, a batched lane to Redis."""

    def __init__(self, log: RedisLog, stream_id: str):
        super().__init__(stream_id, log.local_events, self._on_terminal)
        self._log = log
        self._key = log.key(stream_id)
        self._pending: list[tuple[int, bytes]] = []
        self._has_data = asyncio.Event()  # something to write
        self._wake_flusher = asyncio.Event()  # write it now (structural, a full batch, the end)
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._closing = False
        self._failure: LogUnavailable | None = None
        self._down_since: float | None = None
        self._retries = 0
        self._lease_key = log.lease_key(stream_id)
        self._flusher = asyncio.get_running_loop().create_task(self._run(), name=f"tokenwire-redis-{stream_id}")

    def append(self, event: Event) -> Any:
        r = super().append(event)  # local readers first: they never wait for Redis
        if self._failure is not None:
            if event.__class__ in TERMINAL_TYPES:
                return r  # the local readers get the end; Redis is gone (remote readers: producer_lost)
            raise LogUnavailable(str(self._failure))
        self._pending.append((event.seq, encode(event)))
        self._flushed.clear()
        self._has_data.set()  # a first delta starts the batch window
        if event.__class__ not in _DELTAS or len(self._pending) >= self._log.max_batch:
            self._wake_flusher.set()  # structural, or a full batch: write now
        return r

    def _on_terminal(self, ring: _StreamRing) -> None:
        self._closing = True
        self._has_data.set()
        self._wake_flusher.set()

    async def _run(self) -> None:
        """The writer's flusher task (owned by the writer; it ends after the terminal is written).

        It also holds the producer's lease: refreshed every third of ``lease_s`` while the run is
        live, deleted after the terminal. A node that dies stops refreshing it, and readers on
        other nodes then end the stream with ``error(producer_lost)``.
        """
        window = self._log.batch_window_s
        heartbeat = self._log.lease_s / 3
        await self._log._hold_lease(self._lease_key)
        renewed = asyncio.get_running_loop().time()
        try:
            while True:
                if asyncio.get_running_loop().time() - renewed >= heartbeat:
                    await self._log._hold_lease(self._lease_key)
                    renewed = asyncio.get_running_loop().time()
                if not self._pending:
                    if self._closing:
                        return
                    self._has_data.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._has_data.wait(), heartbeat)
                    continue
                await self._write_pending(window)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await self._log.redis.delete(self._lease_key)

    async def _write_pending(self, window: float) -> None:
        """One batch: let deltas fill it for up to a window (structural events do not wait), then
        one round trip."""
        if not self._wake_flusher.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_flusher.wait(), window)
        self._wake_flusher.clear()
        size = self._log.max_batch
        batch = self._pending[:size]  # a bounded round trip
        try:
            await self._log._write(self._key, batch, terminal=self._closing and len(self._pending) <= size)
        except (RedisError, OSError) as exc:
            await self._unwritable(exc)
            return
        self._down_since = None
        del self._pending[: len(batch)]
        if self._pending:
            self._wake_flusher.set()  # more than one batch was waiting: no window for the rest
        else:
            self._flushed.set()

    async def _unwritable(self, exc: BaseException) -> None:
        """Redis is unreachable: keep the batch (bounded) and retry with backoff; past the bound,
        give up: the stream ends with error(log_unavailable) at its next event."""
        loop = asyncio.get_running_loop()
        if self._down_since is None:
            self._down_since = loop.time()
            logger.warning("event log: Redis unreachable for %s (%s); buffering and retrying", self._key, exc)
        down_s = loop.time() - self._down_since
        if down_s > self._log.unwritable_s or len(self._pending) > self._log.max_buffered:
            self._failure = LogUnavailable(
                f"the event log (Redis) was unwritable for {down_s:.1f} s with {len(self._pending)} events "
                f"buffered (bounds: unwritable_s={self._log.unwritable_s}, max_buffered={self._log.max_buffered})"
            )
            logger.error("event log: giving up on %s: %s", self._key, self._failure)
            self._pending.clear()
            self._closing = True
            self._flushed.set()
            return
        self._retries += 1
        await asyncio.sleep(min(1.0, 0.05 * 2 ** min(self._retries, 5)))
        self._wake_flusher.set()

    async def flush(self) -> None:
        """Wait until every appended event is in Redis (or its write failed and was logged)."""
        self._has_data.set()
        self._wake_flusher.set()
        await self._flushed.wait()
        if self._closing:
            await asyncio.wait([self._flusher])


class RedisLog(EventLog):
    """Event log on Redis Streams, shared by every process and node that uses the same Redis.

    ``url``: ``redis://host:port/db``. ``max_events`` bounds each stream (approximately, as
    ``MAXLEN ~``); ``ttl_s`` is how long a finished stream stays readable; ``batch_window_s`` and
    ``max_batch`` bound how long and how many deltas wait for one write; ``local_events`` bounds
    the producer's in-process ring (its observers' and iterators' window). ``lease_s`` is the
    producer lease (a lost producer is noticed within about 1.5x that). While Redis is
    unreachable a writer buffers and retries, for at most ``unwritable_s`` and ``max_buffered``
    events; past either the stream ends with ``error(transport, log_unavailable)``.

    Memory in Redis per retained one-token delta: about 100-150 bytes (the event's JSON plus the
    stream entry's overhead).
    """

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
        unwritable_s: float = 10.0,
        max_buffered: int = 65_536,
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
        self.unwritable_s = unwritable_s
        self.max_buffered = max_buffered
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._script: Any = None

    def key(self, stream_id: str) -> str:
        return f"{self.prefix}:{stream_id}"

    def lease_key(self, stream_id: str) -> str:
        return f"{self.prefix}:{stream_id}:lease"

    async def _hold_lease(self, lease_key: str) -> None:
        with contextlib.suppress(RedisError, OSError):  # a missed heartbeat is retried at the next
            await self.redis.set(lease_key, b"1", px=round(self.lease_s * 1000))

    async def _producer_lost(self, stream_id: str) -> None:
        """End a stream whose producer's lease lapsed with ``error(transport, producer_lost)``.

        Several nodes may notice at once: the explicit entry id lets exactly one append win.
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
        await self._write(self.key(stream_id), [(terminal.seq, encode(terminal))], terminal=True)

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.url)
        return self._redis

    # -- writing ---------------------------------------------------------------------------------

    def open(self, stream_id: str) -> StreamWriter:
        return RedisWriter(self, stream_id)

    async def _write(self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool) -> None:
        """One command for the whole batch (a server-side script of XADDs); an entry that already
        landed (a retried append) is skipped, not duplicated. The writer retries failures."""
        args: list[Any] = [self.max_events, max(1, round(self.ttl_s)) if terminal else 0]
        for seq, data in batch:
            args += (_entry_id(seq), data)
        await self._append_script(keys=[key], args=args)

    @property
    def _append_script(self) -> Any:
        if self._script is None:
            self._script = self.redis.register_script(_APPEND)
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
        finished = decode(fields[_FIELD]).__class__ in TERMINAL_TYPES
        return StreamInfo(_seq(first_id), _seq(last_id) + 1, finished)

    def batches(
        self,
        stream_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        idle_s: float | None = None,
        max_lag: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        return self._batches(stream_id, max(from_seq, 0), follow, idle_s, max_lag)

    async def _batches(
        self, stream_id: str, seq: int, follow: bool, idle_s: float | None, max_lag: int | None
    ) -> AsyncIterator[Sequence[Event]]:
        key = self.key(stream_id)
        r: Any = self.redis  # redis-py's reply types are too loose to be useful here
        first = True
        while True:  # history first: XRANGE from seq (no separate lookup: one round trip to resume)
            entries = await r.xrange(key, min=_entry_id(seq), count=self.read_batch)
            if not entries:
                if first and not await r.exists(key):
                    raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or expired)")
                if first and seq > 0 and not await r.xrange(key, min=_entry_id(seq - 1), count=1):
                    # Nothing at or just before seq: either past the end of a live stream, or trimmed.
                    head = await self.info(stream_id)
                    if seq < head.first_seq:
                        raise SeqEvicted(stream_id, seq, head.first_seq)
                break
            first = False
            batch = [decode(fields[_FIELD]) for _, fields in entries]
            if _seq(entries[0][0]) != seq:
                raise SeqEvicted(stream_id, seq, _seq(entries[0][0]))  # trimmed while we read
            seq = batch[-1].seq + 1
            yield batch
            if batch[-1].__class__ in TERMINAL_TYPES:
                return
            if len(entries) < self.read_batch:
                break
        if not follow:
            return
        last_id = _entry_id(seq - 1) if seq > 0 else "0-0"
        # Wake at least once a lease period: a reader is also the one that notices a lost producer.
        wait_s = min(idle_s if idle_s is not None else 30.0, self.lease_s / 2)
        block_ms = max(1, round(wait_s * 1000))
        quiet_s = 0.0
        while True:  # then tail: XREAD BLOCK after the last id seen
            reply = await r.xread({key: last_id}, count=self.read_batch, block=block_ms)
            if not reply:
                quiet_s += wait_s
                if idle_s is not None and quiet_s >= idle_s:
                    quiet_s = 0.0
                    yield ()
                if not await r.exists(key):
                    raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or expired)")
                if not await r.exists(self.lease_key(stream_id)):
                    await self._producer_lost(stream_id)
                continue
            quiet_s = 0.0
            entries = reply[0][1]
            batch = [decode(fields[_FIELD]) for _, fields in entries]
            if batch[0].seq != seq:
                raise SeqEvicted(stream_id, seq, batch[0].seq)
            last_id = entries[-1][0].decode()
            seq = batch[-1].seq + 1
            yield batch
            if batch[-1].__class__ in TERMINAL_TYPES:
                return
            if max_lag is not None and len(entries) == self.read_batch:
                head = await self.info(stream_id)
                if not head.finished and head.next_seq - seq > max_lag:
                    raise ObserverOverflow(
                        f"reader of stream {stream_id!r} is {head.next_seq - seq} events behind (max_lag={max_lag}); "
                        f"resume from seq {seq}"
                    )

    # -- control: cancels routed to the producing node ------------------------------------------------

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    async def forward_cancel(self, stream_id: str, reason: str) -> bool:
        message = msgspec.json.encode({"op": "cancel", "stream_id": stream_id, "reason": reason})
        receivers: int = await self.redis.publish(self.control_channel, message)
        return receivers > 0

    def listen_cancels(self, handler: Callable[[str, str], None]) -> None:
        """Start (once) the task that hears forwarded cancels; owned by this log, ended by aclose()."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(handler), name="tokenwire-control")

    async def _listen(self, handler: Callable[[str, str], None]) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.control_channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            body = msgspec.json.decode(message["data"])
                            handler(str(body["stream_id"]), str(body.get("reason") or "cancelled on another node"))
                        except (msgspec.DecodeError, KeyError, TypeError):
                            logger.warning("event log: ignored a malformed control message")
            except (RedisError, OSError) as exc:
                logger.warning("event log: control channel lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
