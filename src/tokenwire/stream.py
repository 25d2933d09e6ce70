"""The stream engine: runs a provider under limits and guarantees the event lifecycle.

Whatever the provider does, a stream is ``start`` (seq 0) → gapless non-terminal events with
non-decreasing ``ts`` → exactly one ``done`` or ``error``, and nothing after it. Every event is
appended to the stream's :class:`~tokenwire.log.EventLog` and delivered to the observers.

Three ways in:

>>> import asyncio, tokenwire
>>> from tokenwire.providers import Scripted
>>> async def main():
...     handle = tokenwire.generate(Scripted(["Hello", " world"]), "Say hi", observers=[print_text])
...     terminal = await handle.wait()
...     async with tokenwire.stream(Scripted(["again"]), "Say hi") as s:
...         types = [ev.type async for ev in s]
...     return terminal.finish_reason, handle.result().text, types
>>> def print_text(event):
...     if event.type == "text.delta":
...         print(event.text)
>>> asyncio.run(main())
Hello
 world
('stop', 'Hello world', ['start', 'text.delta', 'done'])
>>> [ev.type for ev in tokenwire.stream_sync(Scripted(["sync"]), "hi")]
['start', 'text.delta', 'done']
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from time import time
from typing import Any

import msgspec

from tokenwire._exit import at_exit
from tokenwire.delivery import EventIterator
from tokenwire.errors import ProviderError
from tokenwire.events import (
    TERMINAL_TYPES,
    Done,
    Error,
    ErrorSource,
    Event,
    EventBase,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from tokenwire.limits import Limits
from tokenwire.log import EventLog, MemoryLog
from tokenwire.observers import Dispatcher, ObserverErrorHook
from tokenwire.providers.base import Provider
from tokenwire.request import Request, as_request
from tokenwire.response import Response, ResponseBuilder

__all__ = ["StreamHandle", "SyncStream", "generate", "run", "run_sync", "stream", "stream_sync"]

_NO_LIMITS = Limits()
_DELTA_TYPES = (ReasoningDelta, ToolCallDelta)
_UNBOUNDED = 1 << 62


class _BadPart(TypeError):
    """A provider yielded something that is not a part (see ``tokenwire.providers.base``)."""


class StreamHandle:
    """A running (or finished) stream. Returned by :func:`generate`.

    - ``cancel(reason)`` stops it: the provider's generator is closed and the stream ends with
      ``done`` (finish_reason ``cancelled``). Safe to call from any thread, any number of times.
    - ``await handle.wait()`` returns the terminal event; ``await handle`` returns the
      :class:`~tokenwire.Response`; ``handle.result()`` returns the aggregate so far.
    - ``async for event in handle`` yields every event from seq 0 (see :meth:`__aiter__`);
      ``handle.events(from_seq)`` reads the log from any retained seq (late join, resume).
    """

    def __init__(
        self,
        provider: Provider,
        request: Request,
        *,
        observers: Iterable[object],
        limits: Limits,
        log: EventLog,
        stream_id: str,
        request_id: str,
        meta: dict[str, Any],
        strict: bool,
        on_observer_error: ObserverErrorHook | None,
        iterator: EventIterator | None = None,
    ):
        self.stream_id = stream_id
        self.request_id = request_id
        self.provider = provider
        self.request = request
        self.limits = limits
        self.log = log
        self._meta = meta
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._iterator = iterator
        self._stop: Done | Error | None = None
        self._started = False
        self._terminating = False
        self._last_ts = 0.0
        self._timers: list[asyncio.TimerHandle] = []
        self._dispatcher = Dispatcher(
            observers, on_observer_error=on_observer_error, strict=strict, on_strict_failure=self._on_strict_failure
        )
        self._writer = log.open(stream_id)
        self._builder = ResponseBuilder(stream_id, getattr(provider, "model", "unknown"), time(), limits.stall_gap_s)
        self._task: asyncio.Task[Done | Error] = self._loop.create_task(
            self._run(), name=f"tokenwire-stream-{stream_id}"
        )

    # -- control -------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> None:
        """Stop the stream; it ends with ``done(cancelled)``. A no-op once it is ending."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.cancel, reason)
            return
        self._abort(Done(finish_reason="cancelled", reason=reason))

    def fail(self, code: str, message: str, *, source: ErrorSource = "internal", retryable: bool = False) -> None:
        """End the stream with an ``error`` event (a server shutting down, an operator's kill switch).

        Like :meth:`cancel` it closes the provider and is a no-op once the stream is ending.
        """
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(lambda: self.fail(code, message, source=source, retryable=retryable))
            return
        self._abort(Error(code=code, message=message, source=source, retryable=retryable))

    def _abort(self, terminal: Done | Error) -> None:
        if self._terminating or self._stop is not None:
            return
        self._stop = terminal
        # Interrupt whatever the run awaits. Not before it started (the coroutine would die before
        # its first line, without a terminal event) and not from inside it (a strict observer
        # failure): there the run loop sees ``_stop`` before the next event.
        if self._started and asyncio.current_task() is not self._task:
            self._task.cancel()

    def _on_strict_failure(self, observer: object, exc: BaseException) -> None:
        self._abort(
            Error(
                code="observer_failed",
                message=f"observer {observer!r} raised {type(exc).__name__}: {exc} (strict=True)",
                source="internal",
            )
        )

    # -- results -------------------------------------------------------------------------------

    def done(self) -> bool:
        """True once the terminal event was delivered and the stream released its resources."""
        return self._task.done()

    async def wait(self) -> Done | Error:
        """Wait for the end of the stream and return its terminal event.

        Cancelling the waiter does not cancel the stream (use :meth:`cancel`).
        """
        return await asyncio.shield(self._task)

    def __await__(self) -> Generator[Any, None, Response]:
        return self._result_when_done().__await__()

    async def _result_when_done(self) -> Response:
        await self.wait()
        return self.result()

    def result(self) -> Response:
        """The aggregated response so far; complete once the stream ended."""
        return self._builder.build()

    @property
    def terminal(self) -> Done | Error | None:
        """The terminal event, once emitted."""
        return self._builder.terminal

    def events(self, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        """Read this stream's events from the log, from ``from_seq`` on (late join, resume)."""
        return self.log.read(self.stream_id, from_seq, follow=follow)

    def __aiter__(self) -> AsyncIterator[Event]:
        """Every event from seq 0.

        For a stream opened with :func:`stream`, through a bounded queue registered before the
        start (the producer waits for a slow reader); otherwise through the log.
        """
        if self._iterator is not None:
            it, self._iterator = self._iterator, None
            return it
        return self.events()

    # -- the run -------------------------------------------------------------------------------

    def _arm_limits(self, t0: float) -> None:
        limits = self.limits
        loop = self._loop
        now = loop.time()
        if limits.max_duration_s is not None:
            self._timers.append(loop.call_at(now + limits.max_duration_s, self._on_max_duration))
        if limits.first_token_timeout_s is not None:
            self._timers.append(loop.call_at(now + limits.first_token_timeout_s, self._on_first_token_timeout))
        if limits.stall_timeout_s is not None:
            self._timers.append(loop.call_at(now + limits.stall_timeout_s, self._on_stall_check))

    def _on_max_duration(self) -> None:
        self._abort(
            Error(
                code="timeout",
                message=f"stream exceeded max_duration_s={self.limits.max_duration_s}",
                retryable=True,
                source="limit",
            )
        )

    def _on_first_token_timeout(self) -> None:
        if self._builder.first_token_ts is None:
            self._abort(
                Error(
                    code="first_token_timeout",
                    message=f"no token within first_token_timeout_s={self.limits.first_token_timeout_s}",
                    retryable=True,
                    source="limit",
                )
            )

    def _on_stall_check(self) -> None:
        # One timer per stall window instead of one per event: on firing, re-arm for the end of
        # the window that started at the last event, or abort if that window is over.
        stall = self.limits.stall_timeout_s
        assert stall is not None
        b = self._builder
        if b.first_token_ts is None and self.limits.first_token_timeout_s is not None:
            idle = 0.0  # before the first token the first-token timeout governs
        else:
            idle = time() - self._last_ts
        if idle >= stall:
            self._abort(
                Error(
                    code="stalled",
                    message=f"no event from the provider for {idle:.3f} s (stall_timeout_s={stall})",
                    retryable=True,
                    source="limit",
                )
            )
        else:
            self._timers.append(self._loop.call_at(self._loop.time() + stall - idle, self._on_stall_check))

    def _stamp(self, part: object, seq: int, now: float) -> Event | None:
        """Give a provider's event its envelope; None when it is the provider's own terminal."""
        if isinstance(part, Done | Error):
            if self._stop is None:
                self._stop = part
            return None
        if not isinstance(part, EventBase) or isinstance(part, Start):
            raise _BadPart(
                f"provider {self.provider!r} yielded {part!r}; expected str, an event without "
                "envelope, Done or Error (never Start: the engine emits it)"
            )
        return msgspec.structs.replace(part, stream_id=self.stream_id, seq=seq, ts=now)  # type: ignore[return-value]

    async def _run(self) -> Done | Error:
        sid = self.stream_id
        builder = self._builder
        append = self._writer.append
        deliver = self._dispatcher.deliver
        text_parts = builder.text_parts
        delta = builder.delta
        add = builder.add
        max_tokens = self.limits.max_output_tokens or _UNBOUNDED
        agen: AsyncIterator[Any] | None = None
        seq = 0
        t0 = builder.start_ts
        self._last_ts = t0
        self._started = True
        try:
            start = Start(model=builder.model, request_id=self.request_id, meta=self._meta, stream_id=sid, seq=0, ts=t0)
            append(start)
            r = deliver(start)
            if r is not None:
                await r
            if self._stop is not None:  # cancelled before it started
                return await self._finish(agen, seq)
            self._arm_limits(t0)
            agen = self.provider.stream(self.request)
            async for part in agen:
                if self._stop is not None:
                    break
                now = time()
                if now < self._last_ts:
                    now = self._last_ts  # ts never goes backwards, even if the wall clock does
                self._last_ts = now
                seq += 1
                if part.__class__ is str:
                    event: Event = TextDelta(part, stream_id=sid, seq=seq, ts=now)
                    text_parts.append(part)
                    delta(now)
                else:
                    stamped = self._stamp(part, seq, now)
                    if stamped is None:
                        seq -= 1
                        break
                    event = stamped
                    cls = event.__class__
                    if cls in _DELTA_TYPES:
                        delta(now)
                    elif cls is ToolCallStart:
                        delta(now, 0)
                    add(event)
                append(event)
                r = deliver(event)
                if r is not None:
                    await r
                if self._stop is not None:  # a strict observer failed, or a limit fired during delivery
                    break
                if builder.deltas >= max_tokens:
                    self._stop = Done(finish_reason="length", reason=f"max_output_tokens={max_tokens} reached")
                    break
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if self._stop is None:
                self._stop = Done(finish_reason="cancelled", reason="the stream's task was cancelled")
        except _BadPart as exc:
            if self._stop is None:
                self._stop = Error(code="bad_provider_output", message=str(exc), source="provider")
        except ProviderError as exc:
            if self._stop is None:
                self._stop = Error(code=exc.code, message=str(exc), retryable=exc.retryable, source="provider")
        except Exception as exc:
            if self._stop is None:
                self._stop = Error(code="provider_error", message=f"{type(exc).__name__}: {exc}", source="provider")
        return await self._finish(agen, seq)

    async def _finish(self, agen: AsyncIterator[Any] | None, seq: int) -> Done | Error:
        self._terminating = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if agen is not None:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # a provider failing to close still gets a terminal event
                    if self._stop is None:
                        self._stop = Error(
                            code="provider_error", message=f"closing the provider failed: {exc}", source="provider"
                        )
        await self._dispatcher.resume_interrupted()
        builder = self._builder
        now = max(time(), self._last_ts)
        stop = self._stop
        sid = self.stream_id
        terminal: Done | Error
        if isinstance(stop, Error):
            terminal = msgspec.structs.replace(stop, stream_id=sid, seq=seq + 1, ts=now)
        else:
            usage = stop.usage if stop is not None and stop.usage is not None else builder.usage
            if usage is not None:
                builder.usage = usage
            if stop is not None:
                reason = stop.finish_reason
            elif builder.tool_calls:
                reason = "tool_calls"
            else:
                reason = "stop"
            terminal = Done(
                finish_reason=reason,
                usage=usage,
                stats=builder.stats(now),
                reason=stop.reason if stop is not None else None,
                stream_id=sid,
                seq=seq + 1,
                ts=now,
            )
        builder.terminal = terminal
        self._writer.append(terminal)
        try:
            r = self._dispatcher.deliver(terminal)
            if r is not None:
                await r
        finally:
            await self._writer.flush()
            await self._dispatcher.aclose()
        return terminal


def _new_handle(
    provider: Provider,
    request: str | Request,
    *,
    observers: Iterable[object],
    limits: Limits | None,
    log: EventLog | None,
    stream_id: str | None,
    request_id: str | None,
    meta: dict[str, Any] | None,
    strict: bool,
    on_observer_error: ObserverErrorHook | None,
    iterator: EventIterator | None = None,
    tools: Any = None,
    max_steps: int = 8,
) -> StreamHandle:
    if tools is not None:
        # The agent loop wraps the provider (tools layer, above the engine; imported on use).
        from tokenwire.agent import Agent

        provider = Agent(provider, tools, max_steps=max_steps)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "tokenwire.generate() needs a running event loop; from synchronous code use "
            "tokenwire.stream_sync() or tokenwire.run_sync()"
        ) from None
    if not isinstance(provider, Provider):
        raise TypeError(f"{provider!r} is not a provider: it needs a 'model' attribute and a 'stream(request)' method")
    req = as_request(request)
    lim = limits if limits is not None else _NO_LIMITS
    if lim.max_output_tokens is not None and req.max_tokens is None:
        req = msgspec.structs.replace(req, max_tokens=lim.max_output_tokens)
    all_observers = list(observers)
    if iterator is not None:
        all_observers.append(iterator)
    return StreamHandle(
        provider,
        req,
        observers=all_observers,
        limits=lim,
        log=log if log is not None else MemoryLog(max_streams=1),
        stream_id=stream_id or uuid.uuid4().hex,
        request_id=request_id or uuid.uuid4().hex,
        meta=meta or {},
        strict=strict,
        on_observer_error=on_observer_error,
        iterator=iterator,
    )


def generate(
    provider: Provider,
    request: str | Request,
    *,
    observers: Iterable[object] = (),
    limits: Limits | None = None,
    log: EventLog | None = None,
    stream_id: str | None = None,
    request_id: str | None = None,
    meta: dict[str, Any] | None = None,
    strict: bool = False,
    on_observer_error: ObserverErrorHook | None = None,
    tools: Any = None,
    max_steps: int = 8,
) -> StreamHandle:
    """Start a stream now, in the background of the running event loop, and return its handle.

    ``observers``: observer objects, plain callables, :func:`tokenwire.queued` policies or
    :class:`tokenwire.EventIterator` instances. ``log``: where events are appended (default: a
    private in-memory ring). ``strict``: an observer failure ends the stream with an error instead
    of being isolated. ``tools`` (tools, plain functions or a Toolset) runs the agent loop
    (:class:`tokenwire.agent.Agent`) for up to ``max_steps`` model turns.

    >>> import asyncio, tokenwire
    >>> from tokenwire.providers import Scripted
    >>> async def main():
    ...     handle = tokenwire.generate(Scripted(["4", "2"]), "6*7?", limits=tokenwire.Limits(max_duration_s=5))
    ...     return (await handle).text
    >>> asyncio.run(main())
    '42'
    """
    return _new_handle(
        provider,
        request,
        observers=observers,
        limits=limits,
        log=log,
        stream_id=stream_id,
        request_id=request_id,
        meta=meta,
        strict=strict,
        on_observer_error=on_observer_error,
        tools=tools,
        max_steps=max_steps,
    )


async def run(provider: Provider, request: str | Request, **kwargs: Any) -> Response:
    """Run a stream to its end and return the :class:`~tokenwire.Response` (same arguments as :func:`generate`)."""
    return await generate(provider, request, **kwargs)


@contextlib.asynccontextmanager
async def stream(
    provider: Provider,
    request: str | Request,
    *,
    observers: Iterable[object] = (),
    limits: Limits | None = None,
    maxsize: int = 1024,
    **kwargs: Any,
) -> AsyncIterator[StreamHandle]:
    """Open a stream and iterate its events; leaving the block cancels it if it is still running.

    The iterator is registered before the start, so it sees every event from ``start``; it is
    bounded by ``maxsize`` and the producer waits for a slow reader. Other arguments are those of
    :func:`generate`.

    >>> import asyncio, tokenwire
    >>> from tokenwire.providers import Scripted
    >>> async def main():
    ...     async with tokenwire.stream(Scripted(["a", "b", "c"], interval_s=0.01), "hi") as s:
    ...         async for event in s:
    ...             if event.type == "text.delta" and event.text == "b":
    ...                 s.cancel("seen enough")
    ...     return s.result().finish_reason, s.result().text
    >>> asyncio.run(main())
    ('cancelled', 'ab')
    """
    handle = _new_handle(
        provider,
        request,
        observers=observers,
        limits=limits,
        iterator=EventIterator(maxsize=maxsize, overflow="block"),
        log=kwargs.pop("log", None),
        stream_id=kwargs.pop("stream_id", None),
        request_id=kwargs.pop("request_id", None),
        meta=kwargs.pop("meta", None),
        strict=kwargs.pop("strict", False),
        on_observer_error=kwargs.pop("on_observer_error", None),
        **kwargs,
    )
    try:
        yield handle
    finally:
        if not handle.done():
            handle.cancel("stream() block exited")
        await handle.wait()


class SyncStream(Iterator[Event]):
    """Synchronous iteration over a stream (see :func:`stream_sync`).

    The stream runs on a private event loop in a worker thread, so this works from plain scripts
    and from code that already runs an event loop (Jupyter). Events cross the thread in batches.
    Closing (``close()``, leaving a ``with`` block, ``break`` then garbage collection) cancels the
    stream if it is still running and joins the thread.
    """

    def __init__(self, provider: Provider, request: str | Request, kwargs: dict[str, Any]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tokenwire-sync-stream", daemon=True)
        self._thread.start()
        self._buffer: deque[Event] = deque()
        self._ended = False
        self._closed = False
        self._pending: concurrent.futures.Future[list[Event]] | None = None
        self._iterator = EventIterator(maxsize=kwargs.pop("maxsize", 1024), overflow="block")

        async def start() -> StreamHandle:
            return _new_handle(
                provider,
                request,
                observers=kwargs.pop("observers", ()),
                limits=kwargs.pop("limits", None),
                log=kwargs.pop("log", None),
                stream_id=kwargs.pop("stream_id", None),
                request_id=kwargs.pop("request_id", None),
                meta=kwargs.pop("meta", None),
                strict=kwargs.pop("strict", False),
                on_observer_error=kwargs.pop("on_observer_error", None),
                iterator=self._iterator,
                **kwargs,
            )

        try:
            self.handle: StreamHandle = self._call(start())
        except BaseException:
            self._stop_loop()
            raise
        _track_open(self)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Event:
        if not self._buffer:
            if self._ended or self._closed:
                raise StopIteration
            # Keep the request across a KeyboardInterrupt: a second request would race the first
            # for the same events.
            if self._pending is None:
                self._pending = asyncio.run_coroutine_threadsafe(self._iterator.next_batch(), self._loop)
            batch = self._pending.result()
            self._pending = None
            if not batch:
                self._ended = True
                self.close()
                raise StopIteration
            self._buffer.extend(batch)
        event = self._buffer.popleft()
        if event.__class__ in TERMINAL_TYPES:
            self._ended = True
            self.close()
        return event

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the stream; iteration still ends with its terminal event."""
        if not self._closed:
            self.handle.cancel(reason)

    def result(self) -> Response:
        """The aggregated response so far (complete after the terminal event)."""
        return self.handle.result()

    def close(self) -> None:
        """Cancel the stream if running, wait for its end, stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        _OPEN_SYNC_STREAMS.discard(self)
        try:
            if not self.handle.done():
                self.handle.cancel("sync iterator closed")
            self._call(self.handle.wait())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if sys.is_finalizing():  # the loop's daemon thread can no longer run: waiting would hang
            return
        with contextlib.suppress(Exception):
            self.close()


# Sync streams still open when the interpreter exits are closed (cancelled, their terminal event
# awaited) before Python joins its threads; otherwise a provider's worker would keep generating
# for a stream nobody reads, and the exit would wait for it.
_OPEN_SYNC_STREAMS: weakref.WeakSet[SyncStream] = weakref.WeakSet()


def _track_open(stream: SyncStream) -> None:
    _OPEN_SYNC_STREAMS.add(stream)
    at_exit(_close_open_sync_streams)


def _close_open_sync_streams() -> None:
    for stream in list(_OPEN_SYNC_STREAMS):
        with contextlib.suppress(Exception):
            stream.close()


def stream_sync(provider: Provider, request: str | Request, **kwargs: Any) -> SyncStream:
    """Iterate a stream's events from synchronous code (also inside Jupyter's running loop).

    Takes the arguments of :func:`generate` plus ``maxsize``. Use it as an iterator, ideally in a
    ``with`` block so an early ``break`` cancels the stream at once.

    >>> import tokenwire
    >>> from tokenwire.providers import Scripted
    >>> with tokenwire.stream_sync(Scripted(["Hi", "!"]), "hello") as events:
    ...     print([(ev.seq, ev.type) for ev in events])
    [(0, 'start'), (1, 'text.delta'), (2, 'text.delta'), (3, 'done')]
    """
    return SyncStream(provider, request, kwargs)


def run_sync(provider: Provider, request: str | Request, **kwargs: Any) -> Response:
    """Run a stream to its end from synchronous code; returns the :class:`~tokenwire.Response`.

    >>> import tokenwire
    >>> from tokenwire.providers import Scripted
    >>> tokenwire.run_sync(Scripted(["Hi"]), "hello").text
    'Hi'
    """
    with stream_sync(provider, request, **kwargs) as s:
        for _ in s:
            pass
        return s.result()
