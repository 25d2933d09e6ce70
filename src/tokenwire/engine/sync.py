"""Synchronous iteration over a stream: the bridge from plain (or Jupyter) code to the engine.

The stream runs on a private event loop in a worker thread (:class:`~tokenwire.core.bridge.Bridge`,
anyio's blocking portal); events cross the thread in batches.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> with tokenwire.stream_sync(Scripted(["Hi"]), "hello") as events:
...     [ev.type for ev in events]
['start', 'text.delta', 'done']
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from tokenwire.consumers.delivery import EventIterator
from tokenwire.core.bridge import Bridge
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request
from tokenwire.core.response import Response
from tokenwire.core.shutdown import at_exit
from tokenwire.engine.stream import StreamHandle
from tokenwire.events import TERMINAL_TYPES, Event

__all__ = ["SyncStream"]


class SyncStream(Iterator[Event]):
    """Synchronous iteration over a stream (see :func:`stream_sync`).

    The stream runs on a private event loop in a worker thread, so this works from plain scripts
    and from code that already runs an event loop (Jupyter). Events cross the thread in batches.
    Closing (``close()``, leaving a ``with`` block, ``break`` then garbage collection) cancels the
    stream if it is still running and joins the thread.
    """

    def __init__(self, start: Any, provider: Provider, request: str | Request, kwargs: dict[str, Any]):
        self._bridge = Bridge("tokenwire-sync-stream")
        self._buffer: deque[Event] = deque()
        self._ended = False
        self._closed = False
        self._pending: concurrent.futures.Future[Sequence[Event]] | None = None
        self._iterator = EventIterator(maxsize=kwargs.pop("maxsize", 1024), overflow="block")
        observers = [*kwargs.pop("observers", ()), self._iterator]

        async def open_on_loop() -> StreamHandle:
            handle: StreamHandle = start(provider, request, observers=observers, **kwargs)
            return handle

        try:
            self.handle: StreamHandle = self._bridge.call(open_on_loop)
        except BaseException:
            self._bridge.close()
            raise
        _track_open(self)

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Event:
        if not self._buffer:
            if self._ended or self._closed:
                raise StopIteration
            # Keep the request across a KeyboardInterrupt: a second request would race the first
            # for the same events.
            if self._pending is None:
                self._pending = self._bridge.submit(self._iterator.next_batch)
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
            self._bridge.call(self.handle.wait)
        finally:
            self._bridge.close()

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if sys.is_finalizing():  # the loop's thread can no longer run: waiting would hang
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
