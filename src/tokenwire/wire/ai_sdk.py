"""The Vercel AI SDK's UI message stream (v1): what ``useChat`` / ``DefaultChatTransport`` read.

SSE ``data: {chunk}`` frames: ``start`` (the message id) and ``start-step``; text and reasoning
parts as ``text-start`` / ``text-delta`` / ``text-end`` (``reasoning-…`` alike) opened by their
first delta; a tool call as ``tool-input-start`` / ``tool-input-delta`` /
``tool-input-available``, its result ``tool-output-available`` (or ``tool-output-error``); then
``finish-step``, ``finish`` with the finish reason, and ``data: [DONE]``. An ``error`` event
becomes an ``error`` chunk. Only the schema's keys (the 5.x schema is strict). The response
carries the header ``x-vercel-ai-ui-message-stream: v1``.

>>> from tokenwire.events import Start, TextDelta, Done
>>> enc = UIMessageStream("msg-1")
>>> for e in [Start(model="m"), TextDelta("Hi"), Done()]:
...     for frame in enc.feed(e):
...         print(frame.decode().strip())
data: {"type":"start","messageId":"msg-1"}
data: {"type":"start-step"}
data: {"type":"text-start","id":"msg-1-0"}
data: {"type":"text-delta","id":"msg-1-0","delta":"Hi"}
data: {"type":"text-end","id":"msg-1-0"}
data: {"type":"finish-step"}
data: {"type":"finish","finishReason":"stop"}
data: [DONE]
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenwire.events import Done, Error, Start, ToolCall, ToolResult
from tokenwire.wire.encoder import StreamEncoder

__all__ = ["HEADERS", "UIMessageStream"]

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
"""The response header the AI SDK's transport expects on a UI message stream."""

_encode = msgspec.json.Encoder().encode
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool-calls", "content_filter": "content-filter"}


class UIMessageStream(StreamEncoder):
    """Our events in, UI message stream chunks out; one per stream and reader."""

    def __init__(self, message_id: str):
        self.message_id = message_id
        self._n = 0
        self._open: tuple[str, str] | None = None  # (text | reasoning, part id)
        self._names: dict[str, str] = {}  # call id -> tool name

    def _chunk(self, **fields: Any) -> bytes:
        return b"data: " + _encode(fields) + b"\n\n"

    def start(self, event: Start) -> list[bytes]:
        return [self._chunk(type="start", messageId=self.message_id), self._chunk(type="start-step")]

    def text(self, delta: str) -> list[bytes]:
        return self._delta("text", delta)

    def reasoning(self, delta: str) -> list[bytes]:
        return self._delta("reasoning", delta)

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        self._names[call_id] = name
        return [*self._close(), self._chunk(type="tool-input-start", toolCallId=call_id, toolName=name)]

    def call_delta(self, call_id: str, delta: str) -> list[bytes]:
        out = [] if call_id in self._names else self.call_start(call_id, "")
        return [*out, self._chunk(type="tool-input-delta", toolCallId=call_id, inputTextDelta=delta)]

    def call(self, call: ToolCall) -> list[bytes]:
        out = [] if call.call_id in self._names else self.call_start(call.call_id, call.name)
        self._names[call.call_id] = call.name
        return [
            *out,
            self._chunk(type="tool-input-available", toolCallId=call.call_id, toolName=call.name, input=call.args),
        ]

    def result(self, result: ToolResult) -> list[bytes]:
        if result.is_error:
            text = result.result if isinstance(result.result, str) else _encode(result.result).decode()
            return [self._chunk(type="tool-output-error", toolCallId=result.call_id, errorText=text)]
        return [self._chunk(type="tool-output-available", toolCallId=result.call_id, output=result.result)]

    def done(self, event: Done) -> list[bytes]:
        reason = _FINISH.get(event.finish_reason, "other")
        finish = self._chunk(type="finish", finishReason=reason)
        return [*self._close(), self._chunk(type="finish-step"), finish, b"data: [DONE]\n\n"]

    def error(self, event: Error) -> list[bytes]:
        return [*self._close(), self._chunk(type="error", errorText=event.message), b"data: [DONE]\n\n"]

    def _delta(self, kind: str, delta: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open[0] != kind:
            out += self._close()
            part = f"{self.message_id}-{self._n}"
            self._n += 1
            self._open = (kind, part)
            out.append(self._chunk(type=f"{kind}-start", id=part))
        return [*out, self._chunk(type=f"{kind}-delta", id=self._open[1], delta=delta)]

    def _close(self) -> list[bytes]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        return [self._chunk(type=f"{opened[0]}-end", id=opened[1])]
