"""What the server takes: the body of a run request and the server's settings.

>>> import msgspec
>>> msgspec.json.decode(b'{"prompt": "hi", "max_tokens": 16}', type=RunBody).max_tokens
16
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tokenwire.core.limits import Limits
from tokenwire.core.request import Message, ToolSpec

__all__ = ["MAX_STEPS", "MAX_TOKENS", "RunBody", "ServerConfig"]

MAX_TOKENS = 1_000_000
"""No request may ask for more output tokens than this (a typo, not a plan)."""
MAX_STEPS = 256
"""No request may ask for more agent turns than this."""


class RunBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The JSON body of ``POST /v1/runs``: a prompt or messages, and generation options."""

    prompt: str | None = None
    messages: Annotated[list[Message], Meta(min_length=1)] | None = None
    """At least one message (an empty conversation has nothing to answer)."""
    system: str | None = None
    provider: str | None = None
    model: str | None = None
    """The model to answer with, for a provider that picks by name (the cloud APIs); a provider of
    one fixed model (the embedded one, scripted ones) takes only its own and refuses any other
    with 404 ``model_not_found``."""
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=10)] | None = None
    seed: int | None = None
    stop: list[str] = []
    tools: list[str] = []
    """Names of tools registered on the server; they run server-side (or client-side if marked)."""
    client_tools: list[ToolSpec] = []
    """The caller's own tools (name, description, JSON Schema): a call to one suspends the run
    until the caller posts its result (``POST /v1/streams/{id}/tool_results``, the session op
    ``tool_result``), on any node."""
    tool_choice: str = "auto"
    max_steps: Annotated[int, Meta(ge=1, le=MAX_STEPS)] = 8
    limits: Limits | None = None
    meta: dict[str, Any] = {}
    background: bool = False
    """Run to the end even when nobody reads it (otherwise a run unread for the server's
    ``abandon_after_s`` is cancelled)."""


class ServerConfig(msgspec.Struct, kw_only=True):
    """Server settings (see :func:`create_app`)."""

    api_keys: list[str] | None = None
    token_ttl_s: float = 3600.0
    ticket_ttl_s: float = 30.0
    """How long a ticket (``POST /v1/tickets``: single-use, for URLs) may wait to be used."""
    ping_s: float = 15.0
    retry_ms: int = 2000
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_lag_events: int = 4096
    shutdown_grace_s: float = 10.0
    max_runs: int = 1000
    """Runs kept (finished ones are evicted first; a live run never is)."""
    max_events: int = 65_536
    max_live_runs: int = 256
    """Runs generating at once, all API keys together; one more is a 429."""
    max_live_runs_per_key: int = 64
    """Runs generating at once for one API key."""
    max_connections: int = 4096
    """Streaming connections (SSE readers and WebSockets) at once; one more is a 429 / close 1013."""
    max_connections_per_key: int = 256
    """WebSockets at once for one API key."""
    send_buffer: int | None = 65_536
    """Kernel send buffer of each streaming connection, bytes (the app sets it where the server
    lets it reach the socket: uvicorn). Bounds what a reader that stopped reading holds; None:
    the host's setting."""
    fanout_readers: int | None = 4
    """From this many readers of a stream on, one task writes its live edge to every native SSE
    reader keeping up, straight to their HTTP/1.1 connections (:mod:`tokenwire.server.fanout`);
    None: each reader always writes its own (set it under a middleware that rewrites bodies)."""
    write_timeout_s: float = 30.0
    """A streaming write that makes no progress for this long cuts the connection (the reader
    stopped reading: its client resumes from its last seq)."""
    retry_after_s: int = 1
    """The ``Retry-After`` a 429 carries."""
    default_max_tokens: int | None = 1024
    """``max_tokens`` of a run that asks for none (sized for the embedded model: about 20 s of
    output on 2 cores). None: no default cap."""
    max_tokens_ceiling: int = 8192
    """No run may ask for more output tokens (a 422 says so)."""
    default_max_duration_s: float | None = 300.0
    """``limits.max_duration_s`` of a run that sets none. None: no default bound."""
    max_duration_ceiling_s: float = 1800.0
    """No run may ask for a longer ``limits.max_duration_s`` (a 422 says so)."""
    grpc_port: int | None = None
    """Also serve the ``Tokenwire`` gRPC service on this port (0: any free port; extra ``grpc``),
    from the app's lifespan. None: no gRPC."""
    grpc_host: str = "127.0.0.1"
    metrics_token: str | None = None
    """Turns on ``GET /metrics`` (Prometheus' text format), readable with ``Authorization: Bearer
    <metrics_token>``: a credential of its own, not an API key. None: no ``/metrics``."""
    log_url: str | None = None
    """The event log: ``memory`` or ``redis://HOST:PORT/DB`` (see :func:`tokenwire.log.log_kind`).
    None: ``TOKENWIRE_LOG`` from the environment, else memory. ``create_app(log=…)`` overrides it."""
    approval_timeout_s: float = 3600.0
    """How long a run suspended for a tool call's approval waits for the answer; then the call
    is denied (``by: "timeout"``) and the run goes on."""
    abandon_after_s: float | None = 30.0
    """A run that no reader, on any node, has read for this long is cancelled with
    ``done(cancelled, reason="abandoned")`` (detaching never cancels at once: resume works within
    it). Runs created with ``"background": true`` are exempt. None: never."""
