"""Bounded per-subscriber queues and their overflow policies.

A subscriber that must not slow the producer gets a :class:`Mailbox`: a bounded FIFO with one
documented behaviour when it is full (DESIGN.md, "Backpressure is explicit"):

- ``block`` — the producer waits for space (natural backpressure; the default for iterators);
- ``drop_oldest`` — the oldest queued event is discarded (counted in ``dropped``);
- ``coalesce`` — consecutive text / reasoning / same-call tool-argument deltas are merged into one
  event carrying the newest ``seq``; terminal, tool and other events are never dropped: if merging
  frees no space the producer waits, as with ``block``;
- ``disconnect`` — the subscriber is detached; its reader gets :class:`ObserverOverflow` and can
  resume from the event log at the last seq it saw.

:func:`queued` wraps an observer in such a policy; :class:`EventIterator` is an observer that
exposes the queue as an async iterator.

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

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Literal, TypeAlias

import msgspec

from tokenwire.errors import ObserverOverflow
from tokenwire.events import TERMINAL_TYPES, Event, ReasoningDelta, TextDelta, ToolCallDelta

__all__ = ["EventIterator", "Mailbox", "Overflow", "Queued", "queued"]

Overflow: TypeAlias = Literal["block", "drop_oldest", "coalesce", "disconnect"]
_OVERFLOWS = ("block", "drop_oldest", "coalesce", "disconnect")


def _merge(a: Event, b: Event) -> Event | None:
    """Merge two consecutive deltas into one carrying b's envelope, or None if they don't merge."""
    cls = a.__class__
    if cls is not b.__class__:
        return None
    if cls is TextDelta or cls is ReasoningDelta:
        return msgspec.structs.replace(b, text=a.text + b.text)  # type: ignore[union-attr]
    if cls is ToolCallDelta and a.call_id == b.call_id:  # type: ignore[union-attr]
        return msgspec.structs.replace(b, args_delta=a.args_delta + b.args_delta)  # type: ignore[union-attr]
    return None


class Mailbox:
    """A bounded single-producer, single-consumer event queue with an overflow policy."""

    __slots__ = ("_getter", "_putter", "_q", "closed", "dropped", "maxsize", "overflow", "overflowed")

    def __init__(self, maxsize: int = 1024, overflow: Overflow = "block"):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(_OVERFLOWS)}; got {overflow!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        """Events discarded (``drop_oldest``) or merged away (``coalesce``)."""
        self.overflowed = False
        """True once a ``disconnect`` subscriber overflowed."""
        self.closed = False
        self._q: deque[Event] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._q)

    def put(self, event: Event) -> Awaitable[None] | None:
        """Queue an event; returns an awaitable when the producer must wait for space."""
        q = self._q
        if len(q) < self.maxsize or event.__class__ in TERMINAL_TYPES:
            # A terminal event is always accepted so every reader can finish.
            if not self.overflowed:
                q.append(event)
                self._wake_getter()
            return None
        return self._overflow(event)

    def _wake_getter(self) -> None:
        g = self._getter
        if g is not None:
            self._getter = None
            if not g.done():
                g.set_result(None)

    def _overflow(self, event: Event) -> Awaitable[None] | None:
        q = self._q
        policy = self.overflow
        if policy == "drop_oldest":
            q.popleft()
            self.dropped += 1
            q.append(event)
            self._wake_getter()
            return None
        if policy == "disconnect":
            if not self.overflowed:
                self.overflowed = True
                q.clear()
                self._wake_getter()
            return None
        if policy == "coalesce":
            merged = _merge(q[-1], event)
            if merged is not None:
                q[-1] = merged
                self.dropped += 1
                return None
            self._compact()
            if len(q) < self.maxsize:
                q.append(event)
                self._wake_getter()
                return None
        return self._wait_and_put(event)

    def _compact(self) -> None:
        out: deque[Event] = deque()
        for ev in self._q:
            merged = _merge(out[-1], ev) if out else None
            if merged is None:
                out.append(ev)
            else:
                out[-1] = merged
                self.dropped += 1
        self._q = out

    async def _wait_and_put(self, event: Event) -> None:
        try:
            while len(self._q) >= self.maxsize and not self.closed:
                fut = asyncio.get_running_loop().create_future()
                self._putter = fut
                await fut
        finally:
            # Also when the producer is cancelled while waiting: the event was already appended to
            # the log and given to other observers, so this subscriber gets it too (one over the
            # bound) rather than a gap in seq.
            if not self.closed:
                self._q.append(event)
                self._wake_getter()

    def _after_get(self) -> None:
        p = self._putter
        if p is not None and len(self._q) < self.maxsize:
            self._putter = None
            if not p.done():
                p.set_result(None)

    async def _wait(self) -> None:
        while not self._q:
            if self.overflowed:
                raise ObserverOverflow(
                    f"subscriber fell more than {self.maxsize} events behind and was disconnected "
                    "(overflow='disconnect'); resume from the event log at the last seq it saw"
                )
            if self.closed:
                raise EOFError
            fut = asyncio.get_running_loop().create_future()
            self._getter = fut
            await fut

    async def get(self) -> Event:
        """The next event; raises ObserverOverflow after a disconnect, EOFError once closed and empty."""
        if not self._q:
            await self._wait()
        event = self._q.popleft()
        self._after_get()
        return event

    async def get_batch(self) -> list[Event]:
        """All queued events (at least one), same errors as :meth:`get`."""
        if not self._q:
            await self._wait()
        batch = list(self._q)
        self._q.clear()
        self._after_get()
        return batch

    def close(self) -> None:
        """No more events will come; a waiting reader finishes after the queued ones."""
        self.closed = True
        self._wake_getter()
        p = self._putter
        if p is not None and not p.done():
            p.set_result(None)


class Queued:
    """Delivery policy: the observer runs in its own task, fed through a bounded :class:`Mailbox`.

    Use :func:`queued` to build one.
    """

    __slots__ = ("maxsize", "observer", "overflow")

    def __init__(self, observer: object, maxsize: int = 1024, overflow: Overflow = "block"):
        Mailbox(maxsize, overflow)  # validates the arguments now, where the caller can see them
        self.observer = observer
        self.maxsize = maxsize
        self.overflow = overflow


def queued(observer: object, *, maxsize: int = 1024, overflow: Overflow = "block") -> Queued:
    """Deliver to ``observer`` through a bounded queue instead of inline.

    The producer never waits for the observer except under ``overflow="block"`` (or a
    ``coalesce`` queue that cannot merge).

    >>> import tokenwire
    >>> policy = tokenwire.queued(print, maxsize=64, overflow="coalesce")
    """
    return Queued(observer, maxsize, overflow)


class EventIterator:
    """An observer that exposes the stream as an async iterator.

    Register it before the stream starts (``generate(..., observers=[it])``) and iterate it from
    any task; iteration ends after the terminal event. The queue is bounded (``maxsize``) and
    ``overflow`` decides what happens when the reader lags (default: the producer waits).
    """

    def __init__(self, *, maxsize: int = 1024, overflow: Overflow = "block"):
        self.mailbox = Mailbox(maxsize, overflow)
        self._finished = False

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self.mailbox.get()
        except EOFError:
            self._finished = True
            raise StopAsyncIteration from None
        if event.__class__ in TERMINAL_TYPES:
            self._finished = True
        return event

    async def next_batch(self) -> list[Event]:
        """Every event queued so far (at least one); an empty list once the stream has ended."""
        if self._finished:
            return []
        try:
            batch = await self.mailbox.get_batch()
        except EOFError:
            self._finished = True
            return []
        if batch[-1].__class__ in TERMINAL_TYPES:
            self._finished = True
        return batch
