"""Our events to and from their protobuf messages (``tokenwire.proto``), sans-I/O.

:data:`PROTO` is the wire format of gRPC readers: the serialized :class:`Event` message, encoded
once per event and shared by every gRPC call that reads it (:class:`~tokenwire.wire.FrameCache`).
A Session call's frame is the same bytes inside a ``SessionReply`` (:func:`session_frame`: a tag
and a length in front, no second encode).

>>> from tokenwire.events import TextDelta
>>> data = PROTO.encode(TextDelta("Hi", stream_id="s", seq=3, ts=1.5))
>>> from_proto(pb.Event.FromString(data))
TextDelta(text='Hi', stream_id='s', seq=3, ts=1.5)
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenwire.events import (
    Data,
    Done,
    Error,
    Event,
    Parent,
    ReasoningDelta,
    Start,
    StateDelta,
    StateSnapshot,
    Stats,
    Step,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.wire.cache import WireFormat

__all__ = ["PROTO", "from_proto", "session_frame", "to_proto"]

_json = msgspec.json.Encoder()
_decode_json = msgspec.json.Decoder()


def _dumps(value: Any) -> str:
    return _json.encode(value).decode()


def _loads(text: str, empty: Any = None) -> Any:
    return _decode_json.decode(text) if text else empty


def to_proto(event: Event) -> pb.Event:
    """The protobuf message of one event."""
    m = pb.Event(stream_id=event.stream_id, seq=event.seq, ts=event.ts)
    cls = event.__class__
    if cls is TextDelta:
        m.text_delta.text = event.text  # type: ignore[union-attr]
    elif cls is ReasoningDelta:
        m.reasoning_delta.text = event.text  # type: ignore[union-attr]
    elif cls is ToolCallDelta:
        m.tool_call_delta.call_id = event.call_id  # type: ignore[union-attr]
        m.tool_call_delta.args_delta = event.args_delta  # type: ignore[union-attr]
    elif isinstance(event, Start):
        m.start.CopyFrom(pb.Start(model=event.model, request_id=event.request_id, meta=_dumps(event.meta)))
        if event.parent is not None:
            p = event.parent
            m.start.parent.CopyFrom(pb.Parent(stream_id=p.stream_id, call_id=p.call_id, depth=p.depth))
    elif isinstance(event, ToolCallStart):
        m.tool_call_start.CopyFrom(pb.ToolCallStart(call_id=event.call_id, name=event.name))
    elif isinstance(event, ToolCall):
        m.tool_call.CopyFrom(pb.ToolCall(call_id=event.call_id, name=event.name, args=_dumps(event.args)))
    elif isinstance(event, ToolResult):
        m.tool_result.CopyFrom(
            pb.ToolResult(call_id=event.call_id, name=event.name, result=_dumps(event.result), is_error=event.is_error)
        )
    elif isinstance(event, Step):
        m.step.CopyFrom(pb.Step(name=event.name, status=event.status, detail=_dumps(event.detail)))
    elif isinstance(event, Usage):
        m.usage.CopyFrom(pb.Usage(input_tokens=event.input_tokens, output_tokens=event.output_tokens))
    elif isinstance(event, Data):
        m.data.CopyFrom(pb.Data(name=event.name, data=_dumps(event.data), id=event.id, transient=event.transient))
    elif isinstance(event, StateSnapshot):
        m.state_snapshot.snapshot = _dumps(event.snapshot)
    elif isinstance(event, StateDelta):
        m.state_delta.delta = _dumps(event.delta)
    elif isinstance(event, Done):
        s = event.stats
        done = pb.Done(
            finish_reason=event.finish_reason,
            stats=pb.Stats(
                duration_s=s.duration_s,
                ttft_s=s.ttft_s,
                output_tokens=s.output_tokens,
                tokens_per_s=s.tokens_per_s,
                max_gap_s=s.max_gap_s,
                stalls=s.stalls,
            ),
            reason=event.reason,
        )
        usage = event.usage
        if usage is not None:
            done.usage.CopyFrom(pb.TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens))
        m.done.CopyFrom(done)
    elif isinstance(event, Error):
        m.error.CopyFrom(
            pb.Error(code=event.code, message=event.message, retryable=event.retryable, source=event.source)
        )
    else:  # pragma: no cover - every event type is listed above
        raise TypeError(f"no protobuf message for {event!r}")
    return m


def from_proto(m: pb.Event) -> Event:
    """The event a protobuf message carries (a client's decoder)."""
    env: dict[str, Any] = {"stream_id": m.stream_id, "seq": m.seq, "ts": m.ts}
    kind = m.WhichOneof("kind")
    if kind == "text_delta":
        return TextDelta(m.text_delta.text, **env)
    if kind == "reasoning_delta":
        return ReasoningDelta(m.reasoning_delta.text, **env)
    if kind == "tool_call_delta":
        return ToolCallDelta(call_id=m.tool_call_delta.call_id, args_delta=m.tool_call_delta.args_delta, **env)
    if kind == "start":
        st = m.start
        parent = (
            Parent(stream_id=st.parent.stream_id, call_id=st.parent.call_id, depth=st.parent.depth)
            if st.HasField("parent")
            else None
        )
        return Start(model=st.model, request_id=st.request_id, meta=_loads(st.meta, {}), parent=parent, **env)
    if kind == "tool_call_start":
        return ToolCallStart(call_id=m.tool_call_start.call_id, name=m.tool_call_start.name, **env)
    if kind == "tool_call":
        c = m.tool_call
        return ToolCall(call_id=c.call_id, name=c.name, args=_loads(c.args, {}), **env)
    if kind == "tool_result":
        r = m.tool_result
        return ToolResult(call_id=r.call_id, name=r.name, result=_loads(r.result), is_error=r.is_error, **env)
    if kind == "step":
        return Step(name=m.step.name, status=m.step.status, detail=_loads(m.step.detail), **env)  # type: ignore[arg-type]
    if kind == "usage":
        return Usage(input_tokens=m.usage.input_tokens, output_tokens=m.usage.output_tokens, **env)
    if kind == "data":
        x = m.data
        return Data(name=x.name, data=_loads(x.data), id=x.id, transient=x.transient, **env)
    if kind == "state_snapshot":
        return StateSnapshot(snapshot=_loads(m.state_snapshot.snapshot), **env)
    if kind == "state_delta":
        return StateDelta(delta=_loads(m.state_delta.delta, []), **env)
    if kind == "done":
        d, s = m.done, m.done.stats
        return Done(
            finish_reason=d.finish_reason,  # type: ignore[arg-type]
            usage=TokenUsage(d.usage.input_tokens, d.usage.output_tokens) if d.HasField("usage") else None,
            stats=Stats(
                duration_s=s.duration_s,
                ttft_s=s.ttft_s if s.HasField("ttft_s") else None,
                output_tokens=s.output_tokens,
                tokens_per_s=s.tokens_per_s,
                max_gap_s=s.max_gap_s,
                stalls=s.stalls,
            ),
            reason=d.reason if d.HasField("reason") else None,
            **env,
        )
    if kind == "error":
        e = m.error
        return Error(code=e.code, message=e.message, retryable=e.retryable, source=e.source, **env)  # type: ignore[arg-type]
    raise ValueError(f"an Event message without a kind (seq {m.seq})")


def _encode(event: Event) -> bytes:
    data: bytes = to_proto(event).SerializeToString()
    return data


PROTO = WireFormat("proto", _encode)
"""The serialized ``Event`` message: gRPC's frame, shared by all gRPC readers."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def session_frame(event_bytes: bytes) -> bytes:
    """``SessionReply(event=…)`` around an already serialized ``Event`` (field 1, length-delimited)."""
    return b"\x0a" + _varint(len(event_bytes)) + event_bytes
