"""The event log: the append-only backbone every consumer reads with a cursor.

A run's producer (the engine) appends its events through the :class:`StreamWriter` that
:meth:`EventLog.open` returns, and does nothing else per event. Every consumer reads the log from
a position:

- **inline readers** (the stream's observers) are called by :meth:`StreamWriter.append` itself,
  in order, before it returns: zero copies, no task switch, and an async observer holds the
  producer (natural backpressure);
- **cursors** (:meth:`StreamWriter.cursor`: async iterators, queued observers) read the stored
  events from their own position, in batches; their overflow policy says what happens when one
  lags (the producer waits, the oldest events are skipped, deltas are merged, or the cursor is
  detached) — a lagging cursor costs its position, never a copy of the events;
- **readers** (:meth:`EventLog.read` / :meth:`EventLog.batches`: SSE and WebSocket connections,
  late joiners, other processes) never hold the producer; one that falls behind retention gets
  :class:`~tokenwire.errors.SeqEvicted` and resumes from the oldest retained seq.

Resume, replay, late join and fan-out are all "read from seq N, then tail" (DESIGN.md). The
interface is shaped for a networked backend too (Redis Streams): ``append`` never blocks on I/O,
``flush`` is the durability point the engine awaits after the terminal event, reads are async.

>>> import asyncio
>>> from tokenwire.events import Start, Done
>>> async def demo():
...     log = MemoryLog()
...     w = log.open("s1")
...     w.append(Start(model="m", stream_id="s1", seq=0))
...     w.append(Done(stream_id="s1", seq=1))
...     return [e.type for e in [ev async for ev in log.read("s1")]], (await log.info("s1")).next_seq
>>> asyncio.run(demo())
(['start', 'done'], 2)
"""

from __future__ import annotations

import abc
import asyncio
import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, Literal, NamedTuple, TypeAlias, TypeVar

import msgspec

from tokenwire.errors import LogUnavailable, ObserverOverflow, SeqEvicted, StreamClosed, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event, ReasoningDelta, TextDelta, ToolCallDelta

__all__ = [
    "Cursor",
    "EventLog",
    "MemoryLog",
    "Overflow",
    "Ring",
    "StreamInfo",
    "StreamWriter",
    "configured_log_url",
    "default_log",
    "log_from_url",
    "log_kind",
]

T = TypeVar("T")

Overflow: TypeAlias = Literal["block", "drop_oldest", "coalesce", "disconnect"]
"""What a cursor does when it lags more than its ``maxsize`` events behind the producer:

- ``block`` — the producer waits until the cursor catches up (natural backpressure);
- ``drop_oldest`` — the cursor skips ahead to the newest ``maxsize`` events (counted in ``dropped``);
- ``coalesce`` — consecutive text / reasoning / same-call tool-argument deltas of the backlog are
  merged into one event carrying the newest ``seq``; nothing else is dropped;
- ``disconnect`` — the cursor is detached; reading it raises :class:`ObserverOverflow` and the
  reader can resume from the log at the last seq it saw.
"""
OVERFLOWS: tuple[Overflow, ...] = ("block", "drop_oldest", "coalesce", "disconnect")

InlineReader: TypeAlias = Callable[[Event], "Awaitable[None] | None"]
"""Called by :meth:`StreamWriter.append` with each event; an awaitable result holds the producer."""


class StreamInfo(NamedTuple):
    """Where a stream's log stands."""

    first_seq: int
    """The oldest retained seq."""
    next_seq: int
    """The seq the next event will get (the number of events appended so far)."""
    finished: bool
    """True once the terminal event was appended."""


class Ring(Generic[T]):
    """A bounded, append-only sequence numbered from 0 (the memory log's building block).

    Items beyond ``max_items`` are evicted from the front; :meth:`since` raises
    :class:`SeqEvicted` for them. :meth:`finish` marks the end (waiters wake).
    """

    __slots__ = ("_items", "_waiters", "finished", "name", "next_seq")

    def __init__(self, name: str, max_items: int):
        self.name = name
        self._items: deque[T] = deque(maxlen=max_items)
        self._waiters: list[asyncio.Future[None]] = []
        self.next_seq = 0
        self.finished = False

    @property
    def first_seq(self) -> int:
        """The oldest retained seq."""
        return self.next_seq - len(self._items)

    def append(self, item: T) -> None:
        self._items.append(item)
        self.next_seq += 1
        if self._waiters:
            self._wake()

    def finish(self) -> None:
        """No more items will come; wake every waiter."""
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def since(self, seq: int) -> Sequence[T]:
        """Every retained item from ``seq`` on (empty when caught up)."""
        if seq < self.first_seq:
            raise SeqEvicted(self.name, seq, self.first_seq)
        n = self.next_seq - seq
        if n <= 0:
            return []
        items = self._items
        if n == 1:
            return (items[-1],)  # a tuple: untracked by the GC once its item is
        if n == len(items):
            return list(items)
        return [items[i] for i in range(len(items) - n, len(items))]

    async def wait(self, seq: int) -> None:
        """Return once an item with ``seq`` exists or the ring is finished."""
        while self.next_seq <= seq and not self.finished:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                    if fut in self._waiters:
                        self._waiters.remove(fut)


# -- the write side ------------------------------------------------------------------------------


class StreamWriter(abc.ABC):
    """Write side of one stream's log; only the stream's producer holds it.

    Besides appending, the writer is where in-process consumers attach: the inline reader (the
    engine's observer dispatcher) and :class:`Cursor` readers with an overflow policy. They live
    in the producer's process, so only they can hold the producer (backpressure); readers in
    other processes use :meth:`EventLog.read`.
    """

    stream_id: str

    @abc.abstractmethod
    def append(self, event: Event) -> Awaitable[None] | None:
        """Append the next event (the caller guarantees seq order) and hand it to the inline
        reader. Returns an awaitable when the producer must wait (an async observer, a
        ``block`` cursor that is full); await it before appending the next event."""

    @abc.abstractmethod
    def cursor(self, from_seq: int = 0, *, maxsize: int = 1024, overflow: Overflow = "block") -> Cursor:
        """Attach an in-process reader at ``from_seq`` with an overflow policy."""

    inline: InlineReader | None = None
    """The inline reader (set once, before the first append)."""

    @property
    def failure(self) -> LogUnavailable | None:
        """Why this writer gave up writing (a networked log unreachable past its bounds), or None."""
        return None

    async def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for memory
        """Wait until appended events are durable and visible to every reader."""


class EventLog(abc.ABC):
    """Per-stream append-only event logs with explicit retention."""

    append_observer: Callable[[float, int], None] | None = None
    """Called after each write of a batch to a networked log's storage with (seconds, events):
    the server's log-latency metric. The memory log never calls it (its appends are in-process)."""

    @abc.abstractmethod
    def open(self, stream_id: str) -> StreamWriter:
        """Create the log of a new stream and return its writer."""

    @abc.abstractmethod
    def batches(
        self,
        stream_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        idle_s: float | None = None,
        max_lag: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Iterate the stream's events from ``from_seq`` on, as many as are ready at a time.

        With ``follow`` the iterator waits for new events until the terminal one; without it, it
        stops at the current end. With ``idle_s`` it yields an empty batch after that many idle
        seconds (servers send keep-alives then). With ``max_lag``, a reader that is more than
        that many events behind a live stream when it comes back for more (it took too long with
        the last batch) gets :class:`ObserverOverflow`: disconnect it; it resumes from its last
        seq. Raises :class:`StreamNotFound` for an unknown stream and :class:`SeqEvicted` when
        ``from_seq`` (or a later seq, for a reader that fell behind) is no longer retained.
        """

    def read(self, stream_id: str, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        """The events of :meth:`batches`, one at a time (same errors, raised by this call where
        the backend can tell at once)."""
        return _flatten(self.batches(stream_id, from_seq, follow=follow))

    @abc.abstractmethod
    async def info(self, stream_id: str) -> StreamInfo:
        """Where the stream's log stands; raises :class:`StreamNotFound` for an unknown stream."""

    async def forward_cancel(self, stream_id: str, reason: str) -> bool:
        """Ask the node producing ``stream_id`` to cancel it; False when no other node can hear
        it (the memory log lives in one process, where the run is local or gone)."""
        return False

    def listen_cancels(self, handler: Callable[[str, str], None]) -> None:  # noqa: B027 - optional hook
        """Call ``handler(stream_id, reason)`` for cancels other nodes forward (a no-op for memory)."""

    async def announce_readers(self, stream_ids: Sequence[str], ttl_s: float) -> None:  # noqa: B027 - optional hook
        """Tell the other nodes that ``stream_ids`` have readers here for the next ``ttl_s``
        (a no-op for memory: there are no other nodes)."""

    async def read_elsewhere(self, stream_ids: Sequence[str]) -> set[str]:
        """Which of ``stream_ids`` another node announced readers for (none for memory)."""
        return set()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; a no-op for memory."""


async def _flatten(batches: AsyncIterator[Sequence[Event]]) -> AsyncIterator[Event]:
    async for batch in batches:
        for event in batch:
            yield event


# -- cursors ---------------------------------------------------------------------------------------


def merge(a: Event, b: Event) -> Event | None:
    """Merge two consecutive deltas into one carrying ``b``'s envelope, or None if they don't merge."""
    cls = a.__class__
    if cls is not b.__class__:
        return None
    if cls is TextDelta or cls is ReasoningDelta:
        return msgspec.structs.replace(b, text=a.text + b.text)  # type: ignore[union-attr]
    if cls is ToolCallDelta and a.call_id == b.call_id:  # type: ignore[union-attr]
        return msgspec.structs.replace(b, args_delta=a.args_delta + b.args_delta)  # type: ignore[union-attr]
    return None


def coalesced(events: Sequence[Event]) -> tuple[list[Event], int]:
    """``events`` with consecutive mergeable deltas merged, and how many were merged away.

    Linear: each run of deltas is joined once (never re-concatenated per event).
    """
    out: list[Event] = []
    merged = 0
    i, n = 0, len(events)
    while i < n:
        first = events[i]
        j = i + 1
        while j < n and merge(events[j - 1], events[j]) is not None:
            j += 1
        if j - i == 1:
            out.append(first)
        else:
            last = events[j - 1]
            run = events[i:j]
            if first.__class__ is ToolCallDelta:
                out.append(msgspec.structs.replace(last, args_delta="".join(e.args_delta for e in run)))  # type: ignore[union-attr]
            else:
                out.append(msgspec.structs.replace(last, text="".join(e.text for e in run)))  # type: ignore[union-attr]
            merged += j - i - 1
        i = j
    return out, merged


class Cursor:
    """An in-process reader of one stream's log at its own position, with an overflow policy.

    Read it with :meth:`next_batch` (:class:`~tokenwire.EventIterator` wraps one as an async
    iterator); :meth:`close` detaches it at once (a producer waiting for it is released). Made by
    :meth:`StreamWriter.cursor`.
    """

    __slots__ = ("_ring", "_space", "closed", "dropped", "maxsize", "overflow", "overflowed", "seq")

    def __init__(self, ring: _StreamRing, from_seq: int, maxsize: int, overflow: Overflow):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}; got {overflow!r}")
        self._ring = ring
        self.seq = from_seq
        """The next seq this cursor reads."""
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        """Events skipped (``drop_oldest``) or merged away (``coalesce``)."""
        self.overflowed = False
        """True once a ``disconnect`` cursor fell too far behind."""
        self.closed = False
        self._space: asyncio.Future[None] | None = None

    @property
    def lag(self) -> int:
        """Events appended that this cursor has not read."""
        return self._ring.next_seq - self.seq

    def close(self) -> None:
        """Detach: the producer never waits for this cursor again; reading it ends."""
        if not self.closed:
            self.closed = True
            self._ring.detach(self)
            self._release()

    def _release(self) -> None:
        s = self._space
        if s is not None:
            self._space = None
            if not s.done():
                s.set_result(None)

    async def _wait_for_space(self) -> None:
        """The producer's side of ``block``: wait until this cursor is within ``maxsize``."""
        while not self.closed and self._ring.next_seq - self.seq > self.maxsize:
            if self._space is None or self._space.done():
                self._space = asyncio.get_running_loop().create_future()
            await self._space

    async def next_batch(self) -> Sequence[Event]:
        """The next events (at least one), after the policy; empty once the stream ended and
        every event was read (or the cursor was closed)."""
        ring = self._ring
        while True:
            if self.overflowed:
                raise ObserverOverflow(
                    f"subscriber fell more than {self.maxsize} events behind and was disconnected "
                    "(overflow='disconnect'); resume from the event log at the last seq it saw"
                )
            if self.closed:
                return []
            if self.seq < ring.next_seq:
                break
            if ring.finished:
                return []
            await ring.wait(self.seq)
        lag = ring.next_seq - self.seq
        if self.overflow == "drop_oldest" and lag > self.maxsize:
            self.dropped += lag - self.maxsize
            self.seq = ring.next_seq - self.maxsize
        try:
            batch = ring.since(self.seq)
        except SeqEvicted as exc:  # only a cursor larger than the log's retention can get here
            self.dropped += exc.first_available - self.seq
            self.seq = exc.first_available
            batch = ring.since(self.seq)
        self.seq = ring.next_seq
        self._release()
        if self.overflow == "coalesce" and lag > self.maxsize:
            merged_batch, merged = coalesced(batch)
            self.dropped += merged
            return merged_batch
        return batch


# -- the memory backend ------------------------------------------------------------------------------


class _StreamRing(Ring[Event], StreamWriter):
    """One stream's events in memory: the writer, the cursors' source, the readers' source."""

    __slots__ = ("_cursors", "_on_finish", "inline", "stream_id")

    def __init__(self, stream_id: str, max_events: int, on_finish: Callable[[_StreamRing], None]):
        super().__init__(stream_id, max_events)
        self.stream_id = stream_id
        self.inline: InlineReader | None = None
        self._cursors: list[Cursor] = []  # cursors whose policy acts at append time (block, disconnect)
        self._on_finish = on_finish

    def append(self, event: Event) -> Awaitable[None] | None:  # type: ignore[override]
        if self.finished:
            raise StreamClosed(
                f"stream {self.stream_id!r} already ended; nothing may follow its terminal event (got {event.type})"
            )
        self._items.append(event)
        self.next_seq += 1
        if event.__class__ in TERMINAL_TYPES:
            self.finished = True
            self._on_finish(self)
        if self._waiters:
            self._wake()
        inline = self.inline
        r = inline(event) if inline is not None else None
        if self._cursors:
            wait = self._check_cursors(event)
            if wait is not None:
                return wait if r is None else _both(r, wait)
        return r

    def _check_cursors(self, event: Event) -> Awaitable[None] | None:
        next_seq = self.next_seq
        full = False
        for c in self._cursors:
            if next_seq - c.seq > c.maxsize:
                if c.overflow == "disconnect":
                    c.overflowed = True
                    self._wake()  # its reader raises ObserverOverflow now
                else:
                    full = True
        if full and event.__class__ in TERMINAL_TYPES:
            full = False  # a terminal is always accepted, so every reader can finish
        for c in self._cursors:
            if c.overflowed:
                self._cursors = [c for c in self._cursors if not c.overflowed]
                break
        return self._wait_block() if full else None

    async def _wait_block(self) -> None:
        for c in list(self._cursors):
            if c.overflow == "block":
                await c._wait_for_space()

    def cursor(self, from_seq: int = 0, *, maxsize: int = 1024, overflow: Overflow = "block") -> Cursor:
        if from_seq < self.first_seq:
            raise SeqEvicted(self.stream_id, from_seq, self.first_seq)
        # A cursor never lags further than the log retains: past retention its events would be gone.
        c = Cursor(self, from_seq, min(maxsize, self._items.maxlen or maxsize), overflow)
        if overflow in ("block", "disconnect"):
            self._cursors.append(c)
        return c

    def detach(self, cursor: Cursor) -> None:
        if cursor in self._cursors:
            self._cursors.remove(cursor)
        self._wake()  # its reader, if waiting, sees ``closed``


async def _both(a: Awaitable[None], b: Awaitable[None]) -> None:
    await a
    await b


class MemoryLog(EventLog):
    """In-process event log: one bounded ring per stream (the default backend).

    ``max_events`` bounds each stream's ring (older events are evicted and reading them raises
    :class:`SeqEvicted`); ``max_streams`` bounds how many streams are kept and
    ``max_total_events`` (optional) how many events finished streams may hold together: past
    either bound the oldest finished stream is evicted first, then (``max_streams`` only) the
    oldest stream. Memory: one stored event object per retained event (about 150-200 bytes for a
    one-token text delta), nothing per reader.
    """

    def __init__(self, *, max_events: int = 65_536, max_streams: int = 1024, max_total_events: int | None = None):
        if max_events < 1 or max_streams < 1 or (max_total_events is not None and max_total_events < 1):
            raise ValueError(
                f"max_events, max_streams and max_total_events must be >= 1, got {max_events}, {max_streams}, "
                f"{max_total_events}"
            )
        self.max_events = max_events
        self.max_streams = max_streams
        self.max_total_events = max_total_events
        self._rings: dict[str, _StreamRing] = {}  # insertion-ordered: oldest first
        self._finished: OrderedDict[str, int] = OrderedDict()  # finished streams, oldest first -> size
        self._finished_events = 0
        # Streams of one log may run on several event loops in several threads (the process-wide
        # default log with stream_sync's worker loops): the bookkeeping across streams is locked;
        # a stream's own ring is only touched from its producer's loop.
        self._lock = threading.Lock()

    def open(self, stream_id: str) -> StreamWriter:
        with self._lock:
            if stream_id in self._rings:
                raise ValueError(f"stream {stream_id!r} already exists in this log; stream ids must be unique")
            ring = _StreamRing(stream_id, self.max_events, self._stream_finished)
            self._rings[stream_id] = ring
            if len(self._rings) > self.max_streams:
                if self._finished:
                    self._evict_finished()
                else:
                    del self._rings[next(iter(self._rings))]
            return ring

    def _stream_finished(self, ring: _StreamRing) -> None:
        with self._lock:
            size = len(ring._items)
            self._finished[ring.stream_id] = size
            self._finished_events += size
            if self.max_total_events is not None:
                while self._finished_events > self.max_total_events and len(self._finished) > 1:
                    self._evict_finished()

    def _evict_finished(self) -> None:
        sid, size = self._finished.popitem(last=False)
        self._finished_events -= size
        self._rings.pop(sid, None)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._rings

    def _ring(self, stream_id: str) -> _StreamRing:
        ring = self._rings.get(stream_id)
        if ring is None:
            raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or evicted by retention)")
        return ring

    async def info(self, stream_id: str) -> StreamInfo:
        ring = self._ring(stream_id)
        return StreamInfo(ring.first_seq, ring.next_seq, ring.finished)

    def batches(
        self,
        stream_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        idle_s: float | None = None,
        max_lag: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        ring = self._ring(stream_id)
        if from_seq < ring.first_seq:
            raise SeqEvicted(stream_id, from_seq, ring.first_seq)
        return _batches(ring, max(from_seq, 0), follow, idle_s, max_lag)


async def _batches(
    ring: _StreamRing, seq: int, follow: bool, idle_s: float | None, max_lag: int | None
) -> AsyncIterator[Sequence[Event]]:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] | None = None
    timer: asyncio.TimerHandle | None = None
    last = read_at = loop.time()

    def on_idle_timer() -> None:
        # One lazily re-armed timer per reader, not one per wait: a wait costs a future only.
        nonlocal timer
        timer = None
        assert idle_s is not None
        if waiter is None or waiter.done():
            return
        if loop.time() - last >= idle_s:
            waiter.set_result(True)
        else:
            timer = loop.call_at(last + idle_s, on_idle_timer)

    try:
        while True:
            if seq < ring.next_seq:
                batch = ring.since(seq)  # SeqEvicted for a reader that fell behind retention
                seq += len(batch)
                last = read_at = loop.time()
                yield batch
                if max_lag is not None and not ring.finished and ring.next_seq - seq > max_lag:
                    raise ObserverOverflow(
                        f"reader of stream {ring.stream_id!r} is {ring.next_seq - seq} events behind (max_lag="
                        f"{max_lag}); resume from seq {seq}"
                    )
                continue
            if ring.finished or not follow:
                return
            waiter = loop.create_future()
            ring._waiters.append(waiter)  # type: ignore[arg-type]  # woken with None, idle with True
            if idle_s is not None and timer is None:
                timer = loop.call_at(last + idle_s, on_idle_timer)
            try:
                idle = await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                    if waiter in ring._waiters:  # type: ignore[comparison-overlap]
                        ring._waiters.remove(waiter)  # type: ignore[arg-type]
                waiter = None
            if idle:
                last = loop.time()
                yield ()
            elif loop.time() - read_at < _HOT_S:
                # Woken by an append less than a millisecond after the last read: a hot stream
                # (a provider that yields between deltas). Let the producer run twice more before
                # reading, so one read (one write, one syscall for a server) carries several
                # events, not one. Costs two loop iterations (microseconds); a paced stream,
                # whose events are further apart, is read at once.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
    finally:
        if timer is not None:
            timer.cancel()


_HOT_S = 0.001
"""A reader woken within this long of its last read is on a hot stream (see ``_batches``)."""

_default: MemoryLog | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventLog] = weakref.WeakKeyDictionary()


LogKind: TypeAlias = Literal["memory", "redis"]
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def log_kind(url: str | None) -> LogKind:
    """Which backend a log URL names: ``memory`` (``"memory"``, empty or None) or ``redis``
    (``redis://``, ``rediss://``, ``unix://``); a ValueError that says what is accepted otherwise.
    The one parser of log URLs (``TOKENWIRE_LOG``, ``tokenwire serve --log``, ``ServerConfig.log_url``).

    >>> log_kind("redis://127.0.0.1:6379/0"), log_kind("memory"), log_kind(None)
    ('redis', 'memory', 'memory')
    """
    if not url or url == "memory":
        return "memory"
    if url.startswith(_REDIS_SCHEMES):
        return "redis"
    raise ValueError(f"an event log URL is 'memory' or redis://HOST:PORT/DB (rediss://, unix://), got {url!r}")


def log_from_url(
    url: str | None, *, max_events: int = 65_536, max_streams: int = 1024, max_total_events: int | None = None
) -> EventLog:
    """The event log ``url`` names (see :func:`log_kind`): a bounded :class:`MemoryLog`, or a
    :class:`~tokenwire.redis_log.RedisLog` (the ``redis`` extra, imported only then; one Redis
    stream keeps ``max_events``)."""
    if log_kind(url) == "redis":
        from tokenwire.redis_log import RedisLog  # an optional extra, loaded only when configured

        assert url is not None
        return RedisLog(url, max_events=max_events)
    return MemoryLog(max_events=max_events, max_streams=max_streams, max_total_events=max_total_events)


def configured_log_url() -> str | None:
    """``TOKENWIRE_LOG`` from the environment (None when unset or empty)."""
    return os.environ.get("TOKENWIRE_LOG") or None


def default_log() -> EventLog:
    """The log that runs use when no ``log`` is passed.

    By default a process-wide in-memory log. Bounds: 65,536 events per stream, 1,024 streams, and
    262,144 events in finished streams together (about 50 MB of one-token deltas); the oldest
    finished streams are evicted first. Pass ``log=MemoryLog(...)`` (or a shared backend) for
    other bounds. With ``TOKENWIRE_LOG=redis://HOST:PORT/DB`` in the environment it is a
    :class:`~tokenwire.redis_log.RedisLog` instead, one per event loop (a Redis client belongs
    to the loop it runs on).
    """
    global _default
    url = configured_log_url()
    if log_kind(url) == "redis":
        loop = asyncio.get_running_loop()
        log = _per_loop.get(loop)
        if log is None:
            log = _per_loop[loop] = log_from_url(url)
        return log
    if _default is None:
        _default = MemoryLog(max_events=65_536, max_streams=1024, max_total_events=262_144)
    return _default
