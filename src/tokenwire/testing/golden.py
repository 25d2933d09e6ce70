"""Golden fixtures: one fixed transcript and its byte-exact stream in each wire format.

The transcript has text, reasoning, two tool calls whose arguments stream interleaved, their
results, usage and an error at the end. Its streams (``chat_completions.sse``,
``responses.sse``, ``agui.sse``, ``ai_sdk.sse``) are files shipped with the package, so you can
assert your own endpoint, proxy or client against the exact bytes tokenwire sends:

>>> from tokenwire.testing import golden
>>> [e.type for e in golden.transcript()][:3]
['start', 'reasoning.delta', 'text.delta']
>>> golden.stream("chat_completions").endswith(b"\\n\\n")
True

Regenerate the files after a deliberate format change with ``python -m tokenwire.testing.golden``
(a test fails while they differ from what the encoders write).
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from tokenwire.events import (
    Error,
    Event,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    decode,
    encode,
)
from tokenwire.wire.agui import AGUIEvents
from tokenwire.wire.ai_sdk import UIMessageStream
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import ChatCompletionChunks
from tokenwire.wire.openai_responses import ResponseEvents

__all__ = ["FORMATS", "encode_stream", "encoder", "stream", "transcript"]

HERE = Path(__file__).with_name("golden")
FORMATS = ("chat_completions", "responses", "agui", "ai_sdk")
"""The wire formats with a golden stream."""


def _build() -> list[Event]:
    parts: list[Event] = [
        Start(model="golden-model"),
        ReasoningDelta("The user wants weather."),
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallStart(call_id="call_a", name="weather"),
        ToolCallStart(call_id="call_b", name="weather"),
        ToolCallDelta(call_id="call_a", args_delta='{"city": "Pa'),
        ToolCallDelta(call_id="call_b", args_delta='{"city": "Rome"}'),
        ToolCallDelta(call_id="call_a", args_delta='ris"}'),
        ToolCall(call_id="call_b", name="weather", args={"city": "Rome"}),
        ToolCall(call_id="call_a", name="weather", args={"city": "Paris"}),
        ToolResult(call_id="call_b", name="weather", result={"temp_c": 21}),
        ToolResult(call_id="call_a", name="weather", result={"temp_c": 17}),
        TextDelta("Paris 17°C, Rome 21°C — "),
        Usage(input_tokens=42, output_tokens=17),
        Error(code="overloaded", message="the model is overloaded", retryable=True, source="provider"),
    ]
    return [_stamp(e, seq) for seq, e in enumerate(parts)]


def _stamp(event: Event, seq: int) -> Event:
    return msgspec.structs.replace(event, stream_id="golden", seq=seq, ts=1_700_000_000.0 + seq / 100)


def transcript() -> list[Event]:
    """The fixed transcript (stamped: stream id ``golden``, seqs from 0, fixed timestamps)."""
    return [decode(line) for line in (HERE / "transcript.jsonl").read_bytes().splitlines() if line]


def stream(fmt: str) -> bytes:
    """The golden byte stream of :func:`transcript` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"no golden stream for {fmt!r}; formats: {', '.join(FORMATS)}")
    return (HERE / f"{fmt}.sse").read_bytes()


def encoder(fmt: str) -> StreamEncoder:
    """A new encoder for ``fmt`` with the golden streams' fixed ids and times."""
    if fmt == "chat_completions":
        return ChatCompletionChunks("chatcmpl-golden", model="golden-model", created=1_700_000_000, include_usage=True)
    if fmt == "responses":
        return ResponseEvents("resp_golden", model="golden-model", created_at=1_700_000_000)
    if fmt == "agui":
        return AGUIEvents("thread-golden", "run-golden")
    if fmt == "ai_sdk":
        return UIMessageStream("msg-golden")
    raise ValueError(f"no encoder for {fmt!r}")


def encode_stream(fmt: str, events: list[Event]) -> bytes:
    """What tokenwire's encoder for ``fmt`` writes for ``events`` (fixed ids and times)."""
    enc = encoder(fmt)
    return b"".join(f for e in events for f in enc.feed(e))


def _write() -> None:
    events = _build()
    HERE.mkdir(exist_ok=True)
    (HERE / "transcript.jsonl").write_bytes(b"".join(encode(e) + b"\n" for e in events))
    for fmt in FORMATS:
        (HERE / f"{fmt}.sse").write_bytes(encode_stream(fmt, events))
    print(f"wrote {HERE}", file=sys.stderr)


if __name__ == "__main__":
    _write()
