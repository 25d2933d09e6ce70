"""The endpoints of the frontend toolkits, whose chats outlive a request: AG-UI's ``POST /agui``
and the Vercel AI SDK's ``POST /api/chat`` with ``GET`` and ``DELETE /api/chat/{id}/stream``
(``useChat``'s resume; stop). Errors, admission and the stateful stream shell are
:mod:`tokenwire.server.compat`'s, as for OpenAI's endpoints.

What these add:

- **their own ids**: a chat id (AI SDK) or a thread's run (AG-UI) names a run for its API key on
  every node of the log (:func:`remember`), so a resume or a stop reaches the run wherever it is;
- **approvals**: a run that waits for an approval suspends, and its response ends there (the AI
  SDK's ``tool-approval-request``, AG-UI's ``interrupt`` outcome); the request that answers
  (``useChat``'s ``approval-responded`` parts, AG-UI ``resume`` entries) carries the same run
  on, from where it stopped, on whichever node it arrives (:func:`answer`);
- **one final text**: a turn asked again after its node stopped voids its first attempt, which a
  replay (a resume) leaves out: these formats cannot take text back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from tokenwire.core.fold import void_seqs
from tokenwire.errors import InvalidRequest, LogUnavailable, StreamNotFound
from tokenwire.log import TreeCursor
from tokenwire.server.compat import admit, decoder, guard, sse_headers, stateful_stream
from tokenwire.server.http import bound, read_body
from tokenwire.server.service import RunService, bearer
from tokenwire.server.streaming import EventStreamResponse, log_frames, tree_frames
from tokenwire.wire.agui import AGUIBody, AGUIEvents, agui_request
from tokenwire.wire.agui import approval_answers as agui_answers
from tokenwire.wire.ai_sdk import HEADERS as UI_HEADERS
from tokenwire.wire.ai_sdk import ChatUIBody, UIMessageStream, approval_answers, message_id, ui_request

__all__ = ["RESUMABLE", "Named", "answer", "recall", "remember", "routes"]

logger = logging.getLogger("tokenwire")


async def answer(service: RunService, owner: str, answers: dict[str, bool]) -> tuple[str, int]:
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
    return stream_id, await service.durable.answer(stream_id, owner, calls)


def _ui_stream(
    service: RunService,
    stream_id: str,
    message_id: str,
    *,
    live_from: int | None = 0,
    at: int = 0,
    void: frozenset[int] = frozenset(),
) -> Response:
    """A run for ``useChat``: the UI message stream of the run and of every child run below it
    (their text as the calling tool's preliminary output), from the start (or from seq ``at``:
    the request that answered its approvals continues the message), an encoder per reader; it
    ends where the run suspends for approvals. Leaving does not cancel the run (a reload resumes
    it). ``live_from``: 0 for the request that started the run; None for a resume (a replay: no
    transient data; ``void``: the output of turns asked again, which a replay leaves out)."""
    encoder = UIMessageStream(message_id, approval_id=functools.partial(service.tokens.approval_id, stream_id))
    encoder.void = void
    prelude = encoder.continued(stream_id) if at else b""
    cursor = TreeCursor(stream_id, {stream_id: at})
    body = tree_frames(service, cursor, encoder=encoder, prelude=prelude, live_from=live_from)
    return EventStreamResponse(service, body, transport="ai_sdk", headers={**sse_headers(), **UI_HEADERS})


RESUMABLE = "x-tokenwire-resumable"
"""The request header that makes an AG-UI run resumable (``true``): see :func:`agui`."""


@guard
async def agui(service: RunService, request: HTTPRequest) -> Response:
    """``POST /agui``: an AG-UI run over SSE.

    Resume, an extension of AG-UI's: the last frame of each of our events carries the event's
    ``seq`` as its SSE ``id``. A run started with ``X-Tokenwire-Resumable: true`` survives its
    client leaving (a run nobody reads is cancelled after ``abandon_after_s``); the same request
    again (the same ``threadId`` and ``runId``, the same API key) with ``Last-Event-ID`` carries
    on after that seq instead of starting a run, on any node (404 for a run it does not know).
    A run with ``resume`` entries answers the interrupts a suspended run of ours ended with, and
    carries that run on (see the module docstring)."""
    last = request.headers.get("last-event-id")
    if last is not None:
        return await _agui_resume(service, request, last)
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), decoder(AGUIBody))
    resumable = request.headers.get(RESUMABLE, "").lower() in ("1", "true")
    name = f"agui:{body.thread_id}:{body.run_id}"
    answers = agui_answers(body)
    if answers:  # resume entries answer the interrupts: this new AG-UI run carries ours on
        stream_id, at = await answer(service, owner, answers)
        if resumable:
            await remember(service, owner, name, Named(stream_id, "", at))
        make = _agui_encoder(service, body, stream_id)
        reader = service.frames.reader(stream_id, "agui", make, start=at)
        prelude = make().continued()
        frames = log_frames(service, stream_id, at, reader=reader, prelude=prelude, lagging=False, live_from=at)
        return EventStreamResponse(service, frames, transport="agui", headers=sse_headers())
    _, _, run = await admit(service, request, AGUIBody, agui_request, parsed=(owner, body))
    if resumable:
        await remember(service, owner, name, Named(run.stream_id, "", 0))
    return stateful_stream(
        service, run, "agui", _agui_encoder(service, body, run.stream_id), cancel_on_leave=not resumable
    )


def _agui_encoder(service: RunService, body: AGUIBody, stream_id: str) -> Callable[[], AGUIEvents]:
    """What makes the AG-UI encoder of ``body``'s run (its interrupt ids the server's)."""
    approval_id = functools.partial(service.tokens.approval_id, stream_id)
    return lambda: AGUIEvents(body.thread_id, body.run_id, approval_id=approval_id, messages=body.messages)


async def _agui_resume(service: RunService, request: HTTPRequest, last: str) -> Response:
    """The resumable AG-UI run this request names, after seq ``last``."""
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), decoder(AGUIBody))
    if not (last.isascii() and last.isdigit()):
        raise InvalidRequest(f"Last-Event-ID must be a seq (an integer >= 0), got {last[:40]!r}")
    named = await recall(service, owner, f"agui:{body.thread_id}:{body.run_id}")
    if named is None:
        raise StreamNotFound(f"no resumable AG-UI run {body.run_id!r} of thread {body.thread_id!r}")
    stream_id, _, at = named
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    after = max(int(last) + 1, at)  # an AG-UI run that carried ours on from seq ``at`` starts there
    reader = service.frames.reader(stream_id, "agui", _agui_encoder(service, body, stream_id), start=at)
    history = await service.history(stream_id)
    reader.catch_up(e for e in history if e.seq < after)  # the frames the client has, written to nobody
    encoder = reader.private
    assert isinstance(encoder, AGUIEvents)
    encoder.void = frozenset(s for s in void_seqs(history) if s >= after)  # what it has not seen yet
    frames = log_frames(service, stream_id, after, reader=reader, lagging=False)
    return EventStreamResponse(service, frames, transport="agui", headers=sse_headers())


class Named(NamedTuple):
    """What a client's own id for a run names (an AI SDK chat, an AG-UI run)."""

    stream_id: str
    message_id: str
    """The AI SDK message the run writes ("" for AG-UI)."""
    at: int
    """The seq the client's current response starts at (0, or where an answer carried the run on)."""


async def remember(service: RunService, owner: str, name: str, named: Named) -> None:
    """Remember what a client's own id names, for its API key only (another key's ids are
    invisible to it and cannot clash), on every node of the log: a resume may reach any of them.
    A log that cannot is logged: the run goes on, its resume will not find it."""
    try:
        await service.log.ownership.name_run(owner, name, msgspec.json.encode(named))
    except LogUnavailable as exc:
        logger.warning("run %s: its client's id %r not kept: %s", named.stream_id, name, exc)


async def recall(service: RunService, owner: str, name: str) -> Named | None:
    """The run a client's own id names (:func:`remember`), or None."""
    data = await service.log.ownership.named_run(owner, name)
    return None if data is None else Named(*msgspec.json.decode(data, type=tuple[str, str, int]))


@guard
async def ui_chat(service: RunService, request: HTTPRequest) -> Response:
    """``POST /api/chat``: a run for ``useChat``, streamed as the AI SDK's UI message stream.

    Leaving (a page reload, ``stop()``) does not cancel the run: ``GET /api/chat/{id}/stream``
    resumes it, and a run nobody reads is cancelled after the server's ``abandon_after_s``."""
    owner = service.authenticate(bearer(request.headers))
    body = service.parse(await read_body(service, request), decoder(ChatUIBody))
    answers = approval_answers(body)
    if answers:  # addToolApprovalResponse: the suspended run goes on, and this message with it
        stream_id, at = await answer(service, owner, answers)
        mid = message_id(body, stream_id)
        await remember(service, owner, f"ai:{body.id}", Named(stream_id, mid, at))
        return _ui_stream(service, stream_id, mid, live_from=at, at=at)
    _, _, run = await admit(service, request, ChatUIBody, ui_request, parsed=(owner, body))
    mid = message_id(body, run.stream_id)
    await remember(service, owner, f"ai:{body.id}", Named(run.stream_id, mid, 0))
    return _ui_stream(service, run.stream_id, mid)


async def _active_chat(service: RunService, request: HTTPRequest) -> Named | None:
    """What the chat's latest run is, if it is still going (on any node), or None."""
    owner = service.authenticate(bearer(request.headers))
    named = await recall(service, owner, f"ai:{request.path_params['chat_id']}")
    if named is None:
        return None
    try:
        info = await service.log.info(named.stream_id)
    except StreamNotFound:
        return None
    return None if info.finished else named


@guard
async def ui_chat_stop(service: RunService, request: HTTPRequest) -> Response:
    """``DELETE /api/chat/{id}/stream``: cancel the chat's active run (204 either way).

    ``useChat``'s ``stop()`` only aborts the request, which a resumable chat must survive (a
    reload looks the same to the server); a page calls this beside ``stop()`` to end the run."""
    active = await _active_chat(service, request)
    if active is not None:
        await service.cancel(active.stream_id, "stopped by the client")
    return Response(status_code=204)


@guard
async def ui_chat_resume(service: RunService, request: HTTPRequest) -> Response:
    """``GET /api/chat/{id}/stream``: the chat's active run from the start of its current
    response (the run's start, or where the answer to its approvals carried it on), or 204."""
    active = await _active_chat(service, request)
    if active is None:
        return Response(status_code=204)
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    void = frozenset(void_seqs(await service.history(active.stream_id)))  # the AI SDK cannot take text back
    return _ui_stream(service, active.stream_id, active.message_id, live_from=None, at=active.at, void=void)


def routes(service: RunService) -> list[Route]:
    """The frontend toolkits' routes, bound to ``service``."""
    bind = bound(service)
    return [
        Route("/agui", bind(agui), methods=["POST"]),
        Route("/api/chat", bind(ui_chat), methods=["POST"]),
        Route("/api/chat/{chat_id}/stream", bind(ui_chat_resume), methods=["GET"]),
        Route("/api/chat/{chat_id}/stream", bind(ui_chat_stop), methods=["DELETE"]),
    ]
