"""What one connection may hold in the kernel, and cutting a connection that stopped reading —
whatever server hosts the app.

``tokenwire serve`` bounds every connection's kernel send buffer through its listening socket
(:func:`tokenwire.server.listen`); an application that mounts the app under its own uvicorn does
not, and Linux then autotunes each buffer upward until it holds a whole stream (megabytes a
reader that stopped reading). So the app bounds the buffer of each streaming connection itself
(``ServerConfig.send_buffer``): a reader that stops reading then holds back its own writer, which
falls behind the log and is disconnected (its client resumes); :class:`Link` also cuts a write
that makes no progress for ``ServerConfig.write_timeout_s``.

The socket is found best-effort: uvicorn runs each request (and each WebSocket) in a task whose
coroutine belongs to an object holding the connection's asyncio transport. Elsewhere (another
ASGI server) nothing is found and nothing is changed; bound the listening socket there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Link", "Watchdog", "current_transport"]


def current_transport(scope: Mapping[str, Any] | None = None) -> asyncio.Transport | None:
    """The transport of the connection the current task serves (uvicorn), or None — also for an
    HTTP/2 request (``scope``), whose connection carries other streams too."""
    if scope is not None and scope.get("type") == "http" and scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return None
    task = asyncio.current_task()
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    owner = frame.f_locals.get("self") if frame is not None else None
    transport = getattr(owner, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


class Link:
    """One streaming connection's transport, as far as the app can reach it: bound its kernel
    send buffer, cut it (abort: nothing more is flushed; the client resumes from its last seq)."""

    def __init__(self, transport: asyncio.Transport | None, task: asyncio.Task[Any] | None = None):
        self.transport = transport
        self.task = task
        """Where no transport is reachable (another server, HTTP/2): the task serving the
        connection, cancelled by :meth:`cut` instead."""
        self.cut_off = False
        """True once :meth:`cut` ran."""
        self.raw_chunks = False
        """True when the response body goes out as HTTP/1.1 chunks on ``transport``, so the app
        may write a chunk to it itself (:mod:`tokenwire.server.fanout`)."""

    @classmethod
    def here(cls, send_buffer: int | None, scope: Mapping[str, Any] | None = None) -> Link:
        """The current connection, its send buffer bounded to ``send_buffer`` bytes (None: left as is)."""
        link = cls(current_transport(scope), asyncio.current_task())
        if send_buffer is not None:
            link.bound(send_buffer)
        return link

    def bound(self, size: int) -> None:
        """Set ``SO_SNDBUF`` (which also stops its autotuning) unless it is already that small."""
        sock: Any = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return
        with contextlib.suppress(OSError):  # a socket already closed, or not TCP
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 2 * size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def cut(self) -> None:
        """Drop the connection now (what is queued for it is discarded), or end the task that
        serves it where the transport is out of reach."""
        if self.cut_off:
            return
        self.cut_off = True
        if self.transport is not None:
            if not self.transport.is_closing():
                self.transport.abort()
        elif self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class Watchdog:
    """Calls ``on_stall`` when a write has made no progress for ``timeout_s``: one timer per
    connection, armed when a write starts and re-armed lazily (a timeout around every write
    would cost microseconds per event; this costs a clock read).

    >>> # dog = Watchdog(30.0, link.cut); dog.writing(); await send(frame); dog.wrote()
    """

    __slots__ = ("_handle", "_loop", "_on_stall", "_since", "_timeout", "stalled")

    def __init__(self, timeout_s: float, on_stall: Callable[[], None]):
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout_s
        self._on_stall = on_stall
        self._since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.stalled = False
        """True once a write stalled (``on_stall`` ran)."""

    def writing(self) -> None:
        """A write starts."""
        self._since = now = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._timeout, self._check)

    def wrote(self) -> None:
        """The write is done."""
        self._since = None

    def _check(self) -> None:
        self._handle = None
        since = self._since
        if since is None:
            return  # no write in progress: the next one re-arms
        due = since + self._timeout
        if self._loop.time() >= due:
            self.stalled = True
            self._on_stall()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
