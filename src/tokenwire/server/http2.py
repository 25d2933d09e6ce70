"""The app over HTTP/2, served by hypercorn (extra ``http2``): h2 over TLS (``certfile`` and
``keyfile``; ALPN offers h2 and http/1.1) or h2c with prior knowledge on plaintext (what a client
on loopback or behind a TLS-terminating proxy speaks), HTTP/1.1 on the same port either way.

Every SSE stream of a client is one HTTP/2 stream of one connection: a page or service reading
many runs needs one TCP connection, not one per run (HTTP/1.1 browsers stop at six per host).
``tokenwire serve --http2`` runs it; shutdown is the same as uvicorn's (runs get the grace
period, then the server stops).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ReadBodyFirst", "serve_http2"]


class ReadBodyFirst:
    """ASGI middleware: read each HTTP request's body (up to ``limit`` bytes) before the app runs.

    hypercorn 0.18's HTTP/2 drops the whole connection — every stream on it — when a request's
    body frames arrive after its response ended (``KeyError`` on ``DataReceived`` for a closed
    stream; it handles the late ``StreamEnded`` but not the data). A client such as httpx sends an
    empty ``DATA`` frame to end a body-less POST; an endpoint that answers without reading it
    (cancel) then took down the other 99 streams. Reading first closes that window; later
    ``receive`` calls (a client leaving an SSE stream) reach the app as before.
    """

    def __init__(self, app: Any, limit: int = 2_000_000):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = [], True
        size = 0
        first: dict[str, Any] | None = None
        while more and size <= self.limit:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client left before its body was read
                break
            chunk = message.get("body", b"")
            body.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        pending = [first or {"type": "http.request", "body": b"".join(body), "more_body": more}]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def serve_http2(
    app: Any,
    sock: socket.socket,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
    max_concurrent_streams: int = 1000,
) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGTERM or SIGINT; ``drain`` runs first (the
    server ends its streams), then hypercorn closes connections."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    if certfile:
        config.certfile, config.keyfile = certfile, keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    config.h2_max_concurrent_streams = max_concurrent_streams
    config.accesslog = None  # paths carry ?token=: the app's redacting handlers log what is logged
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopping = False
    tasks: set[asyncio.Task[None]] = set()

    def on_signal() -> None:
        nonlocal stopping
        if stopping:
            stop.set()  # a second signal: now
            return
        stopping = True

        async def shutdown() -> None:
            if drain is not None:
                await drain()
            stop.set()

        tasks.add(loop.create_task(shutdown()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await serve(ReadBodyFirst(app), config, shutdown_trigger=stop.wait)
