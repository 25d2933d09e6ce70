"""Delivery policies: how a consumer that must not (or may) slow the producer reads a stream.

Every consumer reads the stream's log (:mod:`tokenwire.log`). Inline observers are called by the
append itself; the consumers here read through a :class:`~tokenwire.log.Cursor` of their own, a
position in the log with one documented behaviour when it lags more than ``maxsize`` events
(DESIGN.md, "Backpressure is explicit"; :data:`~tokenwire.log.Overflow`):

- ``block`` — the producer waits for the reader (natural backpressure; the default for iterators);
- ``drop_oldest`` — the reader skips ahead to the newest ``maxsize`` events (counted in ``dropped``);
- ``coalesce`` — consecutive text / reasoning / same-call tool-argument deltas of the backlog are
  merged into one event carrying the newest ``seq``; terminal, tool and other events are never
  dropped;
- ``disconnect`` — the reader is detached; it gets :class:`~tokenwire.errors.ObserverOverflow` and can
  resume from the event log at the last seq it saw.

A lagging reader costs its position in the log, never a copy of the events.

:func:`queued` wraps an observer in such a policy (it runs in a task the stream owns);
:class:`EventIterator` exposes a cursor as an async iterator.

>>> import asyncio, tokenwire
>>> from tokenwire.providers import Scripted
>>> async def main():
...     it = tokenwire.EventIterator()
...     handle = tokenwire.generate(Scripted(["Hel", "lo"]), "hi", observers=[it])
...     return [ev.type async for ev in it]
>>> asyncio.run(main())
['start', 'text.delta', 'text.delta', 'done']
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Sequence

from tokenwire.events import TERMINAL_TYPES, Event
from tokenwire.log import OVERFLOWS, Cursor, Overflow, StreamWriter

__all__ = ["EventIterator", "Overflow", "Queued", "queued"]


def _validate(maxsize: int, overflow: str) -> None:
    if maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}")
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}; got {overflow!r}")


class Queued:
    """Delivery policy: the observer runs in its own task, reading the log through a cursor.

    Use :func:`queued` to build one.
    """

    __slots__ = ("maxsize", "observer", "overflow")

    def __init__(self, observer: object, maxsize: int = 1024, overflow: Overflow = "block"):
        _validate(maxsize, overflow)  # now, where the caller can see it
        self.observer = observer
        self.maxsize = maxsize
        self.overflow = overflow


def queued(observer: object, *, maxsize: int = 1024, overflow: Overflow = "block") -> Queued:
    """Deliver to ``observer`` from its own cursor instead of inline.

    The producer never waits for the observer except under ``overflow="block"``.

    >>> import tokenwire
    >>> policy = tokenwire.queued(print, maxsize=64, overflow="coalesce")
    """
    return Queued(observer, maxsize, overflow)


class EventIterator:
    """An async iterator over a stream, reading the log through its own cursor.

    Register it before the stream starts (``generate(..., observers=[it])``) and iterate it from
    any task; iteration ends after the terminal event. ``maxsize`` and ``overflow`` say what
    happens when the reader lags (default: the producer waits). Leaving the loop early is safe:
    ``await it.aclose()`` — or just dropping the iterator — detaches the cursor at once, so the
    producer is never held by a reader that left.
    """

    def __init__(self, *, maxsize: int = 1024, overflow: Overflow = "block"):
        _validate(maxsize, overflow)
        self.maxsize = maxsize
        self.overflow = overflow
        self._cursor: Cursor | None = None
        self._buffer: Sequence[Event] = ()
        self._pos = 0
        self._finished = False

    def attach(self, writer: StreamWriter, from_seq: int = 0) -> None:
        """Read ``writer``'s stream from ``from_seq`` (the engine calls this for registered iterators)."""
        if self._cursor is not None:
            raise RuntimeError("this EventIterator already reads a stream; use one iterator per stream")
        cursor = writer.cursor(from_seq, maxsize=self.maxsize, overflow=self.overflow)
        self._cursor = cursor
        weakref.finalize(self, cursor.close)  # dropped without aclose(): detach all the same

    @property
    def cursor(self) -> Cursor:
        if self._cursor is None:
            raise RuntimeError("this EventIterator reads no stream yet: pass it in generate(..., observers=[it])")
        return self._cursor

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        # An async generator: per event it costs what a bare ``async for`` costs (its __anext__ is
        # native), and leaving the loop early (break, an exception, aclose) detaches the cursor.
        try:
            while True:
                batch = await self.next_batch()
                if not batch:
                    return
                for event in batch:
                    yield event
        finally:
            if not self._finished:
                await self.aclose()

    async def __anext__(self) -> Event:
        if self._pos >= len(self._buffer):
            batch = await self.next_batch()
            if not batch:
                raise StopAsyncIteration
            self._buffer, self._pos = batch, 0
        event = self._buffer[self._pos]
        self._pos += 1
        return event

    async def next_batch(self) -> Sequence[Event]:
        """Every event ready so far (at least one); empty once the stream has ended."""
        if self._pos < len(self._buffer):
            rest = self._buffer[self._pos :]
            self._buffer, self._pos = (), 0
            return rest
        if self._finished:
            return ()
        batch = await self.cursor.next_batch()
        if not batch or batch[-1].__class__ in TERMINAL_TYPES:
            self._finished = True
            self.cursor.close()
        return batch

    async def aclose(self) -> None:
        """Stop reading: the cursor is detached and the producer never waits for it again."""
        self._finished = True
        self._buffer, self._pos = (), 0
        if self._cursor is not None:
            self._cursor.close()
