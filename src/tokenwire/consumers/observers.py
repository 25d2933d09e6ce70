"""Observers: application code notified of each event, and the dispatcher that calls them.

An observer is any object with some of these methods, sync or async, each taking the event:
``on_start``, ``on_delta``, ``on_reasoning``, ``on_tool_call_start``, ``on_tool_call_delta``,
``on_tool_call``, ``on_tool_result``, ``on_step``, ``on_usage``, ``on_error``, ``on_done``, and
the catch-all ``on_event`` (called for every event, after the specific method). A plain function
(or coroutine function) taking one event is an observer too.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> class Printer:
...     def on_delta(self, event):
...         print(event.text, end="")
...     def on_done(self, event):
...         print(f" [{event.finish_reason}]")
>>> response = tokenwire.run_sync(Scripted(["Hello", " world"]), "hi", observers=[Printer()])
Hello world [stop]

Delivery is ``inline`` by default (awaited in registration order: natural backpressure) or
through a bounded queue (:func:`tokenwire.queued`). An observer that raises is isolated: the
stream and the other observers go on, the first failure of each observer is reported through the
``on_observer_error`` hook (default: logged), later ones are counted. With ``strict=True`` a
failure ends the stream with an ``error`` event instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeAlias

from tokenwire.consumers.delivery import EventIterator, Queued
from tokenwire.errors import ObserverOverflow
from tokenwire.events import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)
from tokenwire.log import Cursor, StreamRing, StreamWriter

__all__ = ["Dispatcher", "Observer", "ObserverErrorHook", "observe"]

logger = logging.getLogger("tokenwire")

ObserverErrorHook: TypeAlias = Callable[[object, "Event | None", BaseException], None]
"""``hook(observer, event, exception)``, called once per failing observer (``event`` is None when
the failure is not tied to one event, e.g. a queued observer disconnected for overflow)."""

METHOD_FOR_TYPE: dict[type, str] = {
    Start: "on_start",
    TextDelta: "on_delta",
    ReasoningDelta: "on_reasoning",
    ToolCallStart: "on_tool_call_start",
    ToolCallDelta: "on_tool_call_delta",
    ToolCall: "on_tool_call",
    ToolResult: "on_tool_result",
    Step: "on_step",
    Usage: "on_usage",
    Error: "on_error",
    Done: "on_done",
}
_OBSERVER_METHODS = frozenset(METHOD_FOR_TYPE.values()) | {"on_event"}
_OBSERVE_RETENTION = 4096


class Observer(Protocol):
    """The observer protocol. Every method is optional; each may be ``async``.

    Implement only what you need; this class documents the names (it is not a base class you
    must inherit).
    """

    def on_start(self, event: Start) -> Any: ...
    def on_delta(self, event: TextDelta) -> Any: ...
    def on_reasoning(self, event: ReasoningDelta) -> Any: ...
    def on_tool_call_start(self, event: ToolCallStart) -> Any: ...
    def on_tool_call_delta(self, event: ToolCallDelta) -> Any: ...
    def on_tool_call(self, event: ToolCall) -> Any: ...
    def on_tool_result(self, event: ToolResult) -> Any: ...
    def on_step(self, event: Step) -> Any: ...
    def on_usage(self, event: Usage) -> Any: ...
    def on_error(self, event: Error) -> Any: ...
    def on_done(self, event: Done) -> Any: ...
    def on_event(self, event: Event) -> Any: ...


def _default_hook(observer: object, event: Event | None, exc: BaseException) -> None:
    where = "" if event is None else f" on {event.type} event seq {event.seq}"
    logger.error("observer %r failed%s; later failures are only counted", observer, where, exc_info=exc)


class _Subscriber:
    """Bookkeeping for one registered observer."""

    __slots__ = ("failures", "observer")

    def __init__(self, observer: object):
        self.observer = observer
        self.failures = 0


_Entry: TypeAlias = tuple[int, Callable[[Event], Any], _Subscriber]


class Dispatcher:
    """The stream's consumers that live in the producer's process, attached to its log writer.

    Inline observers (objects, callables) are called by :meth:`deliver`, which the writer calls
    on every append: synchronous observers run immediately and it returns ``None``; it returns an
    awaitable only when an async observer needs the producer to wait, so a stream with only sync
    observers costs no coroutine per event. :class:`EventIterator` and :func:`queued` observers
    read the log through cursors of their own; queued observers run in tasks this dispatcher
    owns (:meth:`aclose` drains, then cancels them).
    """

    def __init__(
        self,
        observers: Iterable[object] = (),
        *,
        on_observer_error: ObserverErrorHook | None = None,
        strict: bool = False,
        on_strict_failure: Callable[[object, BaseException], None] | None = None,
        drain_timeout_s: float = 5.0,
    ):
        self._hook = on_observer_error or _default_hook
        self._strict = strict
        self._on_strict_failure = on_strict_failure
        self.drain_timeout_s = drain_timeout_s
        self._subscribers: list[_Subscriber] = []
        self._iterators: list[EventIterator] = []
        self._queued: list[tuple[Queued, _Subscriber]] = []
        self._tasks: list[tuple[asyncio.Task[None], _Subscriber]] = []
        self._interrupted: tuple[Event, tuple[_Entry, ...]] | None = None
        self._stuck: _Subscriber | None = None  # the observer a cancellation interrupted
        self._lists: dict[type, list[tuple[Callable[[Event], Any], _Subscriber]]] = {t: [] for t in EVENT_TYPES}
        self._table: dict[type, tuple[_Entry, ...]] = {t: () for t in EVENT_TYPES}
        for observer in observers:
            self.add(observer)

    @property
    def failures(self) -> int:
        """Observer failures so far (first and later ones)."""
        return sum(s.failures for s in self._subscribers)

    @property
    def inline_only(self) -> bool:
        """True when every observer is called inline (no iterator, no queued observer; before :meth:`attach`)."""
        return not self._iterators and not self._queued

    @property
    def has_inline(self) -> bool:
        """True when some observer is called inline."""
        return any(self._table.values())

    def add(self, observer: object, sub: _Subscriber | None = None) -> None:
        """Register an observer object, a plain callable, a :class:`Queued` policy or an iterator
        (before :meth:`attach`). ``sub``: the bookkeeping it shares with another dispatcher (a
        queued observer's failures, raised or overflowing, count once, as the observer it wraps)."""
        if sub is None:
            sub = _Subscriber(observer.observer if isinstance(observer, Queued) else observer)
        if isinstance(observer, EventIterator):
            self._iterators.append(observer)
            return
        self._subscribers.append(sub)
        if isinstance(observer, Queued):
            self._queued.append((observer, sub))
        elif any(hasattr(observer, name) for name in _OBSERVER_METHODS):
            catch_all = getattr(observer, "on_event", None)
            for etype, name in METHOD_FOR_TYPE.items():
                method = getattr(observer, name, None)
                if method is not None:
                    self._lists[etype].append((method, sub))
                if catch_all is not None:
                    self._lists[etype].append((catch_all, sub))
        elif callable(observer):
            for lst in self._lists.values():
                lst.append((observer, sub))
        else:
            raise TypeError(
                f"{observer!r} is not an observer: give an object with on_delta/on_done/... or "
                "on_event methods, a callable taking one event, tokenwire.queued(...) or an EventIterator"
            )
        self._table = {t: tuple((i, fn, s) for i, (fn, s) in enumerate(lst)) for t, lst in self._lists.items()}

    def attach(self, writer: StreamWriter, from_seq: int = 0) -> None:
        """Read ``writer``'s stream: inline observers through its appends, the others through cursors."""
        if self.has_inline:
            writer.inline = self.deliver
        for it in self._iterators:
            it.attach(writer, from_seq)
        # Not kept: an iterator its reader dropped must be collectable (its cursor detaches then).
        self._iterators = []
        loop = asyncio.get_running_loop() if self._queued else None
        for policy, sub in self._queued:
            cursor = writer.cursor(from_seq, maxsize=policy.maxsize, overflow=policy.overflow)
            inner = Dispatcher(
                on_observer_error=self._hook, strict=self._strict, on_strict_failure=self._on_strict_failure
            )
            inner.add(policy.observer, sub)
            assert loop is not None
            self._tasks.append((loop.create_task(_consume(cursor, inner, sub, self)), sub))

    def deliver(self, event: Event) -> Awaitable[None] | None:
        """Deliver one event to every inline observer; await the result when it is not None."""
        entries = self._table[event.__class__]
        for i, fn, sub in entries:
            try:
                r = fn(event)
            except (Exception, asyncio.CancelledError) as exc:  # sync code raising it: the observer's own
                self.failed(sub, event, exc)
                continue
            if r is not None:
                return self._finish(r, event, entries, i)
        return None

    async def _finish(self, r: Any, event: Event, entries: tuple[_Entry, ...], i: int) -> None:
        n = len(entries)
        try:
            while True:
                try:
                    if inspect.isawaitable(r):
                        await r
                except asyncio.CancelledError as exc:
                    if _being_cancelled():
                        raise  # the stream is cancelled (or a bound ran out): handled below
                    self.failed(entries[i][2], event, exc)  # the observer raised it itself: isolate it
                except Exception as exc:
                    self.failed(entries[i][2], event, exc)
                i += 1
                if i >= n:
                    return
                _, fn, sub = entries[i]
                try:
                    r = fn(event)
                except (Exception, asyncio.CancelledError) as exc:
                    self.failed(sub, event, exc)
                    r = None
        except asyncio.CancelledError:
            # The stream was cancelled mid-delivery: the observers after this one have not seen
            # the event yet. The engine hands it to them (resume_interrupted) before the terminal
            # event, so no observer sees a gap in seq.
            self._interrupted = (event, entries[i + 1 :])
            self._stuck = entries[i][2]
            raise

    async def resume_interrupted(self) -> None:
        """Finish a delivery that a cancellation interrupted (called by the engine before the terminal)."""
        if self._interrupted is None:
            return
        event, rest = self._interrupted
        self._interrupted = None
        stuck, self._stuck = self._stuck, None
        if stuck is not None:  # it never finished this event: the end of the stream interrupted it
            self.failed(
                stuck,
                event,
                TimeoutError(f"the observer was interrupted by the end of the stream on the {event.type} event"),
            )
        if rest:
            _, fn, sub = rest[0]
            try:
                r = fn(event)
            except (Exception, asyncio.CancelledError) as exc:
                self.failed(sub, event, exc)
                r = None
            await self._finish(r, event, rest, 0)

    async def settle(self, delivery: Awaitable[None], deadline: float) -> None:
        """Await a delivery until ``deadline`` (the loop's clock): an observer still busy then is
        reported (``TimeoutError``) and skipped, and the observers after it still get the event —
        each of them bounded by the same deadline, so however many are stuck, this returns by it.

        The engine uses it for the end of a stream (an interrupted delivery, then the terminal
        event), which nothing else can interrupt.
        """
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await delivery
                return
            except TimeoutError:
                if self._interrupted is None or self._stuck is None:
                    return
                event = self._interrupted[0]
                self.failed(
                    self._stuck,
                    event,
                    TimeoutError(
                        f"the observer did not return within {self.drain_timeout_s:g} s (the stream's "
                        f"drain_timeout_s, for its whole end) on the {event.type} event"
                    ),
                )
                self._stuck = None
                delivery = self.resume_interrupted()

    def failed(self, sub: _Subscriber, event: Event | None, exc: BaseException) -> None:
        sub.failures += 1
        if sub.failures == 1:
            try:
                self._hook(sub.observer, event, exc)
            except Exception:
                logger.exception("on_observer_error hook failed")
        if self._strict and self._on_strict_failure is not None:
            self._on_strict_failure(sub.observer, exc)

    async def aclose(self, deadline: float | None = None) -> None:
        """Wait until ``deadline`` (the loop's clock; default: ``drain_timeout_s`` from now) for
        queued observers to read to the end, then cancel the rest and report each one.

        The engine passes the deadline it set when the stream began to end, so the end of a
        stream never waits longer than ``drain_timeout_s`` for its observers, in total.
        """
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.drain_timeout_s
        tasks = {task: sub for task, sub in self._tasks}
        self._tasks.clear()
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        for task in pending:
            task.cancel()
            self.failed(
                tasks[task],
                None,
                TimeoutError(f"the queued observer did not drain within drain_timeout_s ({self.drain_timeout_s:g} s)"),
            )
        if pending:
            await asyncio.wait(pending)


def _being_cancelled() -> bool:
    """True when the current task itself is being cancelled (not an observer raising CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _consume(cursor: Cursor, inner: Dispatcher, sub: _Subscriber, outer: Dispatcher) -> None:
    """Task body of a queued observer: read its cursor into its inline dispatcher until the end."""
    last: Event | None = None
    try:
        while True:
            try:
                batch = await cursor.next_batch()
            except ObserverOverflow as exc:  # a failure of this observer like any other
                outer.failed(sub, last, exc)
                return
            if not batch:
                return
            for event in batch:
                last = event
                r = inner.deliver(event)
                if r is not None:
                    await r
    finally:
        cursor.close()


async def observe(
    events: AsyncIterable[Event],
    *observers: object,
    strict: bool = False,
    on_observer_error: ObserverErrorHook | None = None,
) -> Event | None:
    """Drive observers from any async iterable of events: a client stream, a log read, a replay.

    Events are de-duplicated by ``(stream_id, seq)`` (a resumed source may repeat some), so each
    observer sees each seq at most once. Returns the terminal event, or None when the source ended
    without one. With ``strict`` an observer failure is raised here instead of being isolated.

    >>> import asyncio, tokenwire
    >>> from tokenwire.providers import Scripted
    >>> async def main():
    ...     it = tokenwire.EventIterator()
    ...     tokenwire.generate(Scripted(["a", "b"]), "hi", observers=[it])
    ...     seen = []
    ...     terminal = await tokenwire.observe(it, lambda ev: seen.append(ev.type))
    ...     return seen, terminal.type
    >>> asyncio.run(main())
    (['start', 'text.delta', 'text.delta', 'done'], 'done')
    """
    failure: list[BaseException] = []

    def on_strict(observer: object, exc: BaseException) -> None:
        failure.append(exc)

    dispatcher = Dispatcher(observers, on_observer_error=on_observer_error, strict=strict, on_strict_failure=on_strict)
    # The events are re-logged into a private ring, so queued observers read it through cursors
    # exactly as they read a live stream.
    writer = StreamRing("observe", _OBSERVE_RETENTION, lambda ring: None)
    dispatcher.attach(writer)
    last_seq: dict[str, int] = {}
    terminal: Event | None = None
    try:
        async for event in events:
            sid = event.stream_id
            if event.seq <= last_seq.get(sid, -1):
                continue
            last_seq[sid] = event.seq
            r = writer.append(event)
            if r is not None:
                await r
            if failure:
                raise failure[0]
            if event.__class__ in TERMINAL_TYPES:
                terminal = event
                break
    finally:
        if terminal is None:
            writer.finish()  # the source ended (or failed) without a terminal: let the cursors end
        await dispatcher.aclose()
    return terminal
