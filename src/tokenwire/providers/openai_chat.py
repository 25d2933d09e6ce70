"""OpenAI Chat Completions streaming, and any OpenAI-compatible server (llama.cpp, vLLM, Ollama …).

>>> import openai                                                   # doctest: +SKIP
>>> provider = OpenAIChat(openai.AsyncOpenAI(), model="gpt-4o-mini")  # doctest: +SKIP
>>> provider = OpenAICompatible("http://127.0.0.1:8080/v1", model="local")  # doctest: +SKIP

:class:`ChatChunkMapper` is the sans-I/O core: SSE ``data`` payloads in, parts out. It keeps
parallel tool calls apart by ``index`` *and* ``id`` (a server that reuses index 0 for every call
still gets separate calls), emits each ``tool_call`` as soon as its arguments are complete (when
the next call starts, not only at the end), keeps tool calls that follow text, maps in-stream
``{"error": …}`` payloads to ``error`` events, and ends a stream that stops without a finish
reason with a ``transport`` error instead of silently accepting it.

``OpenAIChat`` sends the request through the user's ``openai.AsyncOpenAI`` client (its auth,
base URL, headers, timeouts and HTTP client) via ``with_streaming_response`` and decodes the
bytes itself into msgspec structs: no per-chunk SDK objects.
"""

from __future__ import annotations

import json
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
from tokenwire.wire.partial_json import JSONEnd

__all__ = ["ChatChunkMapper", "OpenAIChat", "OpenAICompatible", "chat_body"]


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallChunk(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCallChunk] | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ApiError(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _ApiError | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class _Call:
    __slots__ = ("args", "done", "end", "id", "name")

    def __init__(self, call_id: str, name: str):
        self.id = call_id
        self.name = name
        self.args: list[str] = []
        self.done = False
        self.end = JSONEnd()


class ChatChunkMapper:
    """Chat Completions chunks → parts (sans-I/O)."""

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}
        self._order: list[_Call] = []
        self._finish: str | None = None
        self._done = False
        self._ended = False

    @property
    def finished(self) -> bool:
        """``[DONE]`` arrived: the shell stops reading (a body left open after it is not a stall)."""
        return self._done

    def feed(self, event: str, data: str) -> list[Part]:
        if data == "[DONE]":
            self._done = True
            return []
        try:
            chunk = _decode_chunk(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._ended = True
            return [malformed_chunk(data, exc)]
        if chunk.error is not None:
            err = chunk.error
            self._ended = True
            code = str(err.code or err.type or "provider_error")
            retryable = code in ("server_error", "overloaded", "rate_limit_exceeded") or err.type == "server_error"
            return [Error(code=code, message=err.message or code, retryable=retryable, source="provider")]
        out: list[Part] = []
        for choice in chunk.choices:
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_content or delta.reasoning
                if reasoning:
                    out.append(ReasoningDelta(reasoning))
                if delta.content:
                    out.append(delta.content)
                if delta.refusal:
                    out.append(delta.refusal)
                if delta.tool_calls:
                    for tc in delta.tool_calls:
                        self._tool_chunk(tc, out)
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
                self._complete_calls(out)
        if chunk.usage is not None:
            out.append(Usage(input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens))
        return out

    def _tool_chunk(self, tc: _ToolCallChunk, out: list[Part]) -> None:
        fn = tc.function
        call = self._calls.get(tc.index)
        if call is None or (tc.id is not None and tc.id != call.id):
            # A new call. Parallel calls may interleave their fragments (index 0, 1, 0, 1 …), so
            # starting one completes no other — except the call it replaces at a reused index.
            if call is not None:
                self._complete(call, out)
            call = _Call(tc.id or f"call_{len(self._order)}", (fn.name if fn else None) or "")
            self._calls[tc.index] = call
            self._order.append(call)
            out.append(ToolCallStart(call_id=call.id, name=call.name))
        elif fn is not None and fn.name and not call.name:
            call.name = fn.name
        if fn is not None and fn.arguments:
            if call.done:
                if fn.arguments.strip():  # text after a complete JSON object: not JSON any more
                    self._ended = True
                    out.append(
                        Error(
                            code="malformed_tool_arguments",
                            message=f"tool call {call.id!r} got more arguments after its JSON object closed: "
                            f"{fn.arguments[:200]!r}",
                            source="provider",
                        )
                    )
                return
            call.args.append(fn.arguments)
            out.append(ToolCallDelta(call_id=call.id, args_delta=fn.arguments))
            if call.end.feed(fn.arguments):
                self._complete(call, out)  # its arguments are a complete JSON value: the tool can start now

    def _complete(self, call: _Call, out: list[Part]) -> None:
        if not call.done:
            call.done = True
            out.append(finished_tool_call(call.id, call.name, "".join(call.args)))

    def _complete_calls(self, out: list[Part]) -> None:
        for call in self._order:
            self._complete(call, out)

    def close(self) -> list[Part]:
        if self._ended:
            return []
        out: list[Part] = []
        self._complete_calls(out)
        if self._finish is None and not self._done:
            out.append(truncated_stream("a finish reason or [DONE]"))
            return out
        out.append(Done(finish_reason=FINISH_REASONS.get(self._finish or "stop", "stop")))
        return out


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.get("call_id"),
                "type": "function",
                "function": {"name": c.get("name"), "arguments": json.dumps(c.get("args", {}))},
            }
            for c in m.tool_calls
        ]
        if not m.content:
            out["content"] = None
    return out


def chat_body(request: Request, model: str, *, max_tokens_field: str = "max_completion_tokens") -> dict[str, Any]:
    """The JSON body of a streaming Chat Completions request."""
    body: dict[str, Any] = {
        "model": request.model or model,
        "messages": [_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools and request.tool_choice != "none":
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
        choice = request.tool_choice
        named = {"type": "function", "function": {"name": choice}}
        body["tool_choice"] = choice if choice in ("auto", "required") else named
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def classify_openai(exc: BaseException) -> Failure | None:
    """openai SDK and httpx exceptions → failures."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        retry_after = parse_retry_after(headers.get("retry-after"))
        body = exc.body if isinstance(exc.body, dict) else {}
        code = str(body.get("code") or body.get("type") or f"http_{status}")
        return Failure(code, f"HTTP {status}: {exc.message}", "provider", status == 429 or status >= 500, retry_after)
    if isinstance(exc, openai.APIConnectionError):
        return Failure("connect_error", f"cannot reach the API: {exc}", "transport", True)
    return classify_httpx(exc)


def classify_httpx(exc: BaseException) -> Failure | None:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        retryable = status == 429 or status >= 500
        return Failure(f"http_{status}", f"HTTP {status} from {exc.request.url}", "provider", retryable, retry_after)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Failure("connect_error", f"cannot connect: {exc!r}", "transport", True)
    if isinstance(exc, httpx.TransportError):
        return Failure("connection_lost", f"the connection failed mid-stream: {exc!r}", "transport", True)
    return None


class OpenAIChat:
    """Chat Completions streaming through the user's ``openai.AsyncOpenAI`` client.

    The SDK's own retries are switched off for these requests; :class:`RetryPolicy` retries
    before the first event only. ``params`` are extra body fields (``top_p``, ``reasoning_effort`` …).
    """

    def __init__(self, client: Any, model: str, *, retry: RetryPolicy | None = None, **params: Any):
        self.client = client.with_options(max_retries=0)
        self.model = model
        self.retry = retry or RetryPolicy()
        self.params = params

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        body = chat_body(request, self.model)
        extra = {**self.params, **request.extra}
        create = self.client.chat.completions.with_streaming_response.create

        def open_response() -> Any:
            return create(**body, extra_body=extra or None, extra_headers=trace_headers() or None)

        async for part in stream_sse(open_response, ChatChunkMapper, classify_openai, self.retry):
            yield part


class OpenAICompatible:
    """Any OpenAI-compatible ``/chat/completions`` server, over httpx (no SDK needed).

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8080/v1``). Pass
    ``client`` to reuse an ``httpx.AsyncClient`` (its timeouts, proxies, limits); otherwise one is
    created and closed with :meth:`aclose`. That one does not cap concurrent streams (httpx's
    default pool holds 100 connections: a 101st concurrent run would wait for a connection and be
    reported as a stalled provider); cap runs with the server's ``max_live_runs`` instead.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        client: Any = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        **params: Any,
    ):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0), limits=httpx.Limits(max_connections=None)
        )
        self.retry = retry or RetryPolicy()
        self.params = params

    async def aclose(self) -> None:
        """Close the HTTP client this provider created."""
        if self._own_client:
            await self.client.aclose()

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        body = {**chat_body(request, self.model, max_tokens_field="max_tokens"), **self.params, **request.extra}
        client = self.client

        import contextlib

        @contextlib.asynccontextmanager
        async def open_response() -> AsyncIterator[Any]:
            headers = {**self.headers, **trace_headers()}
            async with client.stream("POST", self.url, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    response.raise_for_status()
                yield response

        parts = stream_sse(
            open_response, ChatChunkMapper, classify_httpx, self.retry, iter_bytes=lambda r: r.aiter_bytes()
        )
        async for part in parts:
            yield part
