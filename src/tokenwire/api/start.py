"""The public entry points: start a run, iterate it, or run it to the end — async or sync.

Each is the engine (:mod:`tokenwire.engine`) plus, when ``tools`` are given, the agent loop
(:class:`tokenwire.tools.Agent`) wrapped around the provider. This module sits above both, so the
engine never imports the tools layer.

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

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from tokenwire.consumers.delivery import EventIterator
from tokenwire.consumers.observers import ObserverErrorHook
from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request
from tokenwire.core.response import Response
from tokenwire.engine import RunOptions, StreamHandle, SyncStream, start_stream
from tokenwire.log import EventLog
from tokenwire.telemetry.otel import child_observer
from tokenwire.tools import Agent, ToolOptions
from tokenwire.tools.tree import current_call

__all__ = ["generate", "run", "run_sync", "stream", "stream_sync"]


def generate(
    provider: Provider,
    request: str | Request,
    *,
    observers: Iterable[object] = (),
    limits: Limits | None = None,
    tools: Any = None,
    tool_options: ToolOptions | None = None,
    log: EventLog | None = None,
    stream_id: str | None = None,
    request_id: str | None = None,
    meta: dict[str, Any] | None = None,
    strict: bool = False,
    on_observer_error: ObserverErrorHook | None = None,
    drain_timeout_s: float = 5.0,
) -> StreamHandle:
    """Start a stream now, in the background of the running event loop, and return its handle.

    ``observers``: observer objects, plain callables, :func:`tokenwire.queued` policies or
    :class:`tokenwire.EventIterator` instances. ``limits``: time, stall and token bounds.
    ``tools`` (tools, plain functions or a Toolset) runs the agent loop
    (:class:`tokenwire.tools.Agent`) under ``tool_options`` (:class:`tokenwire.ToolOptions`:
    ``max_steps``, concurrency, timeouts, approvals). The rest are the stream's
    :class:`~tokenwire.engine.options.RunOptions`: ``log`` (default: the process-wide log,
    :func:`tokenwire.log.default_log`), ids and ``meta`` for ``start``, ``strict`` (an observer
    failure ends the stream with an error instead of being isolated), ``on_observer_error``, and
    ``drain_timeout_s`` (how long, in total, the end of the stream waits for its observers: an
    observer still busy then is reported and skipped).

    Started by a tool of a running agent, the stream is a *child run* of the agent's run
    (:mod:`tokenwire.tools.tree`): its ``start`` names the parent, it goes to the parent's log,
    the parent's stream marks its start and end, and it ends with the tool call at the latest.

    >>> import asyncio, tokenwire
    >>> from tokenwire.providers import Scripted
    >>> async def main():
    ...     handle = tokenwire.generate(Scripted(["4", "2"]), "6*7?", limits=tokenwire.Limits(max_duration_s=5))
    ...     return (await handle).text
    >>> asyncio.run(main())
    '42'
    """
    options = RunOptions(
        limits=limits,
        log=log,
        stream_id=stream_id,
        request_id=request_id,
        meta=meta,
        strict=strict,
        on_observer_error=on_observer_error,
        drain_timeout_s=drain_timeout_s,
    )
    call = current_call()
    if call is not None:  # started by a running agent's tool: a child run (tokenwire.tools.tree)
        options = call.child_options(options)
        traced = child_observer(provider, request, call.call_id)  # its span under the call's
        if traced is not None:
            observers = [*observers, traced]
    if tools is not None:
        provider = Agent(provider, tools, tool_options)
    handle = start_stream(provider, request, observers=observers, options=options)
    if call is not None:
        call.adopt(handle)
    return handle


async def run(provider: Provider, request: str | Request, **kwargs: Any) -> Response:
    """Run a stream to its end and return the :class:`~tokenwire.Response` (same arguments as :func:`generate`)."""
    return await generate(provider, request, **kwargs)


@contextlib.asynccontextmanager
async def stream(
    provider: Provider,
    request: str | Request,
    *,
    maxsize: int = 1024,
    **kwargs: Any,
) -> AsyncIterator[StreamHandle]:
    """Open a stream and iterate its events; leaving the block cancels it if it is still running.

    The iterator's cursor is attached before the start, so it sees every event from ``start``; it
    is bounded by ``maxsize`` and the producer waits for a slow reader. Other arguments are those
    of :func:`generate`.

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
    observers = [*kwargs.pop("observers", ()), EventIterator(maxsize=maxsize, overflow="block")]
    handle = generate(provider, request, observers=observers, **kwargs)
    try:
        yield handle
    finally:
        if not handle.done():
            handle.cancel("stream() block exited")
        await handle.wait()


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
    return SyncStream(generate, provider, request, kwargs)


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
