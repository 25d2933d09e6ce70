"""The OpenAI Responses API, both directions (sans-I/O): a request body as our
:class:`~tokenwire.Request` (:func:`responses_request`), and our events as ``response.*`` SSE events.

One :class:`ResponseEvents` per stream and reader. It opens an output item when its first delta
arrives (a ``message`` with one ``output_text`` part, a ``reasoning`` item, a ``function_call``
per tool call, in the order they start) and closes every open item before the terminal
``response.completed`` / ``response.incomplete`` (``length``) / ``response.failed`` (an ``error``),
which carries the whole response object. ``sequence_number`` counts every event from 0. Only the
API's keys: our ``seq`` never appears.

>>> import json
>>> from tokenwire.events import Start, TextDelta, Done
>>> enc = ResponseEvents("resp_1", model="m", created_at=0)
>>> frames = [f for e in [Start(model="m"), TextDelta("Hi"), Done()] for f in enc.feed(e)]
>>> [f.split(b"\\n", 1)[0].decode() for f in frames]  # doctest: +NORMALIZE_WHITESPACE
['event: response.created', 'event: response.in_progress', 'event: response.output_item.added',
 'event: response.content_part.added', 'event: response.output_text.delta',
 'event: response.output_text.done', 'event: response.content_part.done',
 'event: response.output_item.done', 'event: response.completed']
>>> json.loads(frames[-1].split(b"data: ", 1)[1])["response"]["output"][0]["content"][0]["text"]
'Hi'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.events import Done, Error, Start, Step, TokenUsage, ToolCall
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import message, text_content

__all__ = ["ResponseEvents", "ResponsesBody", "referenced_ids", "response_of", "responses_request"]


# -- requests ---------------------------------------------------------------------------------------


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
    background: bool = False
    """Run on whether or not the client stays (``GET /v1/responses/{id}`` reads it later)."""


def referenced_ids(body: ResponsesBody) -> list[str]:
    """The ids of the ``item_reference`` items of ``body`` (items of responses this server served)."""
    if isinstance(body.input, str):
        return []
    return [str(item.get("id")) for item in body.input if item.get("type") == "item_reference"]


def response_of(item_id: str) -> str | None:
    """The stream id of a response item id this encoder writes (``msg_``/``rs_``/``fc_`` +
    ``{stream id}_{index}``), or None."""
    kind, _, rest = item_id.partition("_")
    sid, _, index = rest.rpartition("_")
    return sid if kind in ("msg", "rs", "fc") and sid and index.isdigit() else None


def _messages(body: ResponsesBody, items: Mapping[str, dict[str, Any]]) -> list[Message]:
    messages = [Message("system", body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*messages, Message("user", body.input)]
    for item in body.input:
        if item.get("type") == "item_reference":
            ref = items.get(str(item.get("id")))
            if ref is None:
                raise ValueError(f"item_reference to {item.get('id')!r}: no such item in a response of this server")
            item = ref
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
            messages.append(message({"role": item.get("role"), "content": content}))
        elif kind == "function_call":
            call = {"call_id": item["call_id"], "name": item["name"], "args": json.loads(item.get("arguments") or "{}")}
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not last.content and last.tool_calls:
                messages[-1] = Message("assistant", "", tool_calls=[*last.tool_calls, call])
            else:
                messages.append(Message("assistant", "", tool_calls=[call]))
        elif kind == "function_call_output":
            messages.append(Message("tool", text_content(item.get("output")), tool_call_id=item.get("call_id")))
        elif kind == "reasoning":
            continue  # the model's own earlier thinking, sent back by clients: not model input here
        else:
            raise ValueError(f"input items of type {kind!r} are not supported")
    return messages


def responses_request(body: ResponsesBody, items: Mapping[str, dict[str, Any]] | None = None) -> Request:
    """Our request for a Responses API one (ValueError / KeyError for what cannot be understood);
    ``items`` resolves its ``item_reference`` items (by id: items of responses this server served)."""
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
        _messages(body, items or {}),
        tools=tools,
        tool_choice=choice or "auto",
        temperature=body.temperature,
        max_tokens=body.max_output_tokens,
    )


# -- events -----------------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


class _Item:
    __slots__ = ("body", "head", "index", "mid", "parts", "tail")

    def __init__(self, index: int, body: dict[str, Any]):
        self.index = index
        self.body = body
        self.parts: list[str] = []  # text, reasoning or arguments received
        self.head = self.mid = self.tail = b""  # the delta frame's fixed bytes (see _delta)


class ResponseEvents(StreamEncoder):
    """Our events in, Responses API SSE frames out; one per stream and reader."""

    def __init__(
        self, response_id: str, *, model: str, created_at: int | None = None, tools: list[dict[str, Any]] | None = None
    ):
        self.id = response_id
        self.model = model
        self.created_at = created_at
        """Given, or the start event's time: the same however often the log is encoded again."""
        self.tools = tools or []
        self._seq = 0
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the message or reasoning item receiving deltas
        self._calls: dict[str, _Item] = {}
        self._turn_start = 0  # the first item of the current model turn
        self._void: set[int] = set()  # items of attempts a restarted turn voided
        self.final: dict[str, Any] | None = None
        """The whole response object, once the terminal event was fed."""

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(body) + b"\n\n"

    def response(self, status: str, **extra: Any) -> dict[str, Any]:
        """The response object as it stands (the terminal events carry it whole)."""
        usage = self.usage
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at or 0,
            "status": status,
            "model": self.model,
            "output": [item.body for item in self._items if item.index not in self._void],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": self.tools,
            "usage": None
            if usage is None
            else {
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            **extra,
        }

    def current(self) -> dict[str, Any]:
        """The response as the events fed so far make it: the final object, or ``in_progress``."""
        return self.final or self.response("in_progress")

    def start(self, event: Start) -> list[bytes]:
        if self.created_at is None:
            self.created_at = int(event.ts)
        created = self.response("in_progress")
        return [
            self._event("response.created", response=created),
            self._event("response.in_progress", response=created),
        ]

    def text(self, delta: str) -> list[bytes]:
        return self._delta("message", delta)

    def reasoning(self, delta: str) -> list[bytes]:
        return self._delta("reasoning", delta)

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        return self._call_start(call_id, name)

    def call_delta(self, call_id: str, delta: str) -> list[bytes]:
        out = [] if call_id in self._calls else self._call_start(call_id, "")
        item = self._calls[call_id]
        item.parts.append(delta)
        return [*out, self._event(_ARGS_DELTA, item_id=item.body["id"], output_index=item.index, delta=delta)]

    def call(self, call: ToolCall) -> list[bytes]:
        return self._call_done(call)

    def step(self, step: Step) -> list[bytes]:
        """A model turn asked again (after its node stopped) voids the items of its first
        attempt: they end ``incomplete`` and the response's ``output`` leaves them out, so its
        text (``output_text``) holds the final attempt only; the new attempt's items follow."""
        if step.name != "turn" or step.status != "started":
            return []
        if not (isinstance(step.detail, dict) and step.detail.get("restarted")):
            out = self._close_open()  # a turn's output starts items of its own
            self._turn_start = len(self._items)
            return out
        out = self._close_open("incomplete")
        for item in self._items[self._turn_start :]:
            if item.body["type"] == "function_call" and item.body["status"] != "completed":
                out += self._finish_call(item, "incomplete")
            self._void.add(item.index)
        self._turn_start = len(self._items)
        return out

    def done(self, event: Done) -> list[bytes]:
        out = self._close_open()
        for item in self._calls.values():
            if item.body["status"] == "in_progress":  # a call the model never finished
                out += self._finish_call(item)
        if event.finish_reason == "length":
            self.final = self.response("incomplete", incomplete_details={"reason": "max_output_tokens"})
            return [*out, self._event("response.incomplete", response=self.final)]
        if self.usage is None and event.stats is not None:  # a provider that reports none: our own count
            self.usage = TokenUsage(0, event.stats.output_tokens)
        self.final = self.response("cancelled" if event.finish_reason == "cancelled" else "completed")
        return [*out, self._event("response.completed", response=self.final)]

    def error(self, event: Error) -> list[bytes]:
        out = self._close_open()
        self.final = self.response("failed", error={"code": event.code, "message": event.message})
        return [*out, self._event("response.failed", response=self.final)]

    def _delta(self, kind: str, text: str) -> list[bytes]:
        item = self._open
        if item is not None and item.body["type"] == kind:  # the hot path: one more delta of the open item
            item.parts.append(text)
            seq = self._seq
            self._seq = seq + 1
            return [b"%s%d%s%s%s" % (item.head, seq, item.mid, _encode(text), item.tail)]
        out = self._close_open()  # a new item: the other kind's, if open, is complete
        item = self._open = self._add(kind)
        out.append(self._event("response.output_item.added", output_index=item.index, item=item.body))
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            ids = {"item_id": item.body["id"], "output_index": item.index, "content_index": 0}
            out.append(self._event("response.content_part.added", **ids, part=part))
        delta_type = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        # The frame of every delta of this item, but for its sequence number and text (the same
        # keys, in the same order, as _event would write).
        item.head = b'event: %s\ndata: {"type":"%s","sequence_number":' % (delta_type.encode(), delta_type.encode())
        item.mid = b',"item_id":%s,"output_index":%d,"content_index":0,"delta":' % (
            _encode(item.body["id"]),
            item.index,
        )
        item.tail = b',"logprobs":[]}\n\n' if kind == "message" else b"}\n\n"
        return out + self._delta(kind, text)

    def _add(self, kind: str) -> _Item:
        index = len(self._items)
        suffix = f"{self.id.removeprefix('resp_')}_{index}"
        if kind == "message":
            body = {
                "id": f"msg_{suffix}",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
        else:
            body = {"id": f"rs_{suffix}", "type": "reasoning", "summary": [], "content": []}
        item = _Item(index, body)
        self._items.append(item)
        return item

    def _close_open(self, status: str = "completed") -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        text = "".join(item.parts)
        body = item.body
        ids = {"item_id": body["id"], "output_index": item.index, "content_index": 0}
        if body["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            body["content"] = [part]
            body["status"] = status
            return [
                self._event("response.output_text.done", **ids, text=text, logprobs=[]),
                self._event("response.content_part.done", **ids, part=part),
                self._event("response.output_item.done", output_index=item.index, item=body),
            ]
        body["content"] = [{"type": "reasoning_text", "text": text}]
        return [
            self._event("response.reasoning_text.done", **ids, text=text),
            self._event("response.output_item.done", output_index=item.index, item=body),
        ]

    def _call_start(self, call_id: str, name: str) -> list[bytes]:
        out = self._close_open()
        index = len(self._items)
        body = {
            "id": f"fc_{self.id.removeprefix('resp_')}_{index}",
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": "",
            "status": "in_progress",
        }
        item = self._calls[call_id] = _Item(index, body)
        self._items.append(item)
        return [*out, self._event("response.output_item.added", output_index=index, item=dict(body))]

    def _call_done(self, call: ToolCall) -> list[bytes]:
        out = [] if call.call_id in self._calls else self._call_start(call.call_id, call.name)
        item = self._calls[call.call_id]
        item.body["name"] = call.name
        if not item.parts:  # it came whole: its arguments as one delta
            args = _encode(call.args).decode()
            item.parts.append(args)
            out.append(self._event(_ARGS_DELTA, item_id=item.body["id"], output_index=item.index, delta=args))
        return out + self._finish_call(item)

    def _finish_call(self, item: _Item, status: str = "completed") -> list[bytes]:
        body = item.body
        body["arguments"] = "".join(item.parts)
        body["status"] = status
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=body["id"],
                output_index=item.index,
                name=body["name"],
                arguments=body["arguments"],
            ),
            self._event("response.output_item.done", output_index=item.index, item=body),
        ]


_ARGS_DELTA = "response.function_call_arguments.delta"
