"""The ASGI app: runs over HTTP, Server-Sent Events with resume, WebSocket, a web UI.

>>> from tokenwire.server import create_app
>>> from tokenwire.providers import Scripted
>>> app = create_app(providers={"scripted": Scripted(["Hi"])}, api_keys=["k"])

Mount it in a FastAPI or Starlette app (``parent.mount("/llm", app)``) or run it with
``tokenwire serve``. Routes:

- ``POST /v1/runs`` (API key) → 201 ``{stream_id, token, read_token, events_url}``;
- ``GET /v1/streams/{id}/events`` (token with ``read``) → SSE, resumable from ``Last-Event-ID``
  or ``?from_seq=``; ``GET /v1/streams/{id}`` → status and, once finished, the result;
- ``POST /v1/streams/{id}/cancel`` (token with ``cancel``);
- ``WS /v1/ws`` — see :mod:`tokenwire.server.ws`; ``GET /`` — the web UI.

Errors are JSON ``{"error": {"code", "message"}}`` with 401 / 403 / 404 / 410 / 413 / 422 / 503,
and 429 with ``Retry-After`` when a capacity cap is reached (live runs or streaming connections,
in all or for one API key: see :class:`ServerConfig`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from importlib.resources import files
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from tokenwire.errors import (
    Forbidden,
    ObserverOverflow,
    OverCapacity,
    SeqEvicted,
    ShuttingDown,
    StreamNotFound,
    Unauthorized,
)
from tokenwire.events import Error, to_builtins
from tokenwire.limits import Limits
from tokenwire.log import EventLog, MemoryLog, StreamInfo
from tokenwire.provider import Provider
from tokenwire.request import Message, Request, ToolSpec
from tokenwire.security import StreamTokens, check_api_key, new_secret
from tokenwire.server import compat
from tokenwire.server.runs import Run, Runs
from tokenwire.server.schema import RunBody, ServerConfig
from tokenwire.server.speech import speech_stream
from tokenwire.server.ws import websocket_endpoint
from tokenwire.telemetry import prometheus
from tokenwire.telemetry.otel import OTel
from tokenwire.telemetry.server import ServerStats
from tokenwire.tools import Toolset
from tokenwire.wire import SSE, FrameCache

try:
    from tokenwire.grpc.server import GrpcServer
except ImportError:  # the grpc extra is not installed: ServerConfig.grpc_port says so when set
    GrpcServer = None  # type: ignore[assignment,misc]

__all__ = ["RunBody", "ServerConfig", "create_app", "listen"]

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


_WRITE_FRAMES = 512
"""At most this many SSE frames per write."""
_WRITE_BYTES = 65_536
"""At most about this many bytes per write (one frame may exceed it): what a write may add to a
slow connection's transport buffer before flow control holds the writer."""


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _bearer(request: HTTPRequest) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


class _CountedStream(StreamingResponse):
    """A streaming response that holds one of the server's connection slots while it is served
    (until it ends or the client leaves): counted where the ASGI call starts and returns, not in
    a generator's ``finally`` that the garbage collector may run much later."""

    def __init__(self, server: _Server, body: AsyncIterator[bytes], transport: str, **kwargs: Any):
        super().__init__(body, **kwargs)
        self._server = server
        self._transport = transport

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server, transport = self._server, self._transport
        wrote = server.stats.wrote

        async def counted(message: Any) -> None:  # one call per write, not per event
            if message["type"] == "http.response.body":
                wrote(transport, len(message.get("body", b"")))
            await send(message)

        server.connect(transport=transport)
        try:
            await super().__call__(scope, receive, counted)
        finally:
            server.disconnect(transport=transport)


class _Server:
    """State and handlers behind the app."""

    def __init__(
        self,
        providers: Mapping[str, Provider | Callable[[], Provider]],
        default_provider: str | None,
        tools: Toolset | None,
        secret: bytes,
        config: ServerConfig,
        default_limits: Limits | None,
        log: EventLog,
    ):
        if not providers:
            raise ValueError("create_app needs at least one provider")
        self.providers = dict(providers)
        self.default_provider = default_provider or next(iter(self.providers))
        self.tools = tools or Toolset()
        self.tokens = StreamTokens(secret)
        self.config = config
        self.default_limits = default_limits
        self.log = log
        self.frames = FrameCache()
        self.grpc: Any = None
        """The gRPC service (:class:`tokenwire.grpc.server.GrpcServer`) when ``grpc_port`` is set."""
        self.otel: OTel | None = None
        """OpenTelemetry for every run (``create_app(otel=…)``); None: off."""
        self.stats = ServerStats()
        """What the server counts about itself (``GET /metrics`` exports it)."""
        self.runs = Runs(
            log,
            max_runs=config.max_runs,
            max_live=config.max_live_runs,
            max_live_per_owner=config.max_live_runs_per_key,
            abandon_after_s=config.abandon_after_s,
            on_finish=self._run_finished,
        )
        log.append_observer = self.stats.log_wrote
        self.connections = 0
        """Streaming connections open now (SSE readers and WebSockets)."""
        self.connections_by_owner: dict[str, int] = {}
        self._instances: dict[str, Provider] = {}
        self.loaded = False
        """True once :meth:`preload` ran (the app's lifespan start-up)."""
        self.chats: dict[tuple[str, str], tuple[str, str]] = {}
        """(API key's owner, AI SDK chat id) -> the chat's latest run's stream id and message id
        (``GET /api/chat/{id}/stream`` resumes it; another key's chat of the same id is another chat)."""

    # -- helpers ----------------------------------------------------------------------------------

    def provider(self, name: str | None) -> Provider:
        key = name or self.default_provider
        if key not in self.providers:
            raise KeyError(f"unknown provider {key!r}; this server has: {', '.join(self.providers)}")
        if key not in self._instances:
            p = self.providers[key]
            self._instances[key] = p if isinstance(p, Provider) else p()
        return self._instances[key]

    async def preload(self) -> None:
        """Make the default provider and load its model now (``load()`` in a thread, when it has
        one): run at start-up, so the first run's time to first token is the model's, not the
        load's. Other providers are made on first use (a server may list backends it rarely uses)."""
        provider = self.provider(None)
        load = getattr(provider, "load", None)
        if callable(load):
            await asyncio.to_thread(load)
        self.loaded = True

    async def healthz(self, request: HTTPRequest) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HTTPRequest) -> Response:
        """Readiness: the default provider is loaded, the event log answers, the server takes runs."""
        checks: dict[str, str] = {"provider": "ok" if self.loaded else "loading"}
        try:
            await self.log.info("readyz-probe")
            checks["log"] = "ok"
        except StreamNotFound:
            checks["log"] = "ok"  # the log answered
        except Exception as exc:  # an unreachable log, whatever the backend raises
            checks["log"] = f"unreachable: {type(exc).__name__}"
        checks["runs"] = "ok" if self.runs.accepting else "shutting down"
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(self, request: HTTPRequest) -> Response:
        """``GET /metrics``: Prometheus' text format, for the holder of ``metrics_token`` (404 when
        the server has none: metrics are off)."""
        token = self.config.metrics_token
        if token is None:
            return _error(404, "not_found", "metrics are off (ServerConfig.metrics_token, serve --metrics-token)")
        presented = _bearer(request) or ""
        if not hmac.compare_digest(presented.encode(), token.encode()):
            return _error(401, "unauthorized", "GET /metrics needs Authorization: Bearer <metrics token>")
        live = self.runs.live_runs()
        events = sum(r.handle.seq + 1 for r in live)
        body, content_type = prometheus.render(self.stats, live_runs=len(live), live_events=events)
        return Response(body, media_type=content_type)

    async def close_providers(self) -> None:
        """Close the providers this server made from factories (instances passed in stay open:
        they are the caller's). ``aclose()`` is awaited; a blocking ``close()`` runs in a thread."""
        made = [p for key, p in self._instances.items() if p is not self.providers[key]]
        self._instances.clear()
        for provider in made:
            aclose = getattr(provider, "aclose", None)
            close = getattr(provider, "close", None)
            if aclose is not None:
                await aclose()
            elif close is not None:
                await asyncio.to_thread(close)

    def check_api_key(self, presented: str | None) -> str:
        """The caller's owner id (a fingerprint of its key; "" without auth), or Unauthorized."""
        if self.config.api_keys is None:
            return ""
        check_api_key(presented, self.config.api_keys)
        assert presented is not None
        return hashlib.sha256(presented.encode()).hexdigest()[:16]

    @staticmethod
    def unwritable(run: Run) -> str | None:
        """Why a run that just started could not be written to the event log (it already ended
        with ``error(log_unavailable)``: nobody could read it), or None. A 503 / UNAVAILABLE."""
        terminal = run.handle.terminal
        if isinstance(terminal, Error) and terminal.code == "log_unavailable":
            return f"the run could not be written to the event log: {terminal.message}"
        return None

    def _run_finished(self, run: Run) -> None:
        terminal = run.handle.terminal
        if terminal is not None:
            self.stats.run_finished(run.handle.metrics, terminal)

    def connect(self, owner: str | None = None, transport: str = "sse") -> None:
        """Count a streaming connection in, or raise :class:`OverCapacity`."""
        if self.connections >= self.config.max_connections:
            raise OverCapacity(f"the server has {self.connections} streaming connections open, its limit")
        if owner is not None and self.connections_by_owner.get(owner, 0) >= self.config.max_connections_per_key:
            raise OverCapacity(f"this API key has {self.config.max_connections_per_key} connections open, its limit")
        self.connections += 1
        self.stats.opened(transport)
        if owner is not None:
            self.connections_by_owner[owner] = self.connections_by_owner.get(owner, 0) + 1

    def disconnect(self, owner: str | None = None, transport: str = "sse") -> None:
        self.connections -= 1
        self.stats.closed(transport)
        if owner is not None:
            left = self.connections_by_owner[owner] - 1
            if left:
                self.connections_by_owner[owner] = left
            else:
                del self.connections_by_owner[owner]

    def build_request(self, body: RunBody) -> Request:
        if (body.prompt is None) == (body.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        messages = list(body.messages or [Message("user", body.prompt or "")])
        if body.system:
            messages.insert(0, Message("system", body.system))
        if len(messages) > self.config.max_messages:
            raise ValueError(f"{len(messages)} messages is more than this server accepts ({self.config.max_messages})")
        unknown = [t for t in body.tools if t not in self.tools]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; this server has: {', '.join(self.tools.names) or 'none'}")
        specs: list[ToolSpec] = [t.spec for t in self.tools if t.name in body.tools]
        return Request(
            messages,
            tools=specs,
            tool_choice=body.tool_choice,
            temperature=body.temperature,
            max_tokens=self.max_tokens(body.max_tokens),
            stop=body.stop,
            seed=body.seed,
            model=body.model,
        )

    def _remote_cancel(self, stream_id: str, reason: str) -> None:
        """A cancel another node forwarded: end the run if this node produces it."""
        run = self.runs.get(stream_id)
        if run is not None:
            run.handle.cancel(reason)

    async def cancel_run(self, stream_id: str, reason: str) -> bool:
        """Cancel a run here or on whichever node produces it; False when nobody has it."""
        run = self.runs.get(stream_id)
        if run is not None:
            run.handle.cancel(reason)
            return True
        return await self.log.forward_cancel(stream_id, reason)

    def telemetry(self, provider: Provider, request: Request, headers: Mapping[str, str]) -> list[object]:
        """The observers a run gets for telemetry: none, or OpenTelemetry's with the incoming
        request's trace context (``traceparent``) as the run's parent."""
        if self.otel is None:
            return []
        return [self.otel.observer(provider, request, parent=self.otel.extract(headers))]

    def start(self, body: RunBody, owner: str = "", headers: Mapping[str, str] | None = None) -> Run:
        self.log.listen_cancels(self._remote_cancel)  # this node produces runs: hear cancels for them
        request = self.build_request(body)
        provider = self.provider(body.provider)
        tools = [t for t in self.tools if t.name in body.tools] or None
        return self.runs.start(
            provider,
            request,
            observers=self.telemetry(provider, request, headers or {}),
            owner=owner,
            background=body.background,
            limits=self.limits(body.limits),
            meta=body.meta,
            tools=tools,
            max_steps=body.max_steps,
        )

    def event_stream(self, body: AsyncIterator[bytes], headers: dict[str, str], transport: str = "sse") -> Response:
        """An SSE response that holds one of the server's connection slots while it is served
        (counted, with the bytes it writes, under ``transport``)."""
        return _CountedStream(self, body, transport, media_type="text/event-stream", headers=headers)

    def max_tokens(self, asked: int | None) -> int | None:
        """A run's ``max_tokens``: what it asked for, or the server's default; above the ceiling
        is a ValueError (a 4xx)."""
        cfg = self.config
        if asked is None:
            return cfg.default_max_tokens
        if asked > cfg.max_tokens_ceiling:
            raise ValueError(f"max_tokens {asked} is above this server's ceiling ({cfg.max_tokens_ceiling})")
        return asked

    def limits(self, asked: Limits | None) -> Limits:
        """A run's limits: what it asked for (or the app's defaults), with the server's default
        duration when it set none; a duration above the ceiling is a ValueError (a 422)."""
        limits = asked or self.default_limits or Limits()
        cfg = self.config
        if limits.max_duration_s is None and cfg.default_max_duration_s is not None:
            limits = msgspec.structs.replace(limits, max_duration_s=cfg.default_max_duration_s)
        if limits.max_duration_s is not None and limits.max_duration_s > cfg.max_duration_ceiling_s:
            raise ValueError(
                f"limits.max_duration_s {limits.max_duration_s:g} is above this server's ceiling "
                f"({cfg.max_duration_ceiling_s:g} s)"
            )
        return limits

    def issue(self, stream_id: str) -> tuple[str, str]:
        now = time.time()
        ttl = self.config.token_ttl_s
        return (
            self.tokens.issue(stream_id, {"read", "cancel"}, now=now, ttl_s=ttl),
            self.tokens.issue(stream_id, {"read"}, now=now, ttl_s=ttl),
        )

    def authorize(self, request: HTTPRequest, stream_id: str, perm: str) -> None:
        token = request.query_params.get("token") or _bearer(request)
        self.tokens.verify(token, stream_id, perm, now=time.time())

    # -- HTTP handlers ----------------------------------------------------------------------------

    async def create_run(self, request: HTTPRequest) -> Response:
        try:
            owner = self.check_api_key(_bearer(request))
        except Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return _error(
                413, "body_too_large", f"the body is {declared} bytes; the limit is {self.config.max_body_bytes}"
            )
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.config.max_body_bytes:
                return _error(413, "body_too_large", f"the body exceeds {self.config.max_body_bytes} bytes")
        try:
            body = msgspec.json.decode(raw, type=RunBody)
            run = self.start(body, owner, request.headers)
        except RecursionError:
            return _error(422, "invalid_request", "invalid run request: JSON nested too deeply")
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            return _error(422, "invalid_request", f"invalid run request: {message}")
        except ShuttingDown as exc:
            return _error(503, "shutting_down", str(exc))
        except OverCapacity as exc:
            return self._over_capacity(exc)
        await run.handle.ready()  # readable on every node before anyone hears of it
        unwritable = self.unwritable(run)
        if unwritable is not None:
            response = _error(503, "log_unavailable", unwritable)
            response.headers["retry-after"] = str(self.config.retry_after_s)
            return response
        token, read_token = self.issue(run.stream_id)
        events_url = str(request.url_for("events", stream_id=run.stream_id))
        return JSONResponse(
            {"stream_id": run.stream_id, "token": token, "read_token": read_token, "events_url": events_url},
            status_code=201,
        )

    async def _guard(self, request: HTTPRequest, perm: str) -> tuple[str, StreamInfo] | Response:
        """The stream id and log position of an authorized request, or the error response."""
        stream_id: str = request.path_params["stream_id"]
        try:
            info = await self.log.info(stream_id)
            self.authorize(request, stream_id, perm)
        except StreamNotFound:
            return self._not_found(stream_id)
        except Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        except Forbidden as exc:
            return _error(403, "forbidden", str(exc))
        return stream_id, info

    def _over_capacity(self, exc: OverCapacity) -> Response:
        response = _error(429, "over_capacity", str(exc))
        response.headers["retry-after"] = str(self.config.retry_after_s)
        return response

    @staticmethod
    def _not_found(stream_id: str) -> Response:
        return _error(404, "not_found", f"no stream {stream_id!r} (unknown, or evicted by retention)")

    async def events(self, request: HTTPRequest) -> Response:
        guarded = await self._guard(request, "read")
        if isinstance(guarded, Response):
            return guarded
        stream_id, info = guarded
        try:
            from_seq = self._from_seq(request)
        except ValueError as exc:
            return _error(422, "invalid_request", str(exc))
        if from_seq < info.first_seq:
            return _error(410, "gone", str(SeqEvicted(stream_id, from_seq, info.first_seq)))
        if self.connections >= self.config.max_connections:
            return self._over_capacity(
                OverCapacity(f"the server has {self.connections} streaming connections open, its limit")
            )
        # The keep-alive interval, announced so a client can tell a silent stream from a dead one.
        headers = {
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            "x-tokenwire-ping-s": f"{self.config.ping_s:g}",
        }
        return self.event_stream(self._sse(stream_id, from_seq), headers)

    @staticmethod
    def _from_seq(request: HTTPRequest) -> int:
        last = request.headers.get("last-event-id")
        query = request.query_params.get("from_seq")
        if last:
            raw, after = last, 1  # the last seq the client has: resume after it
        elif query is not None:
            raw, after = query, 0
        else:
            return 0
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(f"Last-Event-ID / from_seq must be a seq (an integer >= 0), got {raw[:40]!r}")
        return int(raw) + after

    async def _sse(self, stream_id: str, cursor: int) -> AsyncIterator[bytes]:
        """One SSE connection: a reader of the log from ``cursor``, every ready frame in one write.

        Writes carry at most ``_WRITE_FRAMES`` frames and about ``_WRITE_BYTES`` bytes, so one
        write never holds more than that in the transport. A reader of a *live* stream that is
        ``max_lag_events`` behind its head when it comes back from a write is disconnected (its
        client resumes from its last seq); reading a finished stream's history is never lagging
        (the stream no longer grows).
        """
        # No blank line after it: httpx-sse (and openai-python's decoder) would dispatch an empty
        # event; the field rides on the first real event instead.
        yield b"retry: %d\n" % self.config.retry_ms
        frames = self.frames.frames
        frame = self.frames.frame
        batches = self.log.batches(stream_id, cursor, idle_s=self.config.ping_s, max_lag=self.config.max_lag_events)
        try:
            with self.runs.reader(stream_id):
                async for batch in batches:
                    if not batch:
                        yield b": ping\n"  # no blank line: it must not dispatch an (empty) event
                        continue
                    if len(batch) == 1:  # the live edge of a paced stream, and every reader of a fan-out
                        yield frame(stream_id, SSE, batch[0])
                        continue
                    for i in range(0, len(batch), _WRITE_FRAMES):  # encode a slice at a time, never the lot
                        out: list[bytes] = []
                        size = 0
                        for f in frames(stream_id, SSE, batch[i : i + _WRITE_FRAMES]):
                            out.append(f)
                            size += len(f)
                            if size >= _WRITE_BYTES:  # bounded writes: at most ~_WRITE_BYTES each
                                yield b"".join(out)
                                out, size = [], 0
                        if out:
                            yield b"".join(out)
        except ObserverOverflow:
            self.stats.lag_disconnects += 1
            return  # too far behind a live producer: disconnect rather than buffer; the client resumes
        except (SeqEvicted, StreamNotFound):
            return  # fell behind retention: the client resumes and gets 410 / 404

    async def status(self, request: HTTPRequest) -> Response:
        guarded = await self._guard(request, "read")
        if isinstance(guarded, Response):
            return guarded
        stream_id, info = guarded
        run = self.runs.get(stream_id)
        body: dict[str, Any] = {
            "stream_id": stream_id,
            "status": "finished" if info.finished else "running",
            "next_seq": info.next_seq,
            "created": run.created if run is not None else None,
        }
        if run is not None and run.handle.done():
            body["result"] = msgspec.to_builtins(run.handle.result())
            terminal = run.handle.terminal
            body["terminal"] = to_builtins(terminal) if terminal is not None else None
        return JSONResponse(body)

    async def cancel(self, request: HTTPRequest) -> Response:
        guarded = await self._guard(request, "cancel")
        if isinstance(guarded, Response):
            return guarded
        stream_id, info = guarded
        if info.finished:
            return JSONResponse({"stream_id": stream_id, "status": "finished"}, status_code=202)
        if not await self.cancel_run(stream_id, "cancelled through the API"):
            return self._not_found(stream_id)  # in the log, but no node produces it any more
        return JSONResponse({"stream_id": stream_id, "status": "cancelling"}, status_code=202)

    async def ui(self, request: HTTPRequest) -> Response:
        return HTMLResponse(files("tokenwire.server").joinpath("ui.html").read_text(encoding="utf-8"))


def _configured_log(cfg: ServerConfig) -> EventLog:
    """The server's own log: Redis when ``TOKENWIRE_LOG=redis://…`` says so, else bounded memory."""
    url = os.environ.get("TOKENWIRE_LOG", "")
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tokenwire.redis_log import RedisLog  # an optional extra, loaded only when configured

        return RedisLog(url, max_events=cfg.max_events)
    return MemoryLog(max_events=cfg.max_events, max_streams=cfg.max_runs)


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
    where runs append their events and where every SSE and WebSocket reader reads them (default:
    a :class:`~tokenwire.MemoryLog` bounded by ``config.max_runs`` and ``config.max_events``, or a
    :class:`~tokenwire.redis_log.RedisLog` when ``TOKENWIRE_LOG=redis://…`` is set). ``otel``
    (:class:`~tokenwire.telemetry.otel.OTel`) traces every run as a child of its request's
    ``traceparent`` and records the GenAI metrics.
    """
    cfg = config or ServerConfig()
    if api_keys is not None:
        cfg = msgspec.structs.replace(cfg, api_keys=list(api_keys))
    toolset = tools if isinstance(tools, Toolset) or tools is None else Toolset(tools)
    event_log = log if log is not None else _configured_log(cfg)
    server = _Server(providers, default_provider, toolset, secret or new_secret(), cfg, default_limits, event_log)
    server.otel = otel

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.preload()  # ready means ready: the first request does not pay the model load
        if cfg.grpc_port is not None:
            if GrpcServer is None:
                raise RuntimeError("grpc_port needs the grpc extra: pip install 'tokenwire[grpc]'")
            server.grpc = GrpcServer(server, cfg.grpc_host, cfg.grpc_port)
            await server.grpc.start()
        yield
        await server.runs.shutdown(cfg.shutdown_grace_s)
        if server.grpc is not None:
            await server.grpc.stop(1.0)
        await server.close_providers()

    app = Starlette(
        routes=[
            Route("/", server.ui, methods=["GET"]),
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/metrics", server.metrics, methods=["GET"]),
            Route("/v1/chat/completions", functools.partial(compat.chat_completions, server), methods=["POST"]),
            Route("/v1/responses", functools.partial(compat.responses, server), methods=["POST"]),
            Route("/v1/models", functools.partial(compat.models, server), methods=["GET"]),
            Route("/agui", functools.partial(compat.agui, server), methods=["POST"]),
            Route("/api/chat", functools.partial(compat.ui_chat, server), methods=["POST"]),
            Route("/api/chat/{chat_id}/stream", functools.partial(compat.ui_chat_resume, server), methods=["GET"]),
            Route("/api/chat/{chat_id}/stream", functools.partial(compat.ui_chat_stop, server), methods=["DELETE"]),
            Route("/readyz", server.readyz, methods=["GET"]),
            Route("/v1/runs", server.create_run, methods=["POST"]),
            Route("/v1/streams/{stream_id}/events", server.events, methods=["GET"], name="events"),
            Route("/v1/streams/{stream_id}", server.status, methods=["GET"]),
            Route("/v1/streams/{stream_id}/cancel", server.cancel, methods=["POST"]),
            Route("/v1/streams/{stream_id}/speech", functools.partial(speech_stream, server), methods=["GET"]),
            WebSocketRoute("/v1/ws", lambda ws: websocket_endpoint(server, ws)),
        ],
        lifespan=lifespan,
    )
    app.state.tokenwire = server
    return app
