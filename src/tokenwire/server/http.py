"""The native HTTP API over the run service: runs, SSE with resume, status, cancel, health, metrics.

- ``POST /v1/runs`` (API key) → 201 ``{stream_id, token, read_token, events_url}``;
- ``GET /v1/streams/{id}/events`` (token with ``read``) → SSE, resumable from ``Last-Event-ID``
  or ``?from_seq=``; with ``?snapshot=1``, a late joiner's start: one ``snapshot`` event (the
  run's state folded from the log, :class:`~tokenwire.core.snapshot.Snapshot`), then the tail
  (with ``?tree=1`` too, the run's tail and its children still running, from their start);
  with ``?tree=1``, the run and every child run below it on one connection (each event names
  its stream; each ``id`` is a tree cursor that ``Last-Event-ID`` resumes);
  ``GET /v1/streams/{id}`` → status and, once finished, the result;
- ``POST /v1/events`` (stream tokens, or the API key) → SSE of many streams, or of every run of
  the API key, on one connection (:mod:`tokenwire.server.multiplex`); each ``id`` is the cursor
  of them all, which ``Last-Event-ID`` resumes;
- ``POST /v1/streams/{id}/cancel`` (token with ``cancel``);
- ``POST /v1/tickets`` (API key or token) → 201 ``{ticket, expires_in}``: a single-use credential
  for a URL (EventSource and browser WebSockets cannot set headers); ``?token=`` and ``?api_key=``
  are refused, as are tickets used twice;
- ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (its own token), ``GET /`` (the web UI).

Errors are JSON ``{"error": {"code", "message"}}``, from the service's typed errors through
:data:`ERRORS`, the one table of this API (speech shares it); 429 and 503 ``log_unavailable``
carry ``Retry-After``.
"""

from __future__ import annotations

import functools
import hmac
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib.resources import files
from typing import Any

import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tokenwire.core.snapshot import Snapshot
from tokenwire.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    MalformedBody,
    ModelNotFound,
    OverCapacity,
    RunSuspended,
    SeqEvicted,
    ShuttingDown,
    StreamNotFound,
    TokenwireError,
    Unauthorized,
    Unsupported,
)
from tokenwire.events import to_builtins
from tokenwire.log import StreamInfo, TreeCursor, check_tree, owned_batches
from tokenwire.server.multiplex import Subscription, open_subscription
from tokenwire.server.schema import RunBody
from tokenwire.server.service import RunService, bearer
from tokenwire.server.sockets import Link
from tokenwire.server.streaming import EventStreamResponse, log_frames, tree_frames
from tokenwire.server.tokens import is_api_key
from tokenwire.telemetry import prometheus
from tokenwire.wire import SSE

__all__ = [
    "ERRORS",
    "URL_CREDENTIAL",
    "authorized",
    "bound",
    "error_response",
    "guarded",
    "mapped",
    "read_body",
    "refuse_url_credentials",
    "retry_after",
    "routes",
]

ERRORS: dict[type[TokenwireError], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    Conflict: (409, "conflict"),
    RunSuspended: (503, "run_moved"),
    Forbidden: (403, "forbidden"),
    StreamNotFound: (404, "not_found"),
    ModelNotFound: (404, "model_not_found"),
    SeqEvicted: (410, "gone"),
    BodyTooLarge: (413, "body_too_large"),
    MalformedBody: (400, "invalid_json"),
    InvalidRequest: (422, "invalid_request"),
    OverCapacity: (429, "over_capacity"),
    Unsupported: (501, "not_implemented"),
    ShuttingDown: (503, "shutting_down"),
    LogUnavailable: (503, "log_unavailable"),
}
"""The native API's status and code for each typed error the run service raises."""


def mapped(exc: TokenwireError, table: dict[type[TokenwireError], Any]) -> Any:
    """``table``'s entry for ``exc``'s class or its nearest base class in it; None if none."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return None


def retry_after(response: Response, exc: TokenwireError) -> Response:
    """``response`` with ``Retry-After`` when ``exc`` says when to try again."""
    seconds = getattr(exc, "retry_after_s", None)
    if seconds is not None:
        response.headers["retry-after"] = str(math.ceil(seconds))
    return response


def error_response(exc: TokenwireError) -> Response | None:
    """The native API's answer to a typed error, or None for one it does not map (a bug: a 500)."""
    entry = mapped(exc, ERRORS)
    if entry is None:
        return None
    status, code = entry
    return retry_after(JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status), exc)


Handler = Callable[[RunService, HTTPRequest], Awaitable[Response]]


def guarded(handler: Handler, answer: Callable[[TokenwireError], Response | None] = error_response) -> Handler:
    """``handler`` with the typed errors it raises answered by ``answer`` (one table per API)."""

    @functools.wraps(handler)
    async def endpoint(service: RunService, request: HTTPRequest) -> Response:
        try:
            return await handler(service, request)
        except TokenwireError as exc:
            response = answer(exc)
            if response is None:
                raise
            return response

    return endpoint


URL_CREDENTIAL = (
    "credentials are refused in URLs (URLs reach access logs): send them as 'Authorization: Bearer', "
    "or exchange one for a single-use ticket (POST /v1/tickets) and pass ?ticket="
)


def refuse_url_credentials(query: Mapping[str, str]) -> None:
    """:class:`Unauthorized` for a long-lived credential in a URL (``?token=``, ``?api_key=``)."""
    if "token" in query or "api_key" in query:
        raise Unauthorized(URL_CREDENTIAL)


async def authorized(service: RunService, request: HTTPRequest, stream_id: str, perm: str) -> StreamInfo:
    """The stream's position, for a request whose stream token (``Authorization: Bearer``) or
    single-use ticket (``?ticket=``: what EventSource can send) grants ``perm`` on it."""
    refuse_url_credentials(request.query_params)
    ticket = request.query_params.get("ticket")
    if ticket is not None:
        return await service.authorize_ticket(stream_id, ticket, perm)
    return await service.authorize(stream_id, bearer(request.headers), perm)


@guarded
async def create_ticket(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/tickets`` (an API key or a stream token as ``Authorization: Bearer``) → 201
    ``{ticket, expires_in}``: a single-use credential for a URL (see :meth:`RunService.ticket`)."""
    refuse_url_credentials(request.query_params)
    ticket = service.ticket(bearer(request.headers))
    return JSONResponse({"ticket": ticket, "expires_in": service.config.ticket_ttl_s}, status_code=201)


async def read_body(service: RunService, request: HTTPRequest) -> bytes:
    """The request's body, refused with :class:`BodyTooLarge` as soon as it passes ``max_body_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        service.check_size(int(declared))
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        service.check_size(len(raw))
    return raw


@guarded
async def create_run(service: RunService, request: HTTPRequest) -> Response:
    owner = service.authenticate(bearer(request.headers))
    raw = await read_body(service, request)
    body = service.parse(raw, lambda raw: msgspec.json.decode(raw, type=RunBody), "run request")
    run = await service.start(body, owner=owner, headers=request.headers)
    tokens = service.issue(run.stream_id)
    events_url = str(request.url_for("events", stream_id=run.stream_id))
    return JSONResponse(
        {"stream_id": run.stream_id, "token": tokens.token, "read_token": tokens.read_token, "events_url": events_url},
        status_code=201,
    )


def tree_cursor(request: HTTPRequest, stream_id: str) -> TreeCursor:
    """Where a reader of the tree under ``stream_id`` resumes: the ``Last-Event-ID`` it has (a
    :class:`~tokenwire.log.TreeCursor` token, rooted at this stream), or ``?cursor=`` (the same:
    what EventSource cannot send on a connection it opens), or the whole tree."""
    last = request.headers.get("last-event-id") or request.query_params.get("cursor")
    if not last:
        return TreeCursor(stream_id)
    cursor = TreeCursor.parse(last)
    if cursor.root != stream_id:
        raise InvalidRequest(f"Last-Event-ID is the cursor of another tree, not of {stream_id!r}")
    return cursor


def from_seq(request: HTTPRequest) -> int:
    """Where a reader resumes: after ``Last-Event-ID`` (the last seq it has), or at ``?from_seq=``."""
    last = request.headers.get("last-event-id")
    query = request.query_params.get("from_seq")
    if last:
        raw, after = last, 1
    elif query is not None:
        raw, after = query, 0
    else:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest(f"Last-Event-ID / from_seq must be a seq (an integer >= 0), got {raw[:40]!r}")
    return int(raw) + after


@guarded
async def events(service: RunService, request: HTTPRequest) -> Response:
    stream_id: str = request.path_params["stream_id"]
    info = await authorized(service, request, stream_id, "read")
    tree = tree_cursor(request, stream_id) if request.query_params.get("tree") in ("1", "true") else None
    if tree is not None:
        await check_tree(service.log, tree)  # a cursor is the client's: it may name only this tree's runs
    cursor = from_seq(request) if tree is None else tree.positions[stream_id]
    snapshot = request.query_params.get("snapshot") in ("1", "true") and (tree is None or cursor == 0)
    if cursor < info.first_seq and not snapshot:
        raise SeqEvicted(stream_id, cursor, info.first_seq)
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    cfg = service.config
    # No blank line after ``retry:``: httpx-sse (and openai-python's decoder) would dispatch an
    # empty event; the field rides on the first real event instead.
    prelude = b"retry: %d\n" % cfg.retry_ms
    if snapshot:  # join now: the run's state in one event (its id the last seq in it), then the tail
        cursor, ended, state = await service.snapshots.take(stream_id)
        last = b"%d" % (cursor - 1)
        if tree is not None:  # the run from the snapshot on, its children still running from their start
            running = Snapshot.from_json(state).running_children()
            tree = TreeCursor(stream_id, {stream_id: cursor, **dict.fromkeys(running, 0)})
            last = tree.token().encode()
        prelude += b"event: snapshot\nid: %s\ndata: %s\n\n" % (last, state)
        if ended:  # nothing comes after: the body is the snapshot
            return Response(prelude, media_type="text/event-stream")
    link = Link(None)  # the response finds the connection; a lagging reader's is cut
    if tree is None:
        # Live from where the log stood when the reader was authorised: what came before is a
        # replay (no transient data), and only a reader past it joins a stream's broadcast.
        body = log_frames(
            service, stream_id, cursor, fmt=SSE, prelude=prelude, on_lag=link.cut, link=link, live_from=info.next_seq
        )
    else:
        body = tree_frames(service, tree, prelude=prelude, on_lag=link.cut)
    return sse_response(service, body, link)


def sse_response(service: RunService, body: AsyncIterator[bytes], link: Link) -> EventStreamResponse:
    """The native API's SSE response: the keep-alive interval announced, so a client can tell a
    silent stream from a dead one."""
    headers = {"x-accel-buffering": "no", "x-tokenwire-ping-s": f"{service.config.ping_s:g}"}
    return EventStreamResponse(service, body, transport="sse", headers=headers, link=link)


@guarded
async def subscribe_many(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/events``: many streams on one SSE connection (a
    :class:`~tokenwire.server.multiplex.Subscription` as the body; ``Last-Event-ID`` resumes
    every stream of it at once)."""
    raw = await read_body(service, request)
    sub = service.parse(raw, lambda raw: msgspec.json.decode(raw, type=Subscription), "subscription")
    last = request.headers.get("last-event-id")
    if last:
        sub = msgspec.structs.replace(sub, cursor=last)
    needs_key = sub.mine or any(ref.token is None for ref in sub.streams)
    owner = service.authenticate(bearer(request.headers)) if needs_key else None
    cursor = await open_subscription(service, sub, owner)
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    link = Link(None)
    mine = owned_batches(service.log, owner) if sub.mine and owner is not None else None
    # The subscription's start, a ``cursor`` event: the position of every stream as the server
    # took it (for ``mine``, the runs going on now), as its id and its data.
    start = cursor.token().encode()
    prelude = b"retry: %d\nevent: cursor\nid: %s\ndata: %s\n\n" % (service.config.retry_ms, start, start)
    body = tree_frames(service, cursor, prelude=prelude, root_batches=mine, ids_per_batch=True, on_lag=link.cut)
    return sse_response(service, body, link)


@guarded
async def status(service: RunService, request: HTTPRequest) -> Response:
    stream_id: str = request.path_params["stream_id"]
    info = await authorized(service, request, stream_id, "read")
    run = service.runs.get(stream_id)
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


@guarded
async def cancel(service: RunService, request: HTTPRequest) -> Response:
    stream_id: str = request.path_params["stream_id"]
    info = await authorized(service, request, stream_id, "cancel")
    if info.finished:
        return JSONResponse({"stream_id": stream_id, "status": "finished"}, status_code=202)
    if not await service.cancel(stream_id, "cancelled through the API"):
        raise StreamNotFound(f"no stream {stream_id!r} (unknown, or evicted by retention)")  # no node produces it
    return JSONResponse({"stream_id": stream_id, "status": "cancelling"}, status_code=202)


class ApprovalBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/streams/{id}/approvals``."""

    call_id: str
    approved: bool


class ToolResultBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/streams/{id}/tool_results``."""

    call_id: str
    result: Any = None
    is_error: bool = False


def _answerer(service: RunService, request: HTTPRequest) -> tuple[str | None, str | None]:
    """Who answers a suspended run: the run's owner (an API key) or the bearer of its token."""
    credential = bearer(request.headers)
    if is_api_key(credential, service.config.api_keys):  # its owner's run
        return service.authenticate(credential), None
    return None, credential or ""  # the run's token


@guarded
async def approve(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/streams/{id}/approvals`` (``Authorization: Bearer`` the run's owner's API key, or
    the run's token, the one that can cancel it: without API keys only that will do;
    ``{"call_id", "approved"}``) → 202: the suspended run resumes, on this node, with the call
    approved or denied. 403 for another key, 404 for a call that asked for no approval, 409 for
    one already answered."""
    stream_id: str = request.path_params["stream_id"]
    raw = await read_body(service, request)
    body = service.parse(raw, lambda raw: msgspec.json.decode(raw, type=ApprovalBody), "approval")
    owner, token = _answerer(service, request)
    await service.answer(stream_id, approvals={body.call_id: body.approved}, owner=owner, token=token)
    return JSONResponse({"stream_id": stream_id, "call_id": body.call_id, "status": "resumed"}, status_code=202)


@guarded
async def tool_result(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/streams/{id}/tool_results`` (credentials as for approvals; ``{"call_id",
    "result", "is_error"?}``) → 202: the run suspended for a client-side call's result resumes,
    on this node, with it. 404 for a call that waits for no result, 409 for one answered."""
    stream_id: str = request.path_params["stream_id"]
    raw = await read_body(service, request)
    body = service.parse(raw, lambda raw: msgspec.json.decode(raw, type=ToolResultBody), "tool result")
    owner, token = _answerer(service, request)
    await service.answer(stream_id, results={body.call_id: (body.result, body.is_error)}, owner=owner, token=token)
    return JSONResponse({"stream_id": stream_id, "call_id": body.call_id, "status": "resumed"}, status_code=202)


async def healthz(service: RunService, request: HTTPRequest) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(service: RunService, request: HTTPRequest) -> Response:
    """Readiness: the default provider is loaded, the event log answers, the server takes runs."""
    checks: dict[str, str] = {"provider": "ok" if service.providers.loaded else "loading"}
    try:
        await service.log.info("readyz-probe")
        checks["log"] = "ok"
    except StreamNotFound:
        checks["log"] = "ok"  # the log answered
    except Exception as exc:  # an unreachable log, whatever the backend raises
        checks["log"] = f"unreachable: {type(exc).__name__}"
    checks["runs"] = "ok" if service.runs.accepting else "shutting down"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(service: RunService, request: HTTPRequest) -> Response:
    """``GET /metrics``: Prometheus' text format, for the holder of ``metrics_token`` (404 when
    the server has none: metrics are off)."""
    token = service.config.metrics_token
    if token is None:
        message = "metrics are off (ServerConfig.metrics_token, serve --metrics-token)"
        return JSONResponse({"error": {"code": "not_found", "message": message}}, status_code=404)
    presented = bearer(request.headers) or ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        message = "GET /metrics needs Authorization: Bearer <metrics token>"
        return JSONResponse({"error": {"code": "unauthorized", "message": message}}, status_code=401)
    live = service.runs.live_runs()
    events = sum(r.handle.seq + 1 for r in live)
    body, content_type = prometheus.render(service.stats, live_runs=len(live), live_events=events)
    return Response(body, media_type=content_type)


async def ui(service: RunService, request: HTTPRequest) -> Response:
    return HTMLResponse(files("tokenwire.server").joinpath("ui.html").read_text(encoding="utf-8"))


def bound(service: RunService) -> Callable[[Handler], Callable[[HTTPRequest], Awaitable[Response]]]:
    """A function binding handlers to ``service`` (Starlette endpoints take the request alone)."""
    return lambda handler: functools.partial(handler, service)


def routes(service: RunService) -> list[Route]:
    """The native API's routes, bound to ``service``."""
    bind = bound(service)
    return [
        Route("/", bind(ui), methods=["GET"]),
        Route("/healthz", bind(healthz), methods=["GET"]),
        Route("/readyz", bind(readyz), methods=["GET"]),
        Route("/metrics", bind(metrics), methods=["GET"]),
        Route("/v1/runs", bind(create_run), methods=["POST"]),
        Route("/v1/tickets", bind(create_ticket), methods=["POST"]),
        Route("/v1/events", bind(subscribe_many), methods=["POST"]),
        Route("/v1/streams/{stream_id}/events", bind(events), methods=["GET"], name="events"),
        Route("/v1/streams/{stream_id}", bind(status), methods=["GET"]),
        Route("/v1/streams/{stream_id}/cancel", bind(cancel), methods=["POST"]),
        Route("/v1/streams/{stream_id}/approvals", bind(approve), methods=["POST"]),
        Route("/v1/streams/{stream_id}/tool_results", bind(tool_result), methods=["POST"]),
    ]
