"""The one bridge from synchronous code into an event loop: anyio's blocking portal (an asyncio
loop in a worker thread) behind :class:`~tokenwire.engine.SyncStream` and the sync clients.

A bridge still open when the interpreter starts to exit is closed then (its loop stopped, its
thread joined), so forgetting ``close()`` never hangs the exit.

>>> import asyncio
>>> bridge = Bridge("demo")
>>> bridge.call(asyncio.sleep, 0, "slept")
'slept'
>>> bridge.close()
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from tokenwire.core.shutdown import at_exit

__all__ = ["Bridge"]

T = TypeVar("T")


class Bridge:
    """An event loop in a worker thread that synchronous code calls into (``name`` names the thread)."""

    def __init__(self, name: str):
        self._cm = start_blocking_portal("asyncio", name=name)
        self._portal: BlockingPortal = self._cm.__enter__()
        self._closed = False
        _OPEN.add(self)
        at_exit(_close_open_bridges)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the loop and return its result (blocking)."""
        return self._portal.call(fn, *args)

    def submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` on the loop now; its future (it survives a KeyboardInterrupt)."""
        return self._portal.start_task_soon(fn, *args)

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        with contextlib.suppress(Exception):
            self._portal.call(self._portal.stop, True)
        self._cm.__exit__(None, None, None)


_OPEN: weakref.WeakSet[Bridge] = weakref.WeakSet()


def _close_open_bridges() -> None:
    for bridge in list(_OPEN):
        with contextlib.suppress(Exception):
            bridge.close()
