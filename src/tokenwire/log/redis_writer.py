"""One stream's writer on the Redis log: a local ring for the producer's own observers and
iterators, and a batched lane to Redis (structural events at once, deltas within a frame), with
the producer's lease and a bounded outage buffer; and the stream's encoding in Redis (entry ids
``{seq}-1``, one field per entry, the append script); and a stream's :class:`Tail`, shared by
the readers of one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from tokenwire.errors import LogUnavailable, SeqEvicted
from tokenwire.events import TERMINAL_TYPES, Event, ReasoningDelta, TextDelta, ToolCallDelta, decode, encode
from tokenwire.log.memory import StreamRing

__all__ = ["APPEND_SCRIPT", "DELTAS", "FIELD", "RedisWriter", "Tail", "WriterHost", "entry_id", "seq_of"]

logger = logging.getLogger("tokenwire")

DELTAS = (TextDelta, ReasoningDelta, ToolCallDelta)
FIELD = b"e"


APPEND_SCRIPT = """
local key, endkey, maxlen, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local ended = redis.call('GET', endkey)
if ended then
  -- The stream has its terminal: only a retry of that very batch may pass (and adds nothing).
  if ARGV[#ARGV] == ended then return 1 end
  return 0
end
-- The fence: only the producer whose token holds the lease writes ('' : only while none does).
local lease = redis.call('GET', KEYS[3])
if ARGV[3] == '' then
  if lease then return 0 end
elseif lease ~= ARGV[3] then
  return 0
end
for i = 4, #ARGV, 2 do
  local ok = redis.pcall('XADD', key, ARGV[i], 'e', ARGV[i + 1])
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'equal or smaller', 1, true) then
    return redis.error_reply(ok.err)
  end
end
redis.call('XTRIM', key, 'MAXLEN', maxlen)
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
  redis.call('SET', endkey, ARGV[#ARGV], 'EX', ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return 1
"""
"""Appends a batch in one command: explicit ids; an id that is already there (a retry) is skipped;
then one exact trim to ``max_events`` (the same retention as the memory log; a stream below the
cap trims nothing). A terminal batch records the terminal event in the stream's end key (and
lets the run's definition expire with the stream); once it is there nothing more is appended
(returns 0; a retry of that same batch returns 1): a producer cut off by a partition, whose
stream another node ended with ``producer_lost``, cannot write past that terminal when it
reconnects. And only the token holding the lease writes (returns 0 otherwise): a producer that
another node took over from cannot write into the stream it now continues."""


def entry_id(seq: int) -> str:
    return f"{seq}-1"


def seq_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class Tail:
    """What the shared tail has read of one stream: a window of events, fanned out to readers."""

    __slots__ = (
        "advanced",
        "error",
        "events",
        "finished",
        "first_seq",
        "heard",
        "key",
        "lapsed_since",
        "last_id",
        "readers",
        "sid",
    )

    def __init__(self, stream_id: str, key: bytes, seq: int, now: float):
        self.sid = stream_id
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


class WriterHost(Protocol):
    """What a :class:`RedisWriter` needs of its log (:class:`~tokenwire.log.redis.RedisLog`)."""

    @property
    def redis(self) -> Any: ...

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

    async def write(self, key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str) -> bool: ...


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
            with contextlib.suppress(RedisError, OSError):
                await self._log.ownership.release(self.stream_id, self.token)

    async def _renew(self) -> None:
        try:
            held = await self._log.ownership.renew(self.stream_id, self.token, durable=self._durable)
        except (RedisError, OSError):
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
        except (RedisError, OSError) as exc:
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
        except (RedisError, OSError) as exc:
            await self._unwritable(exc)
            return
        observe = self._log.append_observer
        if observe is not None:
            observe(loop.time() - began, len(batch))
        self._down_since = None
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

    async def _unwritable(self, exc: BaseException) -> None:
        """Redis is unreachable: keep the batch (bounded) and retry with backoff; past the bound,
        give up: the stream ends with error(log_unavailable) at its next event."""
        loop = asyncio.get_running_loop()
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
