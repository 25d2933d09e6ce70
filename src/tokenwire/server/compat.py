"""Endpoints that speak other ecosystems' protocols, so their clients use a tokenwire server as is:
OpenAI's ``POST /v1/chat/completions`` and ``POST /v1/responses`` (stream and not) and
``GET /v1/models``; AG-UI's ``POST /agui`` (CopilotKit and other AG-UI frontends); the Vercel AI
SDK's ``POST /api/chat`` with ``GET`` and ``DELETE /api/chat/{id}/stream`` (``useChat``'s resume;
stop). Each is a server run like any other (limits, ceilings, capacity, the event log), read
through one of the encoders in :mod:`tokenwire.wire`.

Tools a request declares are the client's: the model's calls stream out and the run ends with
them; the client sends results back in the next request, as in each ecosystem. OpenAI clients do
not resume, so a streaming OpenAI client that disconnects before the end cancels its run; an AI
SDK chat survives its client leaving (it resumes). ``model`` names one of the server's
providers; a server with a single provider serves it whatever the name (as llama.cpp's server
does); otherwise an unknown model is a 404. Errors have OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response

from tokenwire.errors import OverCapacity, ShuttingDown, Unauthorized
from tokenwire.events import Event
from tokenwire.request import Message, Request, ToolSpec
from tokenwire.wire.agui import AGUIEvents
from tokenwire.wire.ai_sdk import HEADERS as UI_HEADERS
from tokenwire.wire.ai_sdk import UIMessageStream
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import ChatCompletionChunks, chat_completion, openai_error
from tokenwire.wire.openai_responses import ResponseEvents

if TYPE_CHECKING:
    from tokenwire.server.app import _Server
    from tokenwire.server.runs import Run

__all__ = [
    "AGUIBody",
    "ChatBody",
    "ChatUIBody",
    "ResponsesBody",
    "agui",
    "chat_completions",
    "models",
    "responses",
    "ui_chat",
    "ui_chat_resume",
    "ui_chat_stop",
]


_TERMINAL = ("done", "error")


class _Function(msgspec.Struct):
    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})


class _Tool(msgspec.Struct):
    function: _Function
    type: str = "function"


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatBody(msgspec.Struct, kw_only=True):
    """The body of ``POST /v1/chat/completions`` (fields OpenAI clients send that do not apply
    here, such as ``user`` or ``n``, are accepted and ignored)."""

    model: str
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] = []
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ValueError("only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ValueError("message content must be a string or a list of text parts")


def _message(raw: dict[str, Any]) -> Message:
    role = raw.get("role")
    if role in ("system", "developer"):
        return Message("system", _text(raw.get("content")))
    if role == "user":
        return Message("user", _text(raw.get("content")))
    if role == "assistant":
        calls = [
            {
                "call_id": c["id"],
                "name": c["function"]["name"],
                "args": json.loads(c["function"].get("arguments") or "{}"),
            }
            for c in raw.get("tool_calls") or []
        ]
        return Message("assistant", _text(raw.get("content")), tool_calls=calls or None)
    if role == "tool":
        return Message("tool", _text(raw.get("content")), tool_call_id=raw.get("tool_call_id"))
    raise ValueError(f"unknown message role {role!r}")


def to_request(body: ChatBody, max_tokens: int | None) -> Request:
    """Our request for an OpenAI one (ValueError / KeyError for what cannot be understood)."""
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return Request(
        [_message(m) for m in body.messages],
        tools=[ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools],
        tool_choice=choice or "auto",
        temperature=body.temperature,
        max_tokens=max_tokens,
        stop=stop,
        seed=body.seed,
    )


def _error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None) -> Response:
    return JSONResponse(openai_error(message, type=type, code=code), status_code=status)


async def models(server: _Server, request: HTTPRequest) -> Response:
    """``GET /v1/models``: the server's providers, by name."""
    try:
        server.check_api_key(_bearer(request))
    except Unauthorized as exc:
        return _error(401, str(exc), code="invalid_api_key")
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tokenwire"} for name in server.providers]
    return JSONResponse({"object": "list", "data": data})


def _bearer(request: HTTPRequest) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


class ResponsesBody(msgspec.Struct, kw_only=True):
    """The body of ``POST /v1/responses`` (function tools; other fields are accepted and ignored)."""

    model: str
    input: str | Annotated[list[dict[str, Any]], Meta(min_length=1)]
    instructions: str | None = None
    stream: bool = False
    tools: list[dict[str, Any]] = []
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None


def _response_messages(body: ResponsesBody) -> list[Message]:
    messages = [Message("system", body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*messages, Message("user", body.input)]
    for item in body.input:
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [
                    {"type": "text", "text": p.get("text", "")}
                    if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
                    else p
                    for p in content
                ]
            messages.append(_message({"role": item.get("role"), "content": content}))
        elif kind == "function_call":
            call = {"call_id": item["call_id"], "name": item["name"], "args": json.loads(item.get("arguments") or "{}")}
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not last.content and last.tool_calls:
                messages[-1] = Message("assistant", "", tool_calls=[*last.tool_calls, call])
            else:
                messages.append(Message("assistant", "", tool_calls=[call]))
        elif kind == "function_call_output":
            messages.append(Message("tool", _text(item.get("output")), tool_call_id=item.get("call_id")))
        else:
            raise ValueError(f"input items of type {kind!r} are not supported")
    return messages


def responses_request(body: ResponsesBody, max_tokens: int | None) -> Request:
    """Our request for a Responses API one."""
    tools = []
    for t in body.tools:
        if t.get("type") != "function":
            raise ValueError(f"only function tools are supported, got {t.get('type')!r}")
        tools.append(
            ToolSpec(t["name"], t.get("description") or "", t.get("parameters") or {"type": "object", "properties": {}})
        )
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = choice["name"]
    return Request(
        _response_messages(body),
        tools=tools,
        tool_choice=choice or "auto",
        temperature=body.temperature,
        max_tokens=max_tokens,
    )


async def responses(server: _Server, request: HTTPRequest) -> Response:
    """``POST /v1/responses``."""

    def make(body: Any, run_id: str, created: int) -> ResponseEvents:
        return ResponseEvents(f"resp_{run_id}", model=body.model, created_at=created, tools=body.tools)

    def whole(body: Any, run: Run, encoder: ResponseEvents) -> Response:
        assert encoder.final is not None
        if encoder.final["status"] == "failed":
            error = encoder.final["error"]
            return _error(500, error["message"], type="server_error", code=error["code"])
        return JSONResponse(encoder.final)

    return await _serve(
        server,
        request,
        ResponsesBody,
        lambda body: responses_request(body, server.max_tokens(body.max_output_tokens)),
        "openai.responses",
        make,
        whole,
    )


async def chat_completions(server: _Server, request: HTTPRequest) -> Response:
    """``POST /v1/chat/completions``."""

    def make(body: Any, run_id: str, created: int) -> ChatCompletionChunks:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return ChatCompletionChunks(
            f"chatcmpl-{run_id}", model=body.model, created=created, include_usage=include_usage
        )

    def whole(body: Any, run: Run, encoder: ChatCompletionChunks) -> Response:
        result = run.handle.result()
        if result.error is not None:
            status = 502 if result.error.source == "provider" else 500
            return _error(status, result.error.message, type="server_error", code=result.error.code)
        return JSONResponse(chat_completion(result, encoder.id, model=body.model, created=encoder.created))

    return await _serve(
        server,
        request,
        ChatBody,
        lambda body: to_request(body, server.max_tokens(body.max_completion_tokens or body.max_tokens)),
        "openai.chat",
        make,
        whole,
    )


async def _serve(
    server: _Server,
    request: HTTPRequest,
    body_type: type[Any],
    convert: Callable[[Any], Request],
    fmt: str,
    make_encoder: Callable[[Any, str, int], StreamEncoder],
    whole: Callable[[Any, Run, Any], Response],
    *,
    headers: dict[str, str] | None = None,
    cancel_on_disconnect: bool = True,
    on_run: Callable[[Any, Run, str], None] | None = None,
) -> Response:
    """One OpenAI-style request: auth, body, model routing, a server run; then either the whole
    answer (``whole``, after the run ends) or the run's events through the format's encoder."""
    try:
        owner = server.check_api_key(_bearer(request))
    except Unauthorized as exc:
        return _error(401, str(exc), code="invalid_api_key")
    raw = await request.body()
    if len(raw) > server.config.max_body_bytes:
        return _error(413, f"the body exceeds {server.config.max_body_bytes} bytes", code="body_too_large")
    try:
        body = msgspec.json.decode(raw, type=body_type)
        if not body.model:
            provider = server.default_provider
        elif body.model in server.providers:
            provider = body.model
        elif len(server.providers) == 1:
            provider = next(iter(server.providers))
        else:
            return _error(404, f"The model `{body.model}` does not exist", code="model_not_found")
        model, ours = server.provider(provider), convert(body)
        observers = server.telemetry(model, ours, request.headers)
        run = server.runs.start(model, ours, observers=observers, owner=owner, limits=server.limits(None))
    except RecursionError:
        return _error(400, "invalid request: JSON nested too deeply")
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
        return _error(400, f"invalid request: {exc}")
    except ShuttingDown as exc:
        return _error(503, str(exc), type="server_error", code="shutting_down")
    except OverCapacity as exc:
        response = _error(429, str(exc), type="rate_limit_error", code="over_capacity")
        response.headers["retry-after"] = str(server.config.retry_after_s)
        return response
    if on_run is not None:
        on_run(body, run, owner)
    created = int(time.time())

    def make() -> StreamEncoder:
        return make_encoder(body, run.stream_id, created)

    if not body.stream:
        encoder = make()
        await run.handle.wait()
        unavailable = _unavailable(server, run)
        if unavailable is not None:
            return unavailable
        async for batch in server.log.batches(run.stream_id, 0, follow=False):
            for event in batch:
                encoder.feed(event)
        return whole(body, run, encoder)
    await run.handle.ready()
    unavailable = _unavailable(server, run)
    if unavailable is not None:
        return unavailable
    return encoded_stream(server, run, fmt, make, headers=headers, cancel_on_disconnect=cancel_on_disconnect)


async def _before(server: _Server, stream_id: str, seq: int) -> list[Event]:
    """The stream's events before ``seq``, from 0."""
    earlier: list[Event] = []
    events = server.log.read(stream_id, 0, follow=False)
    try:
        async for event in events:
            if event.seq >= seq:
                break
            earlier.append(event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return earlier


def _unavailable(server: _Server, run: Run) -> Response | None:
    """503 + Retry-After when the run could not be written to the event log, else None."""
    unwritable = server.unwritable(run)
    if unwritable is None:
        return None
    response = _error(503, unwritable, type="server_error", code="log_unavailable")
    response.headers["retry-after"] = str(server.config.retry_after_s)
    return response


def encoded_stream(
    server: _Server,
    run: Run,
    fmt: str,
    make: Callable[[], StreamEncoder],
    *,
    headers: dict[str, str] | None = None,
    cancel_on_disconnect: bool = True,
) -> Response:
    """A run's events from seq 0 in the stateful format ``fmt``, as an SSE response.

    Readers of one run in one format share its encoder (:meth:`FrameCache.shared`): each event is
    encoded once per format. ``make`` builds the encoder: the shared one on first use, and a
    reader's private one if it falls behind the shared window (fed the events it already read)."""
    sid = run.stream_id
    reader = server.frames.reader(sid, fmt, make)

    async def frames() -> AsyncIterator[bytes]:
        finished = False
        try:
            with server.runs.reader(sid):
                async for batch in server.log.batches(sid, 0, idle_s=server.config.ping_s):
                    if not batch:
                        yield b": ping\n\n"  # a comment: OpenAI's SSE decoders skip it
                        continue
                    out = []
                    for event in batch:
                        frame = reader.frame(event)
                        if frame is None:  # behind the shared window: on with an encoder of its own
                            reader.catch_up(await _before(server, sid, event.seq))
                            frame = reader.frame(event)
                            assert frame is not None
                        out.append(frame)
                        if event.type in _TERMINAL:
                            finished = True
                            break
                    if out:
                        yield b"".join(out)
                    if finished:
                        return
        finally:
            if not finished and cancel_on_disconnect:
                run.handle.cancel("the client disconnected")  # OpenAI clients do not resume

    base = {"cache-control": "no-cache", "x-accel-buffering": "no", "x-request-id": uuid.uuid4().hex}
    return server.event_stream(frames(), {**base, **(headers or {})}, transport=fmt)


class _ClientTool(msgspec.Struct):
    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})


class AGUIBody(msgspec.Struct, kw_only=True, rename="camel"):
    """AG-UI's ``RunAgentInput`` (``state``, ``context`` and ``forwardedProps`` are accepted; the
    model is the server's default provider, or ``forwardedProps.model``)."""

    thread_id: str
    run_id: str
    messages: list[dict[str, Any]]
    tools: list[_ClientTool] = []
    state: Any = None
    context: list[Any] = []
    forwarded_props: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return str((self.forwarded_props or {}).get("model") or "")

    stream = True


def agui_request(body: AGUIBody, max_tokens: int | None) -> Request:
    """Our request for an AG-UI run: its messages, and its tools as the client's (frontend) tools."""
    messages = []
    for m in body.messages:
        role = m.get("role")
        if role in ("reasoning", "activity"):
            continue  # what the client kept of earlier runs' thinking and UI activity: not model input
        if role == "assistant" and m.get("toolCalls"):
            m = {**m, "tool_calls": m["toolCalls"]}
        elif role == "tool":
            m = {**m, "tool_call_id": m.get("toolCallId")}
        elif role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"messages of role {role!r} are not supported")
        messages.append(_message(m))
    if not messages:
        raise ValueError("an AG-UI run needs at least one message")
    tools = [ToolSpec(t.name, t.description, t.parameters) for t in body.tools]
    return Request(messages, tools=tools, max_tokens=max_tokens)


async def agui(server: _Server, request: HTTPRequest) -> Response:
    """``POST /agui``: an AG-UI run over SSE."""

    def make(body: Any, run_id: str, created: int) -> AGUIEvents:
        return AGUIEvents(body.thread_id, body.run_id)

    def whole(body: Any, run: Run, encoder: AGUIEvents) -> Response:  # AG-UI always streams
        raise AssertionError("unreachable")

    return await _serve(
        server, request, AGUIBody, lambda body: agui_request(body, server.max_tokens(None)), "agui", make, whole
    )


# -- the Vercel AI SDK: useChat's DefaultChatTransport ---------------------------------------------------


class ChatUIBody(msgspec.Struct, kw_only=True):
    """What ``DefaultChatTransport`` posts: the chat id and its UI messages (``trigger``,
    ``messageId`` and fields the app adds are accepted; ``model`` picks a provider).

    ``tools`` (the app adds it with the transport's ``body`` option) declares the page's own
    tools as ``{name, description, parameters}``: a call to one ends the run, ``useChat``'s
    ``onToolCall`` answers it with ``addToolResult``, and the next request carries the output."""

    id: str
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    model: str = ""
    tools: list[_ClientTool] = []
    stream = True


def _ui_messages(body: ChatUIBody) -> list[Message]:
    """UI messages (parts) to ours: text parts joined; tool parts with an output (or an error)
    become the assistant's call and a tool message."""
    out: list[Message] = []
    for m in body.messages:
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages of role {role!r} are not supported")
        parts = m.get("parts", [])
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise ValueError("a UI message's parts must be a list of objects")
        text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        calls, results = [], []
        for p in parts:
            kind = str(p.get("type", ""))
            state = p.get("state")
            if kind.startswith("tool-") and state in ("output-available", "output-error"):
                calls.append({"call_id": p["toolCallId"], "name": kind[5:], "args": p.get("input") or {}})
                output = p.get("output")
                if state == "output-error":
                    content = f"error: {p.get('errorText', '')}"
                else:
                    content = output if isinstance(output, str) else msgspec.json.encode(output).decode()
                results.append(Message("tool", content, tool_call_id=p["toolCallId"]))
        out.append(Message(role, text, tool_calls=calls or None))
        out += results
    return out


async def ui_chat(server: _Server, request: HTTPRequest) -> Response:
    """``POST /api/chat``: a run for ``useChat``, streamed as the AI SDK's UI message stream.

    Leaving (a page reload, ``stop()``) does not cancel the run: ``GET /api/chat/{id}/stream``
    resumes it, and a run nobody reads is cancelled after the server's ``abandon_after_s``."""

    def message_id(body: Any, run_id: str) -> str:
        # A request that ends with the assistant's message (tool outputs sent back) continues that
        # message: the SDK appends the new parts to it only when the stream names the same id.
        last = body.messages[-1]
        if last.get("role") == "assistant" and isinstance(last.get("id"), str):
            return str(last["id"])
        return f"msg-{run_id}"

    def make(body: Any, run_id: str, created: int) -> UIMessageStream:
        return UIMessageStream(message_id(body, run_id))

    def remember(body: Any, run: Run, owner: str) -> None:
        # Chat ids are the client's: one key's chat is invisible to another key (and cannot clash).
        server.chats[(owner, body.id)] = (run.stream_id, message_id(body, run.stream_id))
        while len(server.chats) > server.config.max_runs:
            server.chats.pop(next(iter(server.chats)))

    return await _serve(
        server,
        request,
        ChatUIBody,
        lambda body: Request(
            _ui_messages(body),
            tools=[ToolSpec(t.name, t.description, t.parameters) for t in body.tools],
            max_tokens=server.max_tokens(None),
        ),
        "ai_sdk",
        make,
        lambda body, run, encoder: _error(400, "the UI message stream is always streamed"),
        headers=UI_HEADERS,
        cancel_on_disconnect=False,
        on_run=remember,
    )


def _active_chat_run(server: _Server, request: HTTPRequest) -> tuple[Run, str] | Response:
    """The chat's live run and its message id, or the response to give instead (401, 204)."""
    try:
        owner = server.check_api_key(_bearer(request))
    except Unauthorized as exc:
        return _error(401, str(exc), code="invalid_api_key")
    stream_id, message_id = server.chats.get((owner, request.path_params["chat_id"]), ("", ""))
    run = server.runs.get(stream_id) if stream_id else None
    if run is None or run.finished:
        return Response(status_code=204)
    return run, message_id


async def ui_chat_stop(server: _Server, request: HTTPRequest) -> Response:
    """``DELETE /api/chat/{id}/stream``: cancel the chat's active run (204 either way).

    ``useChat``'s ``stop()`` only aborts the request, which a resumable chat must survive (a
    reload looks the same to the server); a page calls this beside ``stop()`` to end the run."""
    active = _active_chat_run(server, request)
    if isinstance(active, Response):
        return active
    active[0].handle.cancel("stopped by the client")
    return Response(status_code=204)


async def ui_chat_resume(server: _Server, request: HTTPRequest) -> Response:
    """``GET /api/chat/{id}/stream``: the chat's active run from its start, or 204 (none)."""
    active = _active_chat_run(server, request)
    if isinstance(active, Response):
        return active
    run, message_id = active
    return encoded_stream(
        server, run, "ai_sdk", lambda: UIMessageStream(message_id), headers=UI_HEADERS, cancel_on_disconnect=False
    )
