"""The in-memory event log (the default): one bounded ring per stream, in this process.

``MemoryLog()`` is what runs use by default (see :func:`tokenwire.log.default_log`); the package
docstring shows one written and read.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from tokenwire.errors import ObserverOverflow, SeqEvicted, StreamClosed, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event
from tokenwire.log.base import Cursor, EventLog, InlineReader, Overflow, StreamInfo, StreamWriter, replayed
from tokenwire.log.ownership import LocalOwnership

T = TypeVar("T")

__all__ = ["MemoryLog", "Ring", "StreamRing"]


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

    def oldest(self) -> T | None:
        """The oldest retained item (seq :attr:`first_seq`), or None when there is none."""
        return self._items[0] if self._items else None

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


class StreamRing(Ring[Event], StreamWriter):
    """One stream's events in memory: the writer, the cursors' source, the readers' source."""

    __slots__ = ("_cursors", "_on_finish", "inline", "stream_id")

    def __init__(self, stream_id: str, max_events: int, on_finish: Callable[[StreamRing], None]):
        super().__init__(stream_id, max_events)
        self.stream_id = stream_id
        self.inline: InlineReader | None = None
        self._cursors: list[Cursor] = []  # cursors whose policy acts at append time (block, disconnect)
        self._coalescing: list[Cursor] = []  # coalesce cursors: they take what eviction would lose
        self._on_finish = on_finish
        self._ownership: LocalOwnership | None = None  # set by MemoryLog for a durable run

    async def suspend(self, until: float) -> bool:
        own = self._ownership
        if own is None:
            raise NotImplementedError("only a durable run (opened with a token) can be suspended")
        self.inline = None  # the producer's observers are gone; the next producer brings its own
        return await own.suspend(self.stream_id, self.token, until)

    def append(self, event: Event) -> Awaitable[None] | None:  # type: ignore[override]
        if self.finished:
            raise StreamClosed(
                f"stream {self.stream_id!r} already ended; nothing may follow its terminal event (got {event.type})"
            )
        items = self._items
        if self._coalescing and len(items) == items.maxlen:
            self._evicting(items[0])
        items.append(event)
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

    def _evicting(self, oldest: Event) -> None:
        """``oldest`` leaves retention with this append: coalescing cursors that have not read it
        take it into their own backlog first (merged), so no event is lost to eviction."""
        for c in self._coalescing:
            if c.seq == oldest.seq:
                c.absorb(oldest)
                if c.overflowed:
                    self._wake()  # its reader raises ObserverOverflow now
        self._coalescing = [c for c in self._coalescing if not c.overflowed and not c.closed]

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
        elif overflow == "coalesce":
            self._coalescing.append(c)
        return c

    def detach(self, cursor: Cursor) -> None:
        if cursor in self._cursors:
            self._cursors.remove(cursor)
        if cursor in self._coalescing:
            self._coalescing.remove(cursor)
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
        self._rings: dict[str, StreamRing] = {}  # insertion-ordered: oldest first
        self._finished: OrderedDict[str, int] = OrderedDict()  # finished streams, oldest first -> size
        self._finished_events = 0
        # Streams of one log may run on several event loops in several threads (the process-wide
        # default log with stream_sync's worker loops): the bookkeeping across streams is locked;
        # a stream's own ring is only touched from its producer's loop.
        self._lock = threading.Lock()
        self._ownership = LocalOwnership()

    @property
    def ownership(self) -> LocalOwnership:
        return self._ownership

    def open(self, stream_id: str, *, at: int = 0, token: str | None = None) -> StreamWriter:
        with self._lock:
            if at:  # a suspended durable run resumed in this process: its ring carries on
                ring = self._ring(stream_id)
                if ring.finished or ring.next_seq != at:
                    raise ValueError(f"stream {stream_id!r} cannot continue at seq {at} (it is at {ring.next_seq})")
                ring.token = token or ""
                return ring
            if stream_id in self._rings:
                raise ValueError(f"stream {stream_id!r} already exists in this log; stream ids must be unique")
            ring = StreamRing(stream_id, self.max_events, self._stream_finished)
            if token is not None:
                ring.token = token
                ring._ownership = self._ownership
                self._ownership.hold(stream_id, token)
            self._rings[stream_id] = ring
            if len(self._rings) > self.max_streams:
                if self._finished:
                    self._evict_finished()
                else:
                    oldest = next(iter(self._rings))
                    del self._rings[oldest]
                    self._ownership.drop(oldest)
            return ring

    def _stream_finished(self, ring: StreamRing) -> None:
        self._ownership.ended(ring.stream_id)
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
        self._ownership.drop(sid)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._rings

    def _ring(self, stream_id: str) -> StreamRing:
        ring = self._rings.get(stream_id)
        if ring is None:
            raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or evicted by retention)")
        return ring

    async def info(self, stream_id: str) -> StreamInfo:
        ring = self._ring(stream_id)
        return StreamInfo(ring.first_seq, ring.next_seq, ring.finished)

    async def first(self, stream_id: str) -> Event | None:
        ring = self._rings.get(stream_id)
        return ring.oldest() if ring is not None and ring.first_seq == 0 else None

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
        ring = self._ring(stream_id)
        if from_seq < ring.first_seq:
            raise SeqEvicted(stream_id, from_seq, ring.first_seq)
        return _batches(ring, max(from_seq, 0), follow, idle_s, max_lag, live_from)


async def _batches(
    ring: StreamRing, seq: int, follow: bool, idle_s: float | None, max_lag: int | None, live_from: int | None
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

    if live_from is None:
        live_from = ring.next_seq  # what was appended before the reader came is a replay
    try:
        while True:
            if seq < ring.next_seq:
                batch = ring.since(seq)  # SeqEvicted for a reader that fell behind retention
                seq += len(batch)
                last = read_at = loop.time()
                if batch[0].seq < live_from:
                    batch = replayed(batch, live_from)
                    if not batch:
                        continue
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
