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

from tokenwire.errors import SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event

__all__ = ["EventLog", "MemoryLog", "StreamWriter"]


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


class _Ring(StreamWriter):
    """A bounded in-memory log of one stream."""

    __slots__ = ("_events", "_waiters", "finished", "next_seq", "stream_id")

    def __init__(self, stream_id: str, max_events: int):
        self.stream_id = stream_id
        self._events: deque[Event] = deque(maxlen=max_events)
        self._waiters: list[asyncio.Future[None]] = []
        self.next_seq = 0
        self.finished = False

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self._events)

    def append(self, event: Event) -> None:
        self._events.append(event)
        self.next_seq += 1
        if event.__class__ in TERMINAL_TYPES:
            self.finished = True
        if self._waiters:
            for fut in self._waiters:
                if not fut.done():
                    fut.set_result(None)
            self._waiters.clear()

    async def read(self, from_seq: int, follow: bool) -> AsyncIterator[Event]:
        seq = max(from_seq, 0)
        while True:
            while seq < self.next_seq:
                if seq < self.first_seq:
                    # Raised up front, or for a reader that fell max_events behind while suspended.
                    raise SeqEvicted(self.stream_id, seq, self.first_seq)
                event = self._events[seq - self.next_seq]
                seq += 1
                yield event
            if self.finished or not follow:
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                    if fut in self._waiters:
                        self._waiters.remove(fut)


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
        self._rings: OrderedDict[str, _Ring] = OrderedDict()

    def open(self, stream_id: str) -> StreamWriter:
        if stream_id in self._rings:
            raise ValueError(f"stream {stream_id!r} already exists in this log; stream ids must be unique")
        ring = _Ring(stream_id, self.max_events)
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
