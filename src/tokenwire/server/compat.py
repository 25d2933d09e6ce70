"""Endpoints that speak other ecosystems' protocols, so their clients use a tokenwire server as is:
OpenAI's ``POST /v1/chat/completions`` and ``POST /v1/responses`` (stream and not; background
mode's retrieve and cancel: :mod:`tokenwire.server.background`) and ``GET /v1/models``; AG-UI's
``POST /agui``; the Vercel AI SDK's ``POST /api/chat`` with ``GET`` and ``DELETE
/api/chat/{id}/stream`` (``useChat``'s resume; stop).

Each is a thin adapter: the protocol's own module in :mod:`tokenwire.wire` parses the body into
our request and encodes the run's events; the run service admits, starts and reads the run (the
same limits, ceilings, capacity and log as any other); typed errors become OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) through :data:`ERRORS`.

Tools a request declares are the client's: the model's calls stream out and the run ends with
them; the client sends results back in the next request, as in each ecosystem. A streaming OpenAI
client that disconnects before the end cancels its run, unless it asked for ``background`` (it
resumes with ``starting_after``); an AI
SDK chat survives its client leaving (it resumes), as does an AG-UI run that asked to (it resumes
from ``Last-Event-ID``: :func:`agui`). ``model`` names one of the server's
providers; a server with a single provider serves it whatever the name (as llama.cpp's server
does); otherwise an unknown model is a 404.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

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
from tokenwire.log import TreeCursor
from tokenwire.server.http import Handler, bound, guarded, mapped, read_body, retry_after
from tokenwire.server.runs import Run
from tokenwire.server.service import RunService, bearer
from tokenwire.server.streaming import EventStreamResponse, log_frames, tree_frames
from tokenwire.wire.agui import AGUIBody, AGUIEvents, agui_request
from tokenwire.wire.agui import approval_answers as agui_answers
from tokenwire.wire.ai_sdk import HEADERS as UI_HEADERS
from tokenwire.wire.ai_sdk import ChatUIBody, UIMessageStream, approval_answers, message_id, ui_request
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import ChatBody, ChatCompletionChunks, chat_completion, chat_request, openai_error
from tokenwire.wire.openai_responses import (
    ResponseEvents,
    ResponsesBody,
    referenced_ids,
    response_of,
    responses_request,
)

__all__ = ["ERRORS", "error_response", "routes"]

B = TypeVar("B")
logger = logging.getLogger("tokenwire")

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


def _guarded(handler: Handler) -> Handler:
    return guarded(handler, error_response)


def _decoder(body_type: type[B]) -> Callable[[bytes], B]:
    return msgspec.json.Decoder(body_type).decode


async def _admit(
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
        body = service.parse(await read_body(service, request), _decoder(body_type))
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


async def _answer(service: RunService, owner: str, answers: dict[str, bool]) -> tuple[str, int]:
    """Approvals a client answers by the ids its stream gave them (AI SDK approval ids, AG-UI
    interrupt ids), all of one run: resume the run here with them. Returns the run and the seq it
    goes on from. An id this server did not issue is :class:`Forbidden`; with API keys, the run
    must be the caller's too."""
    calls: dict[str, bool] = {}
    runs: set[str] = set()
    for approval_id, approved in answers.items():
        stream_id, call_id = service.tokens.approval_call(approval_id)
        runs.add(stream_id)
        calls[call_id] = approved
    if len(runs) != 1:
        raise InvalidRequest(f"one request answers the approvals of one run, not of {len(runs)}")
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    stream_id = runs.pop()
    return stream_id, await service.durable.approve(stream_id, owner, calls)


def _headers() -> dict[str, str]:
    return {"x-accel-buffering": "no", "x-request-id": uuid.uuid4().hex}


def _stream(
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
    return EventStreamResponse(service, body, transport=fmt, headers=_headers())


def _ui_stream(
    service: RunService, stream_id: str, message_id: str, *, live_from: int | None = 0, at: int = 0
) -> Response:
    """A run for ``useChat``: the UI message stream of the run and of every child run below it
    (their text as the calling tool's preliminary output), from the start (or from seq ``at``:
    the request that answered its approvals continues the message), an encoder per reader; it
    ends where the run suspends for approvals. Leaving does not cancel the run (a reload resumes
    it). ``live_from``: 0 for the request that started the run; None for a resume (a replay: no
    transient data)."""
    encoder = UIMessageStream(message_id, approval_id=functools.partial(service.tokens.approval_id, stream_id))
    prelude = encoder.continued(stream_id) if at else b""
    cursor = TreeCursor(stream_id, {stream_id: at})
    body = tree_frames(service, cursor, encoder=encoder, prelude=prelude, live_from=live_from)
    return EventStreamResponse(service, body, transport="ai_sdk", headers={**_headers(), **UI_HEADERS})


async def _encoded(service: RunService, run: Run, encoder: StreamEncoder) -> None:
    """Feed a finished run's whole log to ``encoder``."""
    await run.handle.wait()
    for event in await service.history(run.stream_id):
        encoder.feed(event)


@_guarded
async def models(service: RunService, request: HTTPRequest) -> Response:
    """``GET /v1/models``: the server's providers, by name."""
    service.authenticate(bearer(request.headers))
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tokenwire"} for name in service.providers]
    return JSONResponse({"object": "list", "data": data})


@_guarded
async def chat_completions(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/chat/completions``."""
    _, body, run = await _admit(service, request, ChatBody, chat_request)
    created = int(time.time())

    def make() -> ChatCompletionChunks:
        return ChatCompletionChunks(
            f"chatcmpl-{run.stream_id}", model=body.model, created=created, include_usage=body.include_usage
        )

    if body.stream:
        return _stream(service, run, "openai.chat", make)
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


@_guarded
async def responses(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/responses``."""

    async def with_items(body: ResponsesBody, owner: str) -> Callable[[ResponsesBody], Request]:
        items = await _referenced_items(service, body, owner)
        return lambda b: responses_request(b, items)

    _, body, run = await _admit(service, request, ResponsesBody, responses_request, prepare=with_items)

    def make() -> ResponseEvents:
        return ResponseEvents(f"resp_{run.stream_id}", model=body.model, tools=body.tools)

    if body.stream:
        return _stream(service, run, "openai.responses", make)
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


RESUMABLE = "x-tokenwire-resumable"
"""The request header that makes an AG-UI run resumable (``true``): see :func:`agui`."""


@_guarded
async def agui(service: RunService, request: HTTPRequest) -> Response:
    """``POST /agui``: an AG-UI run over SSE.

    Resume, an extension of AG-UI's: the last frame of each of our events carries the event's
    ``seq`` as its SSE ``id``. A run started with ``X-Tokenwire-Resumable: true`` survives its
    client leaving (a run nobody reads is cancelled after ``abandon_after_s``); the same request
    again (the same ``threadId`` and ``runId``, the same API key) with ``Last-Event-ID`` carries
    on after that seq instead of starting a run (404 when that run is not going on this node)."""
    last = request.headers.get("last-event-id")
    if last is not None:
        return await _agui_resume(service, request, last)
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), _decoder(AGUIBody))
    resumable = request.headers.get(RESUMABLE, "").lower() in ("1", "true")
    name = f"agui:{body.thread_id}:{body.run_id}"
    answers = agui_answers(body)
    if answers:  # resume entries answer the interrupts: this new AG-UI run carries ours on
        stream_id, at = await _answer(service, owner, answers)
        if resumable:
            await _remember(service, owner, name, Named(stream_id, "", at))
        make = _agui_encoder(service, body, stream_id)
        reader = service.frames.reader(stream_id, "agui", make, start=at)
        frames = log_frames(service, stream_id, at, reader=reader, prelude=make().continued(), lagging=False)
        return EventStreamResponse(service, frames, transport="agui", headers=_headers())
    _, _, run = await _admit(service, request, AGUIBody, agui_request, parsed=(owner, body))
    if resumable:
        await _remember(service, owner, name, Named(run.stream_id, "", 0))
    return _stream(service, run, "agui", _agui_encoder(service, body, run.stream_id), cancel_on_leave=not resumable)


def _agui_encoder(service: RunService, body: AGUIBody, stream_id: str) -> Callable[[], AGUIEvents]:
    """What makes the AG-UI encoder of ``body``'s run (its interrupt ids the server's)."""
    approval_id = functools.partial(service.tokens.approval_id, stream_id)
    return lambda: AGUIEvents(body.thread_id, body.run_id, approval_id=approval_id)


async def _agui_resume(service: RunService, request: HTTPRequest, last: str) -> Response:
    """The resumable AG-UI run this request names, after seq ``last``."""
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), _decoder(AGUIBody))
    if not (last.isascii() and last.isdigit()):
        raise InvalidRequest(f"Last-Event-ID must be a seq (an integer >= 0), got {last[:40]!r}")
    named = await _recall(service, owner, f"agui:{body.thread_id}:{body.run_id}")
    if named is None:
        raise StreamNotFound(f"no resumable AG-UI run {body.run_id!r} of thread {body.thread_id!r}")
    stream_id, _, at = named
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    after = max(int(last) + 1, at)  # an AG-UI run that carried ours on from seq ``at`` starts there
    reader = service.frames.reader(stream_id, "agui", _agui_encoder(service, body, stream_id), start=at)
    reader.catch_up(await service.history(stream_id, after))  # the frames the client has, written to nobody
    frames = log_frames(service, stream_id, after, reader=reader, lagging=False)
    return EventStreamResponse(service, frames, transport="agui", headers=_headers())


class Named(NamedTuple):
    """What a client's own id for a run names (an AI SDK chat, an AG-UI run)."""

    stream_id: str
    message_id: str
    """The AI SDK message the run writes ("" for AG-UI)."""
    at: int
    """The seq the client's current response starts at (0, or where an answer carried the run on)."""


async def _remember(service: RunService, owner: str, name: str, named: Named) -> None:
    """Remember what a client's own id names, for its API key only (another key's ids are
    invisible to it and cannot clash), on every node of the log: a resume may reach any of them.
    A log that cannot is logged: the run goes on, its resume will not find it."""
    try:
        await service.log.ownership.name_run(owner, name, msgspec.json.encode(named))
    except LogUnavailable as exc:
        logger.warning("run %s: its client's id %r not kept: %s", named.stream_id, name, exc)


async def _recall(service: RunService, owner: str, name: str) -> Named | None:
    """The run a client's own id names (:func:`_remember`), or None."""
    data = await service.log.ownership.named_run(owner, name)
    return None if data is None else Named(*msgspec.json.decode(data, type=tuple[str, str, int]))


@_guarded
async def ui_chat(service: RunService, request: HTTPRequest) -> Response:
    """``POST /api/chat``: a run for ``useChat``, streamed as the AI SDK's UI message stream.

    Leaving (a page reload, ``stop()``) does not cancel the run: ``GET /api/chat/{id}/stream``
    resumes it, and a run nobody reads is cancelled after the server's ``abandon_after_s``."""
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), _decoder(ChatUIBody))
    answers = approval_answers(body)
    if answers:  # addToolApprovalResponse: the suspended run goes on, and this message with it
        stream_id, at = await _answer(service, owner, answers)
        mid = message_id(body, stream_id)
        await _remember(service, owner, f"ai:{body.id}", Named(stream_id, mid, at))
        return _ui_stream(service, stream_id, mid, live_from=at, at=at)
    _, _, run = await _admit(service, request, ChatUIBody, ui_request, parsed=(owner, body))
    mid = message_id(body, run.stream_id)
    await _remember(service, owner, f"ai:{body.id}", Named(run.stream_id, mid, 0))
    return _ui_stream(service, run.stream_id, mid)


async def _active_chat(service: RunService, request: HTTPRequest) -> Named | None:
    """What the chat's latest run is, if it is still going (on any node), or None."""
    owner = service.authenticate(bearer(request.headers))
    named = await _recall(service, owner, f"ai:{request.path_params['chat_id']}")
    if named is None:
        return None
    try:
        info = await service.log.info(named.stream_id)
    except StreamNotFound:
        return None
    return None if info.finished else named


@_guarded
async def ui_chat_stop(service: RunService, request: HTTPRequest) -> Response:
    """``DELETE /api/chat/{id}/stream``: cancel the chat's active run (204 either way).

    ``useChat``'s ``stop()`` only aborts the request, which a resumable chat must survive (a
    reload looks the same to the server); a page calls this beside ``stop()`` to end the run."""
    active = await _active_chat(service, request)
    if active is not None:
        await service.cancel(active.stream_id, "stopped by the client")
    return Response(status_code=204)


@_guarded
async def ui_chat_resume(service: RunService, request: HTTPRequest) -> Response:
    """``GET /api/chat/{id}/stream``: the chat's active run from the start of its current
    response (the run's start, or where the answer to its approvals carried it on), or 204."""
    active = await _active_chat(service, request)
    if active is None:
        return Response(status_code=204)
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    return _ui_stream(service, active.stream_id, active.message_id, live_from=None, at=active.at)


def routes(service: RunService) -> list[Route]:
    """The foreign protocols' routes, bound to ``service``."""
    bind = bound(service)
    return [
        Route("/v1/chat/completions", bind(chat_completions), methods=["POST"]),
        Route("/v1/responses", bind(responses), methods=["POST"]),
        Route("/v1/models", bind(models), methods=["GET"]),
        Route("/agui", bind(agui), methods=["POST"]),
        Route("/api/chat", bind(ui_chat), methods=["POST"]),
        Route("/api/chat/{chat_id}/stream", bind(ui_chat_resume), methods=["GET"]),
        Route("/api/chat/{chat_id}/stream", bind(ui_chat_stop), methods=["DELETE"]),
    ]
