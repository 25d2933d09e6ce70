"""Anthropic Messages streaming.

>>> import anthropic                                                          # doctest: +SKIP
>>> provider = Anthropic(anthropic.AsyncAnthropic(), model="claude-sonnet-4-5")  # doctest: +SKIP

:class:`AnthropicMapper` (sans-I/O) maps ``text_delta`` → ``text.delta``, ``thinking_delta`` →
``reasoning.delta``, ``tool_use`` blocks and ``input_json_delta`` → ``tool_call.start`` /
``tool_call.delta`` / ``tool_call`` (complete at ``content_block_stop``), ``message_start`` and
``message_delta`` usage → one ``usage`` event, ``stop_reason`` → the finish reason, and in-stream
``error`` events (``overloaded_error`` arrives with HTTP 200) → ``error`` events that are retried
when nothing was emitted yet. Partial tool arguments are never re-parsed per delta (the SDK's
own stream helper re-parses the whole buffer on every ``input_json_delta``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from tokenwire.core.provider import Part
from tokenwire.core.request import Message, Request
from tokenwire.events import Done, Error, FinishReason, ReasoningDelta, ToolCallDelta, ToolCallStart, Usage
from tokenwire.providers.http import (
    Failure,
    RetryPolicy,
    finished_tool_call,
    malformed_chunk,
    parse_retry_after,
    stream_sse,
    truncated_stream,
)
from tokenwire.telemetry.otel import trace_headers

__all__ = ["Anthropic", "AnthropicMapper", "messages_body"]


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Block(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    text: str | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    usage: _Usage | None = None


class _ApiError(msgspec.Struct):
    type: str = "error"
    message: str = ""


class _Event(msgspec.Struct):
    type: str
    index: int = 0
    delta: _Delta | None = None
    content_block: _Block | None = None
    message: _Message | None = None
    usage: _Usage | None = None
    error: _ApiError | None = None


_decode = msgspec.json.Decoder(_Event).decode

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
RETRYABLE = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class AnthropicMapper:
    """Messages stream events → parts (sans-I/O)."""

    def __init__(self) -> None:
        self._tools: dict[int, tuple[str, str, list[str]]] = {}
        self._input_tokens = 0
        self._stop: str | None = None
        self._stopped = False
        self._ended = False

    def feed(self, event: str, data: str) -> list[Part]:
        try:
            ev = _decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._ended = True
            return [malformed_chunk(data, exc)]
        kind = ev.type
        if kind == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            if d.type == "text_delta" and d.text:
                return [d.text]
            if d.type == "thinking_delta" and d.thinking:
                return [ReasoningDelta(d.thinking)]
            if d.type == "input_json_delta" and d.partial_json and ev.index in self._tools:
                call_id, _, parts = self._tools[ev.index]
                parts.append(d.partial_json)
                return [ToolCallDelta(call_id=call_id, args_delta=d.partial_json)]
            return []
        if kind == "content_block_start" and ev.content_block is not None:
            block = ev.content_block
            if block.type in ("tool_use", "server_tool_use") and block.id and block.name:
                self._tools[ev.index] = (block.id, block.name, [])
                return [ToolCallStart(call_id=block.id, name=block.name)]
            if block.type == "text" and block.text:
                return [block.text]
            return []
        if kind == "content_block_stop" and ev.index in self._tools:
            call_id, name, parts = self._tools.pop(ev.index)
            return [finished_tool_call(call_id, name, "".join(parts))]
        if kind == "message_start" and ev.message is not None and ev.message.usage is not None:
            u = ev.message.usage
            self._input_tokens = (
                (u.input_tokens or 0) + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
            )
            return []
        if kind == "message_delta":
            if ev.delta is not None and ev.delta.stop_reason:
                self._stop = ev.delta.stop_reason
            if ev.usage is not None and ev.usage.output_tokens is not None:
                return [Usage(input_tokens=self._input_tokens, output_tokens=ev.usage.output_tokens)]
            return []
        if kind == "message_stop":
            self._stopped = True
            return []
        if kind == "error":
            self._ended = True
            err = ev.error or _ApiError()
            return [
                Error(
                    code=err.type, message=err.message or err.type, retryable=err.type in RETRYABLE, source="provider"
                )
            ]
        return []  # ping and event types added later

    @property
    def finished(self) -> bool:
        """The end marker (or a terminal error) arrived: the shell stops reading."""
        return self._ended

    def close(self) -> list[Part]:
        if self._ended:
            return []
        if not self._stopped:
            return [truncated_stream("message_stop")]
        return [Done(finish_reason=STOP_REASONS.get(self._stop or "end_turn", "stop"))]


def _content(m: Message) -> Any:
    if m.role == "assistant" and m.tool_calls:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        blocks += [
            {"type": "tool_use", "id": c.get("call_id"), "name": c.get("name"), "input": c.get("args", {})}
            for c in m.tool_calls
        ]
        return blocks
    if m.role == "tool":
        error = m.content.startswith("error: ")
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": error}]
    return m.content


def prefill(request: Request) -> str | None:
    """The text a request asks the model to continue (a trailing assistant message without tool
    calls: Anthropic's *prefill*), or None."""
    last = request.messages[-1] if request.messages else None
    return last.content if last is not None and last.role == "assistant" and not last.tool_calls else None


def messages_body(request: Request, model: str, *, default_max_tokens: int = 1024) -> dict[str, Any]:
    """Keyword arguments of ``messages.create`` for a streaming request. A trailing assistant
    message is sent as the prefill the model continues, without its trailing whitespace (which
    the API refuses); an empty one is left out."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    messages: list[dict[str, Any]] = []
    ask = list(request.messages)
    if (text := prefill(request)) is not None:
        ask[-1] = Message("assistant", text.rstrip())
        if not ask[-1].content:
            ask.pop()
    for m in ask:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        content = _content(m)
        if messages and messages[-1]["role"] == role and m.role == "tool" and isinstance(messages[-1]["content"], list):
            messages[-1]["content"] += content  # consecutive tool results travel in one user turn
        else:
            messages.append({"role": role, "content": content})
    body: dict[str, Any] = {
        "model": request.model or model,
        "messages": messages,
        "max_tokens": request.max_tokens or default_max_tokens,
        "stream": True,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(
            choice, {"type": "tool", "name": choice}
        )
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.stop:
        body["stop_sequences"] = request.stop
    return body


def classify_anthropic(exc: BaseException) -> Failure | None:
    """anthropic SDK (and its httpx2 transport) exceptions → failures."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        raw_error = body.get("error")
        err: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        code = str(err.get("type") or f"http_{status}")
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return Failure(
            code, f"HTTP {status}: {exc.message}", "provider", status in (408, 429) or status >= 500, retry_after
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return Failure("connect_error", f"cannot reach the API: {exc}", "transport", True)
    for cls in type(exc).__mro__:
        if cls.__name__ == "TransportError" and cls.__module__.startswith(("httpx", "httpx2")):
            return Failure("connection_lost", f"the connection failed mid-stream: {exc!r}", "transport", True)
    return None


class Anthropic:
    """Messages streaming through the user's ``anthropic.AsyncAnthropic`` client.

    ``params`` are extra request fields (``thinking``, ``top_k``, ``metadata`` …).

    It continues a cut-off answer from its text (``continues_prefix``: a durable run taken over
    mid-turn asks it to go on from the prefill, not again), except with ``thinking`` on, which
    the API does not combine with a prefill.
    """

    def __init__(
        self, client: Any, model: str, *, retry: RetryPolicy | None = None, max_tokens: int = 1024, **params: Any
    ):
        self.client = client.with_options(max_retries=0)
        self.model = model
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self.params = params

    @property
    def continues_prefix(self) -> bool:
        return "thinking" not in self.params

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        body = messages_body(request, self.model, default_max_tokens=self.max_tokens)
        text = prefill(request)
        # The prefill went without its trailing whitespace: the model's first words bring their
        # own, which the prefix (kept whole in the answer) already has.
        trim = text is not None and text != text.rstrip()
        extra = {**self.params, **request.extra}
        create = self.client.messages.with_streaming_response.create

        def open_response() -> Any:
            return create(**body, extra_body=extra or None, extra_headers=trace_headers() or None)

        async for part in stream_sse(open_response, AnthropicMapper, classify_anthropic, self.retry):
            if trim and part.__class__ is str:
                trim = False
                part = part.lstrip()
                if not part:
                    continue
            yield part
