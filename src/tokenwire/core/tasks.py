"""Owned background tasks: every task tokenwire starts belongs to a :class:`TaskSet` that cancels it.

A task set is a task group with the semantics a server needs: leaving it (``async with``, or
:meth:`TaskSet.aclose`) cancels what still runs when the block raised (or always, with
``aclose``) and waits for every task; the block's own exception propagates unchanged (asyncio's
``TaskGroup`` wraps it in an ``ExceptionGroup``, which every transport would have to unwrap); a
task that fails is logged with its traceback instead of tearing down its siblings — one broken
subscription must not end a connection's other subscriptions. Tasks that end leave the set at
once, so a long-lived owner (a connection, a server) holds only what runs.

>>> import asyncio
>>> async def main():
...     async with TaskSet("demo") as tasks:
...         t = tasks.start(asyncio.sleep(0, "done"), name="sleeper")
...     return t.result(), len(tasks)
>>> asyncio.run(main())
('done', 0)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TaskSet"]

T = TypeVar("T")

logger = logging.getLogger("tokenwire")


def stop_if_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` when the current task was cancelled and the cancel
    was lost on the way: in Python 3.11 ``asyncio.timeout`` (redis-py's socket timeouts use it)
    turns a cancel that meets its own expiry into ``TimeoutError``, which a retry loop catching
    ``OSError`` or ``Exception`` would take for an outage and retry for ever — and whoever
    cancelled it to shut down would wait for ever (and in 3.11 ``asyncio.wait_for`` may return a
    result that completed as the cancel came, dropping it). Every such loop calls this in its
    handler, and waits with :func:`pause`.

    >>> async def loop():
    ...     asyncio.current_task().cancel()
    ...     try:
    ...         raise TimeoutError  # what asyncio.timeout raised instead of the cancel
    ...     except OSError:
    ...         stop_if_cancelled()
    >>> try:
    ...     asyncio.run(loop())
    ... except asyncio.CancelledError:
    ...     print("stopped")
    stopped
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class TaskSet:
    """The owner of a group of tasks (per run, per connection, per server); see the module docstring."""

    def __init__(self, name: str):
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this set (on the running loop)."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self.name!r} is closed: no new task {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s of %s failed", task.get_name(), self.name, exc_info=task.exception())

    def cancel(self) -> None:
        """Cancel every task still running (without waiting)."""
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Wait until every task has ended (those started meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        """Cancel every task, wait for them, and take no more."""
        self._closed = True
        self.cancel()
        await self.wait()

    async def __aenter__(self) -> TaskSet:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self.cancel()
        try:
            await self.wait()
        except BaseException:  # the owner itself is cancelled while it waits: nothing may outlive it
            self.cancel()
            raise
        finally:
            self._closed = True
