"""One stream's writer on the Redis log: a local ring for the producer's own observers and
iterators, and a batched lane to Redis (structural events at once, deltas within a frame), with
the producer's lease and a bounded outage buffer; and the stream's encoding in Redis (entry ids
``{seq}-1``, one field per entry, the append script).

Failover: Redis replicates asynchronously, so a promoted replica may lack the last entries its
master acknowledged. The append script refuses a batch that would leave a gap and says where the
stream ends; the writer appends the missing events again from its ring (the same ids and bytes:
a reader that saw them before the failover does not see them twice). The terminal batch, after
which the writer goes away, also waits (up to ``replica_wait_s``) until a replica has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import OutOfMemoryError, RedisClusterException, RedisError

from tokenwire.errors import LogUnavailable, SeqEvicted
from tokenwire.events import TERMINAL_TYPES, Event, ReasoningDelta, TextDelta, ToolCallDelta, encode
from tokenwire.log.memory import StreamRing

__all__ = [
    "APPEND_SCRIPT",
    "DELTAS",
    "FIELD",
    "RedisWriter",
    "REDIS_ERRORS",
    "WriterHost",
    "entry_id",
    "out_of_memory",
    "seq_of",
]

logger = logging.getLogger("tokenwire")

DELTAS = (TextDelta, ReasoningDelta, ToolCallDelta)
FIELD = b"e"


APPEND_SCRIPT = """
local key, endkey, leasekey = KEYS[1], KEYS[2], KEYS[3]
local maxlen, ttl, token, idle = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local max_bytes = tonumber(ARGV[6])
local ended = redis.call('GET', endkey)
if ended then
  -- The stream has its terminal: only a retry of that very batch may pass (and adds nothing).
  if ARGV[#ARGV] == ended then return 1 end
  return 0
end
-- The fence: only the producer whose token holds the lease writes ('' : only while none does).
-- A lease that is gone (lapsed, or lost with a failed-over master) its producer takes back.
local lease = redis.call('GET', leasekey)
if token == '' then
  if lease then return 0 end
elseif lease == false then
  redis.call('SET', leasekey, token, 'PX', ARGV[5])
elseif lease ~= token then
  return 0
end
-- No gaps: a batch continues the stream. A promoted replica may lack the last entries its
-- master acknowledged: -1 - next_seq tells the producer where to append again from.
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
local next_seq = 0
if last[1] then next_seq = tonumber(string.match(last[1][1], '^%d+')) + 1 end
if tonumber(string.match(ARGV[7], '^%d+')) > next_seq then return -1 - next_seq end
local added = 0
for i = 7, #ARGV, 2 do
  local ok = redis.pcall('XADD', key, ARGV[i], 'e', ARGV[i + 1])
  if type(ok) == 'table' and ok.err then
    if not string.find(ok.err, 'equal or smaller', 1, true) then return redis.error_reply(ok.err) end
  else
    added = added + #ARGV[i + 1]
  end
end
if max_bytes == 0 then
  redis.call('XTRIM', key, 'MAXLEN', maxlen)
else
  -- Retention by events and by bytes: drop the oldest entries until both bounds hold (the
  -- newest entry always stays); the bytes key keeps the retained payload's size.
  local total = tonumber(redis.call('GET', KEYS[5]) or '0') + added
  local n = redis.call('XLEN', key)
  if n > maxlen or total > max_bytes then
    local from, keep = '-', nil
    while not keep and n > 1 do
      local entries = redis.call('XRANGE', key, from, '+', 'COUNT', 128)
      if #entries == 0 then break end
      for _, e in ipairs(entries) do
        if n <= 1 or (n <= maxlen and total <= max_bytes) then keep = e[1]; break end
        total = total - #e[2][2]
        n = n - 1
        from = '(' .. e[1]
      end
      if not keep and n <= 1 then keep = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1][1] end
    end
    if keep then redis.call('XTRIM', key, 'MINID', keep) end
  end
  if total < 0 then total = 0 end  -- a count that expired while the stream lived: never negative
  redis.call('SET', KEYS[5], total)
end
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
  redis.call('SET', endkey, ARGV[#ARGV], 'EX', ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  if max_bytes > 0 then redis.call('EXPIRE', KEYS[5], ttl) end
else
  -- Every key expires, also when no terminal is ever written (every producer gone for good).
  redis.call('PEXPIRE', key, idle)
  redis.call('PEXPIRE', KEYS[4], idle)
  if max_bytes > 0 then redis.call('PEXPIRE', KEYS[5], idle) end
end
return 1
"""
"""Appends a batch in one command: explicit ids; an id that is already there (a retry) is skipped;
a batch that would leave a gap (a failed-over master's replica lacks what it acknowledged) is
refused with ``-1 - next_seq`` so that the producer appends the missing events again from its
ring; then the trim to ``max_events`` and ``max_bytes`` (the same retention as the memory log; a
stream below both trims nothing). Every append pushes the stream's expiry ``idle_ttl`` ahead: a
stream nobody writes any more goes away. A terminal batch records the terminal event in the
stream's end key (and lets the run's definition expire with the stream); once it is there nothing
more is appended (returns 0; a retry of that same batch returns 1): a producer cut off by a
partition, whose stream another node ended with ``producer_lost``, cannot write past that terminal
when it reconnects. And only the token holding the lease writes (returns 0 otherwise): a producer
that another node took over from cannot write into the stream it now continues."""


REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
"""What a Redis command raises when Redis (one instance, or a cluster none of whose nodes answers)
is unreachable or refuses: every task of the log catches these, and goes on."""


def out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write at ``maxmemory`` (``-OOM``, also from inside a script)."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, RedisError) and "maxmemory" in str(exc))


def entry_id(seq: int) -> str:
    return f"{seq}-1"


def seq_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class WriterHost(Protocol):
    """What a :class:`RedisWriter` needs of its log (:class:`~tokenwire.log.redis.RedisLog`)."""

    local_events: int
    max_batch: int
    max_buffered: int
    batch_window_s: float
    lease_s: float
    unwritable_s: float
    append_observer: Callable[[float, int], None] | None

    def key(self, stream_id: str) -> str: ...

    def lease_key(self, stream_id: str) -> str: ...

    @property
    def ownership(self) -> Any: ...

    async def write(self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str) -> int: ...


class RedisWriter(StreamRing):
    """One stream's writer: a local ring for in-process readers, a batched lane to Redis."""

    def __init__(self, log: WriterHost, stream_id: str, *, at: int = 0, token: str | None = None):
        super().__init__(stream_id, log.local_events, self._on_terminal)
        self.next_seq = at  # a durable run carried on by this producer continues its seq
        self.token = token or uuid.uuid4().hex
        self._durable = token is not None
        self._suspending = False
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
        self._again_from: int | None = None  # where the last re-append after a gap began
        self._lease_key = log.lease_key(stream_id)
        self._flusher = asyncio.get_running_loop().create_task(self._run(), name=f"tokenwire-redis-{stream_id}")

    @property
    def failure(self) -> LogUnavailable | None:
        return self._failure

    def append(self, event: Event) -> Any:
        r = super().append(event)  # local readers first: they never wait for Redis
        if self._failure is not None:
            if event.__class__ in TERMINAL_TYPES:
                return r  # the local readers get the end; Redis is gone (remote readers: producer_lost)
            raise LogUnavailable(str(self._failure))
        self._pending.append((event.seq, encode(event)))
        self._flushed.clear()
        self._has_data.set()  # a first delta starts the batch window
        if event.__class__ not in DELTAS or len(self._pending) >= self._log.max_batch:
            self._wake_flusher.set()  # structural, or a full batch: write now
        return r

    def _on_terminal(self, ring: StreamRing) -> None:
        self._closing = True
        self._has_data.set()
        self._wake_flusher.set()

    async def _run(self) -> None:
        """The writer's flusher task (owned by the writer; it ends after the terminal is written,
        or once the run is suspended).

        It also holds the producer's lease (its token): refreshed every third of ``lease_s``
        while the run is live, released after the terminal. A node that dies stops refreshing
        it: another node takes a durable run over, readers end any other stream with
        ``error(producer_lost)``. A refresh that finds another token there means another node
        took the run over: this writer gives up (the script fences its appends anyway).
        """
        window = self._log.batch_window_s
        heartbeat = self._log.lease_s / 3
        loop = asyncio.get_running_loop()
        await self._renew()
        renewed = loop.time()
        while True:
            if loop.time() - renewed >= heartbeat:
                await self._renew()
                renewed = loop.time()
            if not self._pending:
                if self._closing:
                    break
                self._has_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._has_data.wait(), heartbeat)
                continue
            await self._write_pending(window)
        if self._failure is None and not self._suspending:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._log.ownership.release(self.stream_id, self.token)

    async def _renew(self) -> None:
        try:
            held = await self._log.ownership.renew(self.stream_id, self.token, durable=self._durable)
        except REDIS_ERRORS:
            return  # a missed heartbeat is retried at the next
        if not held and self._failure is None and not self._suspending:
            self._give_up(LogUnavailable(f"stream {self.stream_id!r} was taken over by another node"))

    async def suspend(self, until: float) -> bool:
        self._suspending = True
        self._closing = True
        self._has_data.set()
        self._wake_flusher.set()
        await asyncio.wait([self._flusher])
        if self._failure is not None:
            return False
        try:
            held = bool(await self._log.ownership.suspend(self.stream_id, self.token, until))
        except REDIS_ERRORS as exc:
            self._give_up(LogUnavailable(f"the run could not be suspended: {exc}"))
            return False
        if not held:
            self._give_up(LogUnavailable(f"stream {self.stream_id!r} was taken over by another node"))
        return held

    async def _write_pending(self, window: float) -> None:
        """One batch: let deltas fill it for up to a window (structural events do not wait), then
        one round trip."""
        if not self._wake_flusher.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_flusher.wait(), window)
        self._wake_flusher.clear()
        size = self._log.max_batch
        batch = self._pending[:size]  # a bounded round trip
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            terminal = self._closing and not self._suspending and len(self._pending) <= size
            written = await self._log.write(self._key, batch, terminal=terminal, token=self.token)
        except REDIS_ERRORS as exc:
            if out_of_memory(exc):  # no retry frees memory in time
                self._give_up(LogUnavailable(f"the event log (Redis) is full (maxmemory): {exc}"))
            else:
                await self._unwritable(exc)
            return
        observe = self._log.append_observer
        if observe is not None:
            observe(loop.time() - began, len(batch))
        self._down_since = None
        if written < 0:
            self._append_again(-1 - written, batch[0][0])
            return
        self._again_from = None
        if not written:
            self._give_up(
                LogUnavailable(
                    f"stream {self.stream_id!r} was ended or taken over by another node (its producer looked lost "
                    f"while this node could not reach the log); {len(self._pending)} events were not written"
                )
            )
            return
        del self._pending[: len(batch)]
        if self._pending:
            self._wake_flusher.set()  # more than one batch was waiting: no window for the rest
        else:
            self._flushed.set()

    def _append_again(self, lost_from: int, first: int) -> None:
        """Redis lacks events ``lost_from`` to ``first - 1`` (a replica promoted before it had them):
        put them back in front of the pending batch, from the ring."""
        if lost_from == self._again_from:  # appended again, and still missing: the stream was tampered with
            self._give_up(LogUnavailable(f"stream {self.stream_id!r} in Redis keeps lacking event {lost_from}"))
            return
        self._again_from = lost_from
        try:
            again = [(e.seq, encode(e)) for e in self.since(lost_from) if e.seq < first]
        except SeqEvicted:
            self._give_up(
                LogUnavailable(
                    f"the event log lost events {lost_from}-{first - 1} of stream {self.stream_id!r} "
                    f"(a failover?) and this node no longer holds them (local_events={self._log.local_events})"
                )
            )
            return
        logger.warning("event log: %s lacked %d events (a failover?); appending them again", self._key, len(again))
        self._pending[:0] = again
        self._wake_flusher.set()

    async def _unwritable(self, exc: BaseException) -> None:
        """Redis is unreachable: keep the batch (bounded) and retry with backoff; past the bound,
        give up: the stream ends with error(log_unavailable) at its next event."""
        loop = asyncio.get_running_loop()
        self._again_from = None  # another outage (a second failover) may lose the same events again
        if self._down_since is None:
            self._down_since = loop.time()
            logger.warning("event log: Redis unreachable for %s (%s); buffering and retrying", self._key, exc)
        down_s = loop.time() - self._down_since
        if down_s > self._log.unwritable_s or len(self._pending) > self._log.max_buffered:
            self._give_up(
                LogUnavailable(
                    f"the event log (Redis) was unwritable for {down_s:.1f} s with {len(self._pending)} events "
                    f"buffered (bounds: unwritable_s={self._log.unwritable_s}, max_buffered={self._log.max_buffered})"
                )
            )
            return
        self._retries += 1
        await asyncio.sleep(min(1.0, 0.05 * 2 ** min(self._retries, 5)))
        self._wake_flusher.set()

    def _give_up(self, failure: LogUnavailable) -> None:
        """Stop writing: the stream ends with ``error(log_unavailable)`` at its next append."""
        self._failure = failure
        logger.error("event log: giving up on %s: %s", self._key, failure)
        self._pending.clear()
        self._closing = True
        self._flushed.set()

    async def flush(self) -> None:
        """Wait until every appended event is in Redis (or its write failed and was logged)."""
        self._has_data.set()
        self._wake_flusher.set()
        if not self._flushed.is_set():  # a flusher that died unexpectedly must not hang its stream
            flushed = asyncio.ensure_future(self._flushed.wait())
            await asyncio.wait([flushed, self._flusher], return_when=asyncio.FIRST_COMPLETED)
            flushed.cancel()
            if not self._flushed.is_set() and self._failure is None:
                died = self._flusher.exception() if not self._flusher.cancelled() else None
                self._give_up(LogUnavailable(f"the writer of stream {self.stream_id!r} stopped: {died!r}"))
        if self._closing:
            await asyncio.wait([self._flusher])
