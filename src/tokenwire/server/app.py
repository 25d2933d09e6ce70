"""The ASGI app: the run service under every transport, composed.

>>> from tokenwire.server import create_app
>>> from tokenwire.providers import Scripted
>>> app = create_app(providers={"scripted": Scripted(["Hi"])}, api_keys=["k"])

Mount it in a FastAPI or Starlette app (``parent.mount("/llm", app)``) or run it with
``tokenwire serve``. The routes are the native API's (:mod:`tokenwire.server.http`), the other
ecosystems' (:mod:`tokenwire.server.compat`), speech (:mod:`tokenwire.server.speech`) and the
WebSocket (:mod:`tokenwire.server.ws`); with ``ServerConfig.grpc_port`` the gRPC service runs
beside them. Each is a thin adapter over one :class:`~tokenwire.server.service.RunService`,
which the app keeps as ``app.state.tokenwire``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.log import EventLog
from tokenwire.server import background, compat, frontends, http, speech, ws
from tokenwire.server.schema import RunBody, ServerConfig
from tokenwire.server.service import RunService
from tokenwire.telemetry.otel import OTel
from tokenwire.tools import Toolset

try:
    from tokenwire.grpc.server import GrpcServer
except ImportError:  # the grpc extra is not installed: ServerConfig.grpc_port says so when set
    GrpcServer = None  # type: ignore[assignment,misc]

__all__ = ["SEND_BUFFER", "RunBody", "ServerConfig", "create_app", "listen"]

SEND_BUFFER = 65_536
"""Default kernel send buffer per connection (bytes; Linux doubles it for bookkeeping)."""


def listen(host: str, port: int, *, send_buffer: int = SEND_BUFFER, backlog: int = 2048) -> socket.socket:
    """A listening socket whose connections have a bounded kernel send buffer.

    Accepted sockets inherit ``SO_SNDBUF`` from it (Linux), so what one connection may have in
    flight is bounded: at most the send buffer in the kernel, uvicorn's 64 KiB write buffer, and
    one write (at most 512 SSE frames). A slow reader then holds back its own SSE writer, which
    falls behind the log and is disconnected past ``max_lag_events`` — instead of the kernel
    buffering megabytes per reader. ``tokenwire serve`` uses it; pass it to uvicorn as
    ``uvicorn.Server(config).run(sockets=[listen(host, port)])`` when you run your own.
    """
    sock = socket.create_server((host, port), backlog=backlog)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.set_inheritable(True)
    return sock


def create_app(
    *,
    providers: Mapping[str, Provider | Callable[[], Provider]],
    default_provider: str | None = None,
    tools: Toolset | Iterable[Any] | None = None,
    api_keys: Iterable[str] | None = None,
    secret: bytes | None = None,
    default_limits: Limits | None = None,
    config: ServerConfig | None = None,
    log: EventLog | None = None,
    otel: OTel | None = None,
) -> Starlette:
    """Build the tokenwire ASGI app.

    ``providers`` maps names (the ``provider`` field of a run) to providers or factories.
    ``api_keys``: keys allowed to create runs; ``None`` disables the check (local demos only).
    ``secret`` signs stream tokens (random per process by default: set it when several workers
    or restarts must accept the same tokens). ``config`` holds limits and timings. ``log`` is
    where runs append their events and where every reader reads them (default: the log
    ``config.log_url`` or ``TOKENWIRE_LOG`` names, else a :class:`~tokenwire.MemoryLog` bounded by
    ``config.max_runs`` and ``config.max_events``). ``otel``
    (:class:`~tokenwire.telemetry.otel.OTel`) traces every run as a child of its request's
    ``traceparent`` and records the GenAI metrics.
    """
    service = RunService(
        providers=providers,
        default_provider=default_provider,
        tools=tools,
        api_keys=api_keys,
        secret=secret,
        config=config,
        default_limits=default_limits,
        log=log,
        otel=otel,
    )
    cfg = service.config

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.providers.preload()  # ready means ready: the first request does not pay the model load
        service.durable.supervise()  # every node carries on the runs other nodes left (durable runs)
        if cfg.grpc_port is not None:
            if GrpcServer is None:
                raise RuntimeError("grpc_port needs the grpc extra: pip install 'tokenwire[grpc]'")
            service.grpc = GrpcServer(service, cfg.grpc_host, cfg.grpc_port)
            await service.grpc.start()
        yield
        await service.shutdown(cfg.shutdown_grace_s)
        if service.grpc is not None:
            await service.grpc.stop(1.0)
        await service.providers.aclose()

    routes: list[BaseRoute] = [*http.routes(service), *compat.routes(service), *frontends.routes(service)]
    routes += background.routes(service)
    routes += [speech.route(service), ws.route(service)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.tokenwire = service
    return app
