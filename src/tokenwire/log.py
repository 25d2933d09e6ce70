"""The event log: the append-only backbone every subscriber reads with a cursor.

A producer appends a stream's events through the :class:`StreamWriter` that
:meth:`EventLog.open` returns; any number of readers call :meth:`EventLog.read` with the seq to
start from and then tail the stream until its terminal event. Resume, replay and late join are
all that one operation (DESIGN.md).

The interface is shaped for a networked backend too (Redis Streams): ``append`` never blocks (a
remote backend buffers and pipelines), ``flush`` is the durability point the engine awaits after
the terminal event, and reads are async iterators.

>>> import asyncio
>>> from tokenwire.events import Start, Done
>>> async def demo():
...     log = MemoryLog()
...     w = log.open("s1")
...     w.append(Start(model="m", stream_id="s1", seq=0))
...     w.append(Done(stream_id="s1", seq=1))
...     return [e.type for e in [ev async for ev in log.read("s1")]]
>>> asyncio.run(demo())
['start', 'done']
"""

from __future__ import annotations

import abc
import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from tokenwire.errors import SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event

__all__ = ["EventLog", "MemoryLog", "Ring", "StreamWriter"]

T = TypeVar("T")


class StreamWriter(abc.ABC):
    """Write side of one stream's log; only the stream's producer holds it."""

    stream_id: str

    @abc.abstractmethod
    def append(self, event: Event) -> None:
        """Append the next event. Never blocks; the caller guarantees seq order."""

    async def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for memory
        """Wait until appended events are durable and visible to every reader."""


class EventLog(abc.ABC):
    """Per-stream append-only event logs with explicit retention."""

    @abc.abstractmethod
    def open(self, stream_id: str) -> StreamWriter:
        """Create the log of a new stream and return its writer."""

    @abc.abstractmethod
    def read(self, stream_id: str, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        """Iterate the stream's events from ``from_seq`` on.

        With ``follow`` the iterator waits for new events until the terminal one; without it, it
        stops at the current end. Raises :class:`StreamNotFound` for an unknown stream and
        :class:`SeqEvicted` when ``from_seq`` (or a later seq, for a reader that fell behind) is no
        longer retained.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; a no-op for memory."""


class Ring(Generic[T]):
    """A bounded, append-only sequence numbered from 0, read by cursors (the log's building block).

    Items beyond ``max_items`` are evicted from the front; :meth:`since` and :meth:`read` raise
    :class:`SeqEvicted` for them. :meth:`finish` marks the end (readers stop there).
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
        """No more items will come; wake every reader."""
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def since(self, seq: int) -> list[T]:
        """Every retained item from ``seq`` on (empty when caught up)."""
        if seq < self.first_seq:
            raise SeqEvicted(self.name, seq, self.first_seq)
        n = self.next_seq - seq
        if n <= 0:
            return []
        items = self._items
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

    async def read(self, from_seq: int, follow: bool = True) -> AsyncIterator[T]:
        """Items from ``from_seq`` on; with ``follow``, wait for more until :meth:`finish`."""
        seq = max(from_seq, 0)
        while True:
            while seq < self.next_seq:
                if seq < self.first_seq:
                    # Raised up front, or for a reader that fell max_items behind while suspended.
                    raise SeqEvicted(self.name, seq, self.first_seq)
                item = self._items[seq - self.next_seq]
                seq += 1
                yield item
            if self.finished or not follow:
                return
            await self.wait(seq)


class _EventRing(Ring[Event], StreamWriter):
    """One stream's events; the terminal event finishes the ring."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: str, max_events: int):
        super().__init__(stream_id, max_events)
        self.stream_id = stream_id

    def append(self, event: Event) -> None:
        self._items.append(event)
        self.next_seq += 1
        if event.__class__ in TERMINAL_TYPES:
            self.finished = True
        if self._waiters:
            self._wake()


class MemoryLog(EventLog):
    """In-process event log: one bounded ring per stream (the default backend).

    ``max_events`` bounds each stream's ring (older events are evicted and reading them raises
    :class:`SeqEvicted`); ``max_streams`` bounds how many streams are kept, evicting the oldest
    finished stream first, then the oldest stream.
    """

    def __init__(self, *, max_events: int = 65_536, max_streams: int = 1024):
        if max_events < 1 or max_streams < 1:
            raise ValueError(f"max_events and max_streams must be >= 1, got {max_events}, {max_streams}")
        self.max_events = max_events
        self.max_streams = max_streams
        self._rings: OrderedDict[str, _EventRing] = OrderedDict()

    def open(self, stream_id: str) -> StreamWriter:
        if stream_id in self._rings:
            raise ValueError(f"stream {stream_id!r} already exists in this log; stream ids must be unique")
        ring = _EventRing(stream_id, self.max_events)
        self._rings[stream_id] = ring
        if len(self._rings) > self.max_streams:
            self._evict()
        return ring

    def _evict(self) -> None:
        for sid, ring in self._rings.items():
            if ring.finished:
                del self._rings[sid]
                return
        self._rings.popitem(last=False)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._rings

    def read(self, stream_id: str, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        ring = self._rings.get(stream_id)
        if ring is None:
            raise StreamNotFound(f"no stream {stream_id!r} in this log (unknown, or evicted by retention)")
        if from_seq < ring.first_seq:
            raise SeqEvicted(stream_id, from_seq, ring.first_seq)
        return ring.read(from_seq, follow)
