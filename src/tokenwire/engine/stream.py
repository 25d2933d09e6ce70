"""The stream engine: runs a provider under limits, appends every event to the stream's log.

Whatever the provider does, a stream is ``start`` (seq 0) → gapless non-terminal events with
non-decreasing ``ts`` → exactly one ``done`` or ``error``, and nothing after it. The rules live in
the sans-I/O :class:`~tokenwire.core.lifecycle.Lifecycle`; this module is its async shell: it reads the
provider, appends what the core stamps to the :class:`~tokenwire.log.EventLog` (the one append
path: observers, iterators and server connections all read that log) and runs the one timer the
core's deadline asks for.

The public entry points (``generate``, ``stream``, ``stream_sync``, ``run``, ``run_sync``) are in
:mod:`tokenwire.api`, which adds the agent loop when tools are given.

>>> import asyncio
>>> from tokenwire.providers import Scripted
>>> async def main():
...     handle = start_stream(Scripted(["Hello", " world"]), "Say hi")
...     return (await handle).text
>>> asyncio.run(main())
'Hello world'
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Generator, Iterable
from contextvars import ContextVar
from time import time
from typing import Any

import msgspec

from tokenwire.consumers.delivery import EventIterator
from tokenwire.consumers.observers import Dispatcher
from tokenwire.core.lifecycle import Lifecycle
from tokenwire.core.limits import Limits
from tokenwire.core.provider import Checkpoint, Provider, Suspend, model_name
from tokenwire.core.request import Request, as_request
from tokenwire.core.response import Response
from tokenwire.engine.options import RunOptions
from tokenwire.errors import LogUnavailable, RunSuspended
from tokenwire.events import Done, Error, ErrorSource, Event, Step
from tokenwire.log import default_log
from tokenwire.telemetry.logs import current_stream
from tokenwire.telemetry.metrics import Metrics

__all__ = ["StreamHandle", "current_run", "start_stream"]

_NO_LIMITS = Limits()
_YIELD_MASK = 255


class _EngineFault(Exception):
    """Wraps an exception raised by the engine's own per-event work (not by the provider)."""


class StreamHandle:
    """A running (or finished) stream. Returned by :func:`tokenwire.generate`.

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
        options: RunOptions,
    ):
        observers = list(observers)
        stream_id = options.stream_id or uuid.uuid4().hex
        request_id = options.request_id or uuid.uuid4().hex
        limits = options.limits if options.limits is not None else _NO_LIMITS
        log = options.log if options.log is not None else default_log()
        self.options = options
        self.stream_id = stream_id
        self.request_id = request_id
        self.provider = provider
        self.request = request
        self.limits = limits
        self.log = log
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        first = next((o for o in observers if isinstance(o, EventIterator)), None)
        self._iterator = weakref.ref(first) if first is not None else None
        """The first iterator among the observers, weakly: ``async for`` reads through it (its
        cursor is registered before the start, so it sees every event, and a slow reader holds
        the producer); an iterator nobody else references still goes with its cursor."""
        self._started = False
        self._ready = asyncio.Event()
        self._terminating = False
        self._timer: asyncio.TimerHandle | None = None
        self._core = Lifecycle(
            stream_id,
            model=model_name(provider),
            now=time(),
            limits=limits,
            request_id=request_id,
            meta=options.meta or {},
            parent=options.parent,
            prior=options.prior,
        )
        self.suspended: Suspend | None = None
        """Why and until when the run suspended (it ended here without a terminal event: a
        durable run waiting in the log for an approval, or handed to another node); None otherwise."""
        self._suspend_at: Suspend | None = None
        self._dispatcher = Dispatcher(
            observers,
            on_observer_error=options.on_observer_error,
            strict=options.strict,
            on_strict_failure=self._on_strict_failure,
            drain_timeout_s=options.drain_timeout_s,
        )
        at = options.prior[-1].seq + 1 if options.prior else 0
        self._writer = (
            log.open(stream_id, at=at, token=options.lease_token) if options.lease_token else log.open(stream_id)
        )
        self._dispatcher.attach(self._writer, at)
        self._task: asyncio.Task[Done | Error] = self._loop.create_task(
            self._run(), name=f"tokenwire-stream-{stream_id}"
        )

    # -- control -------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> None:
        """Stop the stream; it ends with ``done(cancelled)``. A no-op once it is ending."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.cancel, reason)
            return
        if not self._terminating and self._core.cancel(reason):
            self._interrupt()

    def fail(self, code: str, message: str, *, source: ErrorSource = "internal", retryable: bool = False) -> None:
        """End the stream with an ``error`` event (a server shutting down, an operator's kill switch).

        Like :meth:`cancel` it closes the provider and is a no-op once the stream is ending.
        """
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(lambda: self.fail(code, message, source=source, retryable=retryable))
            return
        if not self._terminating and self._core.fail(code, message, source=source, retryable=retryable):
            self._interrupt()

    def suspend(self, reason: str, until: float) -> None:
        """Stop producing a durable run without ending it (a node handing its runs over on
        shutdown): it waits in the log, due for a supervisor at wall time ``until``. A no-op once
        the stream is ending or if it is not durable."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.suspend, reason, until)
            return
        if self.options.lease_token is not None and not self._terminating and self._core.stop is None:
            self._suspend_at = Suspend(reason, until)
            self._interrupt()

    async def settled(self) -> None:
        """Wait until the stream's producer is done here (ended, or suspended), raising nothing."""
        await asyncio.wait([self._task])

    def _interrupt(self) -> None:
        # Interrupt whatever the run awaits. Not before it started (the coroutine would die before
        # its first line, without a terminal event) and not from inside it (a strict observer
        # failure): there the run loop sees ``stop`` before the next event.
        if self._started and not self._terminating and asyncio.current_task() is not self._task:
            self._task.cancel()

    def _on_strict_failure(self, observer: object, exc: BaseException) -> None:
        self.fail("observer_failed", f"observer {observer!r} raised {type(exc).__name__}: {exc} (strict=True)")

    # -- results -------------------------------------------------------------------------------

    def done(self) -> bool:
        """True once the terminal event was delivered and the stream released its resources."""
        return self._task.done()

    async def ready(self) -> None:
        """Wait until the stream exists in its log (``start`` appended and flushed): from then on
        any reader, on any node sharing the log, can read it. Servers await this before handing
        out the stream id."""
        if not self._ready.is_set():
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self._ready.wait())
            ended: asyncio.Future[Any] = asyncio.shield(self._task)  # a stream that ended first is ready too
            ended.add_done_callback(_retrieved)  # a suspended run's RunSuspended is wait()'s to raise
            try:
                await asyncio.wait([waiter, ended], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

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
        return self._core.builder.build()

    @property
    def terminal(self) -> Done | Error | None:
        """The terminal event, once emitted."""
        return self._core.terminal

    @property
    def seq(self) -> int:
        """The seq of the latest event the stream made (0: ``start``)."""
        return self._core.seq

    @property
    def metrics(self) -> Metrics:
        """The stream's statistics as the engine measures them (``done.stats`` comes from these)."""
        return self._core.metrics

    async def events(self, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        """Read this stream's events from the log, from ``from_seq`` on (late join, resume).

        Reading starts once the stream is :meth:`ready` (on a shared log such as Redis the
        ``start`` event is written asynchronously), so it may be called right after ``generate``.
        """
        await self.ready()
        async for event in self.log.read(self.stream_id, from_seq, follow=follow):
            yield event

    def __aiter__(self) -> AsyncIterator[Event]:
        """Every event from seq 0.

        Through the first :class:`~tokenwire.EventIterator` among the observers (what
        :func:`tokenwire.stream` registers: a cursor attached before the start, bounded, the
        producer waits for a slow reader); otherwise through the log.
        """
        it = self._iterator() if self._iterator is not None else None
        self._iterator = None
        return it if it is not None else self.events()

    # -- the run -------------------------------------------------------------------------------

    def _arm(self) -> None:
        """(Re-)arm the one timer at the core's deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._core.deadline
        if deadline is not None:
            loop = self._loop
            self._timer = loop.call_at(loop.time() + max(0.0, deadline - time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._terminating:
            return
        if self._core.tick(time()):
            self._interrupt()
        else:
            self._arm()

    async def _run(self) -> Done | Error:
        core = self._core
        append = self._writer.append
        agen: AsyncIterator[Any] | None = None
        self._started = True
        current_stream.set(self.stream_id)  # this task's log lines name the stream (telemetry.logs)
        current_run.set(self)  # the runs a tool starts from here are this one's children
        try:
            if not self.options.prior:  # a run carried on from its log has its start already
                r = append(core.start())
                if r is not None:
                    await r
            await self._writer.flush()  # start is durable (a shared log: readable on every node)
            if self._writer.failure is not None:  # it is not: the stream ends now, before anyone reads it
                raise _EngineFault(self._writer.failure) from self._writer.failure
            self._ready.set()
            core.delivered(time())
            if core.stop is None:  # not cancelled before it started
                self._arm()
                agen = self.provider.stream(self.request)
                feed = core.feed
                delivered = core.delivered
                track = core.tracks_delivery  # without stall/first-token/token limits: no second clock read
                async for part in agen:
                    try:  # free unless it raises (3.11): what fails here is ours, not the provider's
                        event = feed(part, time())
                        if event is None:  # the provider's own end, a bad part, or a control part
                            if core.stop is not None or await self._control(part):
                                break
                            continue
                        r = append(event)
                        if r is not None:
                            await r
                            if track and (delivered(time()) or self._timer is None):
                                self._arm()
                        elif track and delivered(time()):
                            self._arm()
                        if core.stop is not None:  # the token cap, a strict observer, a limit during delivery
                            break
                        if core.seq & _YIELD_MASK == 0:
                            # Every 256 events, let the loop run: a provider that never awaits (a
                            # replay, a fast local model) must not hold every other stream and
                            # connection for its whole answer.
                            await asyncio.sleep(0)
                    except Exception as exc:
                        raise _EngineFault(exc) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if self._suspend_at is None:  # a suspension interrupts too; it ends no stream
                core.cancel("the stream's task was cancelled")  # no-op when a cancel or limit caused it
        except _EngineFault as fault:  # the log, or the engine itself: never the provider's fault
            cause = fault.__cause__
            if isinstance(cause, LogUnavailable):
                core.fail("log_unavailable", str(cause), source="transport", retryable=True)
            else:
                core.fail("internal_error", f"{type(cause).__name__}: {cause}", source="internal")
        except Exception as exc:
            core.provider_failed(exc)
        return await self._finish(agen)

    async def _control(self, part: object) -> bool:
        """Carry out a control part (:mod:`tokenwire.core.provider`); True: stop reading the provider."""
        if isinstance(part, Checkpoint):
            await self._writer.flush()
            failure = self._writer.failure
            if failure is not None:  # not durable (fenced out, or the log is gone): the tool must not start
                raise _EngineFault(failure) from failure
            part.reached()
            return False
        if isinstance(part, Suspend):
            if self.options.lease_token is None:
                self._core.fail("cannot_suspend", f"{part.reason}, but this run is not durable", source="internal")
                return True
            # Readers are told (a client can end its request on it and answer): step suspend.
            detail = {"reason": part.reason, "until": round(part.until, 3)}
            event = self._core.feed(Step(name="suspend", status="started", detail=detail), time())
            if event is not None and (r := self._writer.append(event)) is not None:
                await r
            self._suspend_at = part
            return True
        return False

    async def _suspend(self, agen: AsyncIterator[Any] | None, suspend: Suspend) -> None:
        """End this producer without a terminal: the run waits in the log (see :class:`Suspend`)."""
        if agen is not None:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):  # the run moves on elsewhere whatever its provider does
                    await aclose()
        dispatcher = self._dispatcher
        drained_by = self._loop.time() + dispatcher.drain_timeout_s
        await dispatcher.settle(dispatcher.resume_interrupted(), drained_by)
        await self._writer.flush()
        if await self._writer.suspend(suspend.until):
            self.suspended = suspend
        await dispatcher.aclose(drained_by)

    async def _finish(self, agen: AsyncIterator[Any] | None) -> Done | Error:
        self._terminating = True
        suspend = self._suspend_at
        if suspend is not None and self._core.stop is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            await self._suspend(agen, suspend)
            if self.suspended is not None:
                raise RunSuspended(self.stream_id, suspend.reason)
            self._core.fail(
                "log_unavailable", "the run could not be suspended: another node holds it", source="transport"
            )
            agen = None
        core = self._core
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if agen is not None:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # a provider failing to close still gets a terminal event
                    core.fail("provider_error", f"closing the provider failed: {exc}", source="provider")
        dispatcher = self._dispatcher
        # One budget for everything the end waits on its observers for: an interrupted delivery,
        # the terminal event's, queued observers draining. However many are stuck, they have had
        # drain_timeout_s in all (the provider's own close comes before, bounded by the provider).
        drained_by = self._loop.time() + dispatcher.drain_timeout_s
        await dispatcher.settle(dispatcher.resume_interrupted(), drained_by)
        terminal = core.finish(time())
        r = self._writer.append(terminal)
        try:
            if r is not None:  # bounded: an observer that never returns cannot hang the stream's end
                await dispatcher.settle(r, drained_by)
        finally:
            await self._writer.flush()
            await dispatcher.aclose(drained_by)
        return terminal


current_run: ContextVar[StreamHandle | None] = ContextVar("tokenwire_run", default=None)
"""The stream whose producer runs the current code (its provider, an agent's tools), or None."""


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def start_stream(
    provider: Provider,
    request: str | Request,
    *,
    observers: Iterable[object] = (),
    options: RunOptions | None = None,
) -> StreamHandle:
    """Start a stream on the running loop (no agent loop: see :func:`tokenwire.generate`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "tokenwire.generate() needs a running event loop; from synchronous code use "
            "tokenwire.stream_sync() or tokenwire.run_sync()"
        ) from None
    if not isinstance(provider, Provider):
        raise TypeError(f"{provider!r} is not a provider: it needs a 'model' attribute and a 'stream(request)' method")
    opts = options or RunOptions()
    req = as_request(request)
    lim = opts.limits
    if lim is not None and lim.max_output_tokens is not None and req.max_tokens is None:
        req = msgspec.structs.replace(req, max_tokens=lim.max_output_tokens)
    return StreamHandle(provider, req, observers=observers, options=opts)
