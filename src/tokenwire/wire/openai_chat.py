"""OpenAI Chat Completions, both directions (sans-I/O): a request body as our
:class:`~tokenwire.Request` (:func:`chat_request`), and our events as ``chat.completion.chunk``
objects, or a whole response as one ``chat.completion``.

One :class:`ChatCompletionChunks` per stream and reader: it numbers tool calls in the order they
start (``index``), holds the usage until the end (``stream_options.include_usage`` puts it in a
last chunk with no choices) and ends the stream with ``data: [DONE]``. Exactly OpenAI's keys: our
``seq``, ``ts`` and ``stream_id`` never appear in a chunk. Reasoning deltas go out as
``reasoning_content``, the extension DeepSeek, vLLM and llama.cpp's server use (clients that do not
know it ignore it). A ``cancelled`` finish is reported as ``stop`` (OpenAI has no such reason); a provider
that reports no usage gets the run's own count of output tokens and 0 prompt tokens;
an ``error`` event becomes OpenAI's in-stream error object (the SDKs raise ``APIError`` on it).

>>> import json
>>> from tokenwire.events import Start, TextDelta, Done
>>> enc = ChatCompletionChunks("chatcmpl-1", model="m", created=0)
>>> frames = [f for e in [Start(model="m"), TextDelta("Hi"), Done()] for f in enc.feed(e)]
>>> [json.loads(f[6:])["choices"][0]["delta"] for f in frames[:-1]]
[{'role': 'assistant', 'content': 'Hi'}, {}]
>>> sorted(json.loads(frames[0][6:])), frames[-1]
(['choices', 'created', 'id', 'model', 'object'], b'data: [DONE]\\n\\n')
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.core.response import Response
from tokenwire.events import Done, Error, Start, Step, TokenUsage, ToolCall, Usage
from tokenwire.wire.encoder import StreamEncoder

__all__ = [
    "ChatBody",
    "ChatCompletionChunks",
    "chat_completion",
    "chat_request",
    "finish_reason",
    "message",
    "openai_error",
    "text_content",
]


# -- requests ---------------------------------------------------------------------------------------


class _Tool(msgspec.Struct):
    function: ToolSpec
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

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def text_content(content: Any) -> str:
    """A message's ``content`` (a string, null, or a list of text parts) as text."""
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


def message(raw: dict[str, Any]) -> Message:
    """One Chat Completions message as ours (``developer`` is a system message)."""
    role = raw.get("role")
    if role in ("system", "developer"):
        return Message("system", text_content(raw.get("content")))
    if role == "user":
        return Message("user", text_content(raw.get("content")))
    if role == "assistant":
        calls = [
            {
                "call_id": c["id"],
                "name": c["function"]["name"],
                "args": json.loads(c["function"].get("arguments") or "{}"),
            }
            for c in raw.get("tool_calls") or []
        ]
        return Message("assistant", text_content(raw.get("content")), tool_calls=calls or None)
    if role == "tool":
        return Message("tool", text_content(raw.get("content")), tool_call_id=raw.get("tool_call_id"))
    raise ValueError(f"unknown message role {role!r}")


def chat_request(body: ChatBody) -> Request:
    """Our request for an OpenAI one (ValueError / KeyError for what cannot be understood); its
    tools are the client's.

    >>> body = msgspec.json.decode(b'{"model": "m", "messages": [{"role": "user", "content": "Hi"}]}', type=ChatBody)
    >>> chat_request(body).messages
    [Message(role='user', content='Hi', tool_call_id=None, name=None, tool_calls=None)]
    """
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return Request(
        [message(m) for m in body.messages],
        tools=[t.function for t in body.tools],
        tool_choice=choice or "auto",
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        seed=body.seed,
    )


# -- events -----------------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"


def finish_reason(reason: str | None) -> str:
    """Our finish reason in OpenAI's vocabulary (``cancelled`` has no counterpart: ``stop``)."""
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def openai_error(message: str, *, type: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object (``{"error": {...}}``), as its SDKs parse it."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


class ChatCompletionChunks(StreamEncoder):
    """Our events in, Chat Completions SSE frames (``data: {chunk}``) out; one per stream and reader."""

    def __init__(self, completion_id: str, *, model: str, created: int, include_usage: bool = False):
        self.id = completion_id
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self._calls: dict[str, int] = {}  # call id -> index, in the order calls started
        self._streamed: set[str] = set()  # calls whose arguments went out as deltas
        self._opened = False  # the first chunk with content names the role (as OpenAI's does)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + _encode(body) + b"\n\n"

    def _open(self, delta: dict[str, Any]) -> dict[str, Any]:
        """The first chunk with content carries the role; ``content`` is null until text comes
        (OpenAI sends null before tool calls; the AI SDK turns "" into an empty text part)."""
        self._opened = True
        return {"role": "assistant", "content": None, **delta}

    def start(self, event: Start) -> list[bytes]:
        return []  # the role goes out with the first content: only then is it known whether text comes

    def text(self, delta: str) -> list[bytes]:
        if self._opened:
            return [self._chunk({"content": delta})]
        return [self._chunk(self._open({"content": delta}))]

    def reasoning(self, delta: str) -> list[bytes]:
        return [self._chunk({"reasoning_content": delta} if self._opened else self._open({"reasoning_content": delta}))]

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        return [self._call_start(call_id, name)]

    def call_delta(self, call_id: str, delta: str) -> list[bytes]:
        self._streamed.add(call_id)
        # A delta without a start is numbered now (its name comes with the complete call).
        index = self._calls.setdefault(call_id, len(self._calls))
        delta_chunk = {"tool_calls": [{"index": index, "function": {"arguments": delta}}]}
        return [self._chunk(delta_chunk if self._opened else self._open(delta_chunk))]

    def call(self, call: ToolCall) -> list[bytes]:
        return self._complete_call(call)

    def step(self, step: Step) -> list[bytes]:
        """A model turn asked again after its node stopped voids what its first attempt wrote
        (a turn is asked again only when some of it is in the log, and a chat completion reads
        it all), which a chat completion cannot take back: its reader gets an error (code
        ``restarted``; the OpenAI SDK raises it) and nothing more, never a wrong text."""
        restarted = isinstance(step.detail, dict) and step.detail.get("restarted")
        if step.name != "turn" or step.status != "started" or not restarted:
            return []
        self.finished, self.finished_at = True, step.seq
        message = "the model was asked again after its node stopped: the text so far is void; ask again"
        return [b"data: " + _encode(openai_error(message, type="server_error", code="restarted")) + b"\n\n"]

    def done(self, event: Done) -> list[bytes]:
        opened = [] if self._opened else [self._chunk(self._open({"content": ""}))]  # an empty answer
        frames = [*opened, self._chunk({}, finish_reason(event.finish_reason))]
        if self.include_usage:
            # Without the provider's count: the deltas the run produced, prompt unknown (0).
            frames.append(self._usage_chunk(self.usage or TokenUsage(0, event.stats.output_tokens)))
        frames.append(_DONE)
        return frames

    def error(self, event: Error) -> list[bytes]:
        kind = "invalid_request_error" if event.source == "limit" else "server_error"
        return [b"data: " + _encode(openai_error(event.message, type=kind, code=event.code)) + b"\n\n"]

    def _call_start(self, call_id: str, name: str) -> bytes:
        index = self._calls.setdefault(call_id, len(self._calls))
        call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        return self._chunk({"tool_calls": [call]} if self._opened else self._open({"tool_calls": [call]}))

    def _complete_call(self, call: ToolCall) -> list[bytes]:
        """A call that came whole (no deltas): its start and all its arguments at once."""
        if call.call_id in self._streamed:
            return []
        frames = [] if call.call_id in self._calls else [self._call_start(call.call_id, call.name)]
        args = _encode(call.args).decode()
        index = self._calls[call.call_id]
        frames.append(self._chunk({"tool_calls": [{"index": index, "function": {"arguments": args}}]}))
        self._streamed.add(call.call_id)
        return frames

    def _usage_chunk(self, usage: Usage | TokenUsage | None) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _usage(usage),
        }
        return b"data: " + _encode(body) + b"\n\n"


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def chat_completion(response: Response, completion_id: str, *, model: str, created: int) -> dict[str, Any]:
    """A finished run as one ``chat.completion`` object (the non-streaming answer)."""
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": _encode(call.args).decode()},
            }
            for call in response.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(response.finish_reason)}
        ],
        "usage": _usage(response.usage or TokenUsage(0, response.stats.output_tokens if response.stats else 0)),
    }
