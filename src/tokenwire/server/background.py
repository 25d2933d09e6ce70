"""The OpenAI Responses API's background mode, on the run log: a response outlives its request.

- ``POST /v1/responses`` with ``"background": true`` starts a run that nobody's leaving cancels
  (without ``stream``: the response object comes back at once, ``in_progress``);
- ``GET /v1/responses/{id}``: the response as it stands (``in_progress`` with the output so far,
  or its final object);
- ``GET /v1/responses/{id}?stream=true&starting_after=N``: its events after ``sequence_number``
  N, then live: a client that dropped resumes where it was, on any node;
- ``POST /v1/responses/{id}/cancel``: ends it (``cancelled``), on whichever node produces it.

The log is the one cursor behind it: a response's events are its run's events encoded by
:class:`~tokenwire.wire.openai_responses.ResponseEvents`, which numbers them the same way every
time, so ``starting_after`` is a position in that encoding of the log (the encoder is fed from
seq 0 and the frames up to N are left out). Only the API key that created a response reads or
cancels it (another key's is a 404, as OpenAI answers). A response id is ``resp_`` and the
stream id.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenwire.errors import InvalidRequest, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES
from tokenwire.server.compat import error_response
from tokenwire.server.durable import RunRecord
from tokenwire.server.http import bound, guarded
from tokenwire.server.service import RunService, bearer
from tokenwire.server.streaming import PING, EventStreamResponse
from tokenwire.wire.openai_responses import ResponseEvents

__all__ = ["CANCEL_WAIT_S", "encoder_for", "routes"]

CANCEL_WAIT_S = 10.0
"""How long a cancel waits for the run's end to reach the log before it answers (still
``in_progress`` then: a producer that ignores cancels for that long)."""


def encoder_for(stream_id: str, record: RunRecord) -> ResponseEvents:
    """The response's encoder as the request that created it had it (its model and tools)."""
    tools = [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
        for t in record.request.tools
    ]
    return ResponseEvents(f"resp_{stream_id}", model=record.request.model or record.provider, tools=tools)


async def _owned(service: RunService, request: HTTPRequest) -> tuple[str, RunRecord]:
    """The response's stream id and its run's record, for the API key that created it only."""
    owner = service.authenticate(bearer(request.headers))
    response_id = request.path_params["response_id"]
    sid = response_id.removeprefix("resp_")
    record = await service.durable.load(sid) if response_id.startswith("resp_") and sid else None
    if record is None or record.owner != owner:
        raise StreamNotFound(f"no response {response_id!r}")
    return sid, record


async def _so_far(service: RunService, sid: str, encoder: ResponseEvents) -> dict[str, object]:
    """The response object as the log has it now."""
    for event in await service.history(sid):
        encoder.feed(event)
    return encoder.current()


async def _events(service: RunService, sid: str, encoder: ResponseEvents, skip: int) -> AsyncIterator[bytes]:
    """The response's SSE events after the first ``skip``, then live (keep-alives while idle)."""
    with contextlib.suppress(SeqEvicted, StreamNotFound):  # gone from retention: the body ends
        reading = service.reading(sid, 0, idle_s=service.config.ping_s, lagging=False)
        with reading as batches:
            async for batch in batches:
                out = [frame for event in batch for frame in encoder.feed(event)]
                if skip:
                    dropped = min(skip, len(out))
                    del out[:dropped]
                    skip -= dropped
                if out:
                    yield b"".join(out)
                elif not batch:
                    yield PING


async def retrieve(service: RunService, request: HTTPRequest) -> Response:
    """``GET /v1/responses/{id}`` (``?stream=true&starting_after=N`` to stream it from there)."""
    sid, record = await _owned(service, request)
    encoder = encoder_for(sid, record)
    if request.query_params.get("stream", "false").lower() not in ("true", "1"):
        return JSONResponse(await _so_far(service, sid, encoder))
    after = request.query_params.get("starting_after", "-1")
    if not after.lstrip("-").isdigit() or int(after) < -1:
        raise InvalidRequest(f"starting_after is a sequence_number (an integer >= 0), got {after!r}")
    refused = service.over_capacity()
    if refused is not None:
        raise refused
    body = _events(service, sid, encoder, int(after) + 1)
    headers = {"x-accel-buffering": "no", "x-request-id": uuid.uuid4().hex}
    return EventStreamResponse(service, body, transport="openai.responses", headers=headers)


async def cancel(service: RunService, request: HTTPRequest) -> Response:
    """``POST /v1/responses/{id}/cancel``: the response object once its run has ended."""
    sid, record = await _owned(service, request)
    info = await service.log.info(sid)
    if not info.finished and await service.cancel(sid, "cancelled by the client"):
        # wait (bounded) for the end in the log: the producer may be another node
        with contextlib.suppress(TimeoutError, SeqEvicted, StreamNotFound):
            async with asyncio.timeout(CANCEL_WAIT_S):
                async for event in service.log.read(sid, info.next_seq):
                    if event.__class__ in TERMINAL_TYPES:
                        break
    return JSONResponse(await _so_far(service, sid, encoder_for(sid, record)))


def routes(service: RunService) -> list[Route]:
    """The background mode's routes, bound to ``service`` (errors in OpenAI's shape)."""
    bind = bound(service)
    return [
        Route("/v1/responses/{response_id}", bind(guarded(retrieve, error_response)), methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", bind(guarded(cancel, error_response)), methods=["POST"]),
    ]
