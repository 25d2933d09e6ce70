"""Endpoints that speak other ecosystems' protocols, so their clients use a tokenwire server as is:
OpenAI's ``POST /v1/chat/completions`` and ``POST /v1/responses`` (stream and not; background
mode's retrieve and cancel: :mod:`tokenwire.server.background`) and ``GET /v1/models``; and what
every foreign protocol shares, which the frontend toolkits' endpoints (AG-UI, the AI SDK:
:mod:`tokenwire.server.frontends`) use too: :func:`admit`, :func:`stateful_stream` and the error
table.

Each is a thin adapter: the protocol's own module in :mod:`tokenwire.wire` parses the body into
our request and encodes the run's events; the run service admits, starts and reads the run (the
same limits, ceilings, capacity and log as any other); typed errors become OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) through :data:`ERRORS`.

Tools a request declares are the client's: the model's calls stream out and the run ends with
them; the client sends results back in the next request, as in each ecosystem (a body may name
server tools too: ``serverTools``). A streaming OpenAI client that disconnects before the end
cancels its run, unless it asked for ``background`` (it resumes with ``starting_after``).
``model`` names one of the server's providers; a server with a single provider serves it
whatever the name (as llama.cpp's server does); otherwise an unknown model is a 404.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenwire.core.request import Request
from tokenwire.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    ModelNotFound,
    OverCapacity,
    RunSuspended,
    SeqEvicted,
    ShuttingDown,
    StreamNotFound,
    TokenwireError,
    Unauthorized,
)
from tokenwire.server.http import Handler, bound, guarded, mapped, read_body, retry_after
from tokenwire.server.runs import Run
from tokenwire.server.service import RunService, bearer
from tokenwire.server.streaming import EventStreamResponse, log_frames
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import ChatBody, ChatCompletionChunks, chat_completion, chat_request, openai_error
from tokenwire.wire.openai_responses import (
    ResponseEvents,
    ResponsesBody,
    referenced_ids,
    response_of,
    responses_request,
)

__all__ = ["ERRORS", "admit", "decoder", "error_response", "guard", "routes", "sse_headers", "stateful_stream"]

B = TypeVar("B")

ERRORS: dict[type[TokenwireError], tuple[int, str, str | None]] = {
    Unauthorized: (401, "invalid_request_error", "invalid_api_key"),
    Conflict: (409, "invalid_request_error", "conflict"),
    RunSuspended: (503, "server_error", "run_moved"),
    Forbidden: (403, "invalid_request_error", "forbidden"),
    StreamNotFound: (404, "invalid_request_error", "not_found"),
    ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    BodyTooLarge: (413, "invalid_request_error", "body_too_large"),
    InvalidRequest: (400, "invalid_request_error", None),
    OverCapacity: (429, "rate_limit_error", "over_capacity"),
    ShuttingDown: (503, "server_error", "shutting_down"),
    LogUnavailable: (503, "server_error", "log_unavailable"),
}
"""The status, OpenAI error type and code for each typed error the run service raises (every
foreign protocol here answers errors in OpenAI's shape)."""


def error_response(exc: TokenwireError) -> Response | None:
    """OpenAI's error shape for a typed error, or None for one it does not map."""
    entry = mapped(exc, ERRORS)
    if entry is None:
        return None
    status, kind, code = entry
    return retry_after(JSONResponse(openai_error(str(exc), type=kind, code=code), status_code=status), exc)


def guard(handler: Handler) -> Handler:
    """``handler`` with typed errors answered in OpenAI's shape."""
    return guarded(handler, error_response)


def decoder(body_type: type[B]) -> Callable[[bytes], B]:
    return msgspec.json.Decoder(body_type).decode


async def admit(
    service: RunService,
    request: HTTPRequest,
    body_type: type[B],
    to_request: Callable[[B], Request],
    *,
    prepare: Callable[[B, str], Awaitable[Callable[[B], Request]]] | None = None,
    parsed: tuple[str, B] | None = None,
) -> tuple[str, B, Run]:
    """Authenticate, parse, route the model and start the run: the same steps for every protocol
    (``prepare`` gives the parser what it must look up first, such as referenced items;
    ``parsed``: the owner and body, authenticated and parsed already)."""
    if parsed is None:
        owner = service.authenticate(bearer(request.headers))
        body = service.parse(await read_body(service, request), decoder(body_type))
    else:
        owner, body = parsed
    if prepare is not None:
        to_request = await prepare(body, owner)
    if getattr(body, "stream", True):  # a stream needs a connection slot: refuse before the run starts
        refused = service.over_capacity()
        if refused is not None:
            raise refused
    provider = service.providers.route(getattr(body, "model", ""))
    ours = service.parse(body, to_request)
    tools = service.parse(body, lambda b: list(getattr(b, "server_tools", ())))
    background = True if getattr(body, "background", False) else None  # OpenAI's: it outlives its request
    run = await service.start(
        ours, owner=owner, headers=request.headers, provider=provider, background=background, tools=tools
    )
    return owner, body, run


def sse_headers() -> dict[str, str]:
    return {"x-accel-buffering": "no", "x-request-id": uuid.uuid4().hex}


def stateful_stream(
    service: RunService, run: Run, fmt: str, make: Callable[[], StreamEncoder], *, cancel_on_leave: bool = True
) -> Response:
    """A run's events from seq 0 in the stateful format ``fmt``, as an SSE response; readers of
    one run in one format share its encoder (each event is encoded once per format). The client
    leaving cancels the run, unless it is a background run (or not ``cancel_on_leave``)."""

    def on_abandon() -> None:
        run.handle.cancel("the client disconnected")

    reader = service.frames.reader(run.stream_id, fmt, make)
    leave = None if run.background or not cancel_on_leave else on_abandon
    body = log_frames(service, run.stream_id, 0, reader=reader, lagging=False, live_from=0, on_abandon=leave)
    return EventStreamResponse(service, body, transport=fmt, headers=sse_headers())


async def _encoded(service: RunService, run: Run, encoder: StreamEncoder) -> None:
    """Feed a finished run's whole log to ``encoder``."""
    await run.handle.wait()
    for event in await service.history(run.stream_id):
        encoder.feed(event)


@guard
async def models(service: RunService, request: HTTPRequest) -> Response:
    """``GET /v1/models``: the server's providers, by name."""
    service.authenticate(bearer(request.headers))
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tokenwire"} for name in service.providers]
    return JSONResponse({"object": "list", "data": data})


@guard
async def chat_completions(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/chat/completions``."""
    _, body, run = await admit(service, request, ChatBody, chat_request)
    created = int(time.time())

    def make() -> ChatCompletionChunks:
        return ChatCompletionChunks(
            f"chatcmpl-{run.stream_id}", model=body.model, created=created, include_usage=body.include_usage
        )

    if body.stream:
        return stateful_stream(service, run, "openai.chat", make)
    result = await run.handle
    if result.error is not None:
        status = 502 if result.error.source == "provider" else 500
        error = openai_error(result.error.message, type="server_error", code=result.error.code)
        return JSONResponse(error, status_code=status)
    return JSONResponse(chat_completion(result, f"chatcmpl-{run.stream_id}", model=body.model, created=created))


MAX_REFERENCED = 16
"""At most this many earlier responses one request may reference (each is re-encoded)."""


async def _referenced_items(service: RunService, body: ResponsesBody, owner: str) -> dict[str, dict[str, Any]]:
    """The items ``body`` refers to (``item_reference``), from the logs of the caller's own
    responses that this server keeps: each is re-encoded once (item ids name their stream). A
    reference to anything else — another key's response, one evicted or never ours — is unknown."""
    sids = {sid for ref in referenced_ids(body) if (sid := response_of(ref)) is not None}
    if len(sids) > MAX_REFERENCED:
        raise InvalidRequest(f"a request may reference items of at most {MAX_REFERENCED} responses, not {len(sids)}")
    items: dict[str, dict[str, Any]] = {}
    for sid in sids:
        run = service.runs.get(sid)
        if run is None or run.owner != owner:
            continue
        encoder = ResponseEvents(f"resp_{sid}", model=body.model, created_at=0)
        try:
            for event in await service.history(sid):
                encoder.feed(event)
        except (StreamNotFound, SeqEvicted):
            continue
        for item in encoder.response("completed")["output"]:
            items[item["id"]] = item
    return items


@guard
async def responses(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/responses``."""

    async def with_items(body: ResponsesBody, owner: str) -> Callable[[ResponsesBody], Request]:
        items = await _referenced_items(service, body, owner)
        return lambda b: responses_request(b, items)

    _, body, run = await admit(service, request, ResponsesBody, responses_request, prepare=with_items)

    def make() -> ResponseEvents:
        return ResponseEvents(f"resp_{run.stream_id}", model=body.model, tools=body.tools)

    if body.stream:
        return stateful_stream(service, run, "openai.responses", make)
    encoder = make()
    if body.background:  # the response as it stands; GET /v1/responses/{id} reads it later
        for event in await service.history(run.stream_id):
            encoder.feed(event)
        return JSONResponse(encoder.current())
    await _encoded(service, run, encoder)
    assert encoder.final is not None
    if encoder.final["status"] == "failed":
        error = encoder.final["error"]
        return JSONResponse(openai_error(error["message"], type="server_error", code=error["code"]), status_code=500)
    return JSONResponse(encoder.final)


def routes(service: RunService) -> list[Route]:
    """The foreign protocols' routes, bound to ``service``."""
    bind = bound(service)
    return [
        Route("/v1/chat/completions", bind(chat_completions), methods=["POST"]),
        Route("/v1/responses", bind(responses), methods=["POST"]),
        Route("/v1/models", bind(models), methods=["GET"]),
    ]
