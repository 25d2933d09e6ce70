"""OpenAI Responses API streaming.

>>> import openai                                                             # doctest: +SKIP
>>> provider = OpenAIResponses(openai.AsyncOpenAI(), model="gpt-5-mini")       # doctest: +SKIP

:class:`ResponsesMapper` (sans-I/O) maps ``response.output_text.delta`` → ``text.delta``,
``response.reasoning_summary_text.delta`` (and ``reasoning_text``) → ``reasoning.delta``,
``function_call`` items and ``response.function_call_arguments.delta`` → ``tool_call.start`` /
``tool_call.delta`` / ``tool_call`` (complete at ``…arguments.done``), and the terminal
``response.completed`` / ``response.incomplete`` (``max_output_tokens`` → ``length``) /
``response.failed`` / ``error`` events — a failure is never dropped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from tokenwire.core.provider import Part
from tokenwire.core.request import Message, Request
from tokenwire.events import Done, Error, ReasoningDelta, ToolCallDelta, ToolCallStart, Usage
from tokenwire.providers.http import RetryPolicy, finished_tool_call, malformed_chunk, stream_sse, truncated_stream
from tokenwire.providers.openai_chat import classify_openai
from tokenwire.telemetry.otel import trace_headers

__all__ = ["OpenAIResponses", "ResponsesMapper", "responses_body"]


class _Item(msgspec.Struct):
    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _ApiError(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Response(msgspec.Struct):
    status: str | None = None
    usage: _Usage | None = None
    error: _ApiError | None = None
    incomplete_details: _Incomplete | None = None


class _Event(msgspec.Struct):
    type: str
    item_id: str | None = None
    delta: str | None = None
    arguments: str | None = None
    item: _Item | None = None
    response: _Response | None = None
    code: str | None = None
    message: str | None = None


_decode = msgspec.json.Decoder(_Event).decode
_RETRYABLE = frozenset({"server_error", "rate_limit_exceeded", "overloaded"})


class ResponsesMapper:
    """Responses stream events → parts (sans-I/O)."""

    def __init__(self) -> None:
        self._calls: dict[str, tuple[str, str, list[str]]] = {}  # item id → (call id, name, fragments)
        self._called = False
        self._ended = False

    def feed(self, event: str, data: str) -> list[Part]:
        try:
            ev = _decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._ended = True
            return [malformed_chunk(data, exc)]
        kind = ev.type
        if kind == "response.output_text.delta":
            return [ev.delta] if ev.delta else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ReasoningDelta(ev.delta)] if ev.delta else []
        if kind == "response.output_item.added" and ev.item is not None and ev.item.type == "function_call":
            item = ev.item
            call_id = item.call_id or item.id or f"call_{len(self._calls)}"
            self._calls[item.id or call_id] = (call_id, item.name or "", [])
            return [ToolCallStart(call_id=call_id, name=item.name or "")]
        if kind == "response.function_call_arguments.delta" and ev.item_id in self._calls and ev.delta:
            call_id, _, parts = self._calls[ev.item_id]
            parts.append(ev.delta)
            return [ToolCallDelta(call_id=call_id, args_delta=ev.delta)]
        if kind == "response.function_call_arguments.done" and ev.item_id in self._calls:
            call_id, name, parts = self._calls.pop(ev.item_id)
            raw = ev.arguments if ev.arguments is not None else "".join(parts)
            self._called = True
            return [finished_tool_call(call_id, name, raw)]
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._ended = True
            return self._terminal(kind, ev.response or _Response())
        if kind == "error":
            self._ended = True
            code = ev.code or "provider_error"
            return [Error(code=code, message=ev.message or code, retryable=code in _RETRYABLE, source="provider")]
        return []

    def _terminal(self, kind: str, response: _Response) -> list[Part]:
        out: list[Part] = []
        if response.usage is not None:
            out.append(Usage(input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens))
        if kind == "response.failed":
            err = response.error or _ApiError()
            code = err.code or "response_failed"
            out.append(Error(code=code, message=err.message or code, retryable=code in _RETRYABLE, source="provider"))
        elif kind == "response.incomplete":
            reason = response.incomplete_details.reason if response.incomplete_details else None
            out.append(Done(finish_reason="content_filter" if reason == "content_filter" else "length"))
        else:
            out.append(Done(finish_reason="tool_calls" if self._called else "stop"))
        return out

    @property
    def finished(self) -> bool:
        """The end marker (or a terminal error) arrived: the shell stops reading."""
        return self._ended

    def close(self) -> list[Part]:
        if self._ended:
            return []
        return [truncated_stream("response.completed")]


def _items(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "function_call_output", "call_id": m.tool_call_id, "output": m.content}]
    out: list[dict[str, Any]] = []
    if m.content or not m.tool_calls:
        out.append({"role": m.role, "content": m.content})
    for c in m.tool_calls or []:
        out.append(
            {
                "type": "function_call",
                "call_id": c.get("call_id"),
                "name": c.get("name"),
                "arguments": json.dumps(c.get("args", {})),
            }
        )
    return out


def responses_body(request: Request, model: str) -> dict[str, Any]:
    """Keyword arguments of ``responses.create`` for a streaming request."""
    instructions = "\n\n".join(m.content for m in request.messages if m.role == "system")
    body: dict[str, Any] = {
        "model": request.model or model,
        "input": [item for m in request.messages if m.role != "system" for item in _items(m)],
        "stream": True,
    }
    if instructions:
        body["instructions"] = instructions
    if request.tools and request.tool_choice != "none":
        body["tools"] = [
            {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = choice if choice in ("auto", "required") else {"type": "function", "name": choice}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    return body


class OpenAIResponses:
    """Responses API streaming through the user's ``openai.AsyncOpenAI`` client."""

    def __init__(self, client: Any, model: str, *, retry: RetryPolicy | None = None, **params: Any):
        self.client = client.with_options(max_retries=0)
        self.model = model
        self.retry = retry or RetryPolicy()
        self.params = params

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        body = responses_body(request, self.model)
        extra = {**self.params, **request.extra}
        create = self.client.responses.with_streaming_response.create

        def open_response() -> Any:
            return create(**body, extra_body=extra or None, extra_headers=trace_headers() or None)

        async for part in stream_sse(open_response, ResponsesMapper, classify_openai, self.retry):
            yield part
