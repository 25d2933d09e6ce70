"""The event schema: round trips, clear decode errors, generated JSON Schema."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tokenwire
from tokenwire.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Data,
    Done,
    Error,
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
    decode,
    encode,
    from_builtins,
    json_schema,
    load_jsonl,
    to_builtins,
)

ENV = {"stream_id": "s", "seq": 3, "ts": 1.5}
SAMPLES = [
    Start(model="m", request_id="r", meta={"user": "u"}, **ENV),
    TextDelta("héllo 🌍", **ENV),
    ReasoningDelta("hmm", **ENV),
    ToolCallStart(call_id="c1", name="get_weather", **ENV),
    ToolCallDelta(call_id="c1", args_delta='{"city": "Pa', **ENV),
    ToolCall(call_id="c1", name="get_weather", args={"city": "Paris"}, **ENV),
    ToolResult(call_id="c1", name="get_weather", result={"temp": 21}, is_error=False, **ENV),
    Step(name="retrieval", status="finished", detail={"docs": 3}, **ENV),
    Data(name="sources", data=[{"url": "a.md"}], id="s1", transient=True, **ENV),
    StateSnapshot(snapshot={"step": 1, "found": []}, **ENV),
    StateDelta(delta=[{"op": "replace", "path": "/step", "value": 2}], **ENV),
    Usage(input_tokens=10, output_tokens=20, **ENV),
    Done(finish_reason="length", usage=TokenUsage(10, 20), stats=Stats(duration_s=1.0, ttft_s=0.1), **ENV),
    Error(code="stalled", message="no tokens", retryable=True, source="limit", **ENV),
]


def test_every_type_has_a_sample() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_round_trip(event: tokenwire.Event) -> None:
    data = encode(event)
    obj = json.loads(data)
    assert obj["type"] == event.type
    assert obj["seq"] == 3 and obj["stream_id"] == "s" and obj["ts"] == 1.5
    assert decode(data) == event
    assert decode(data.decode()) == event
    assert from_builtins(to_builtins(event)) == event


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[1].text = "x"  # type: ignore[misc]


def test_type_tag_is_readable_on_class_and_instance() -> None:
    assert TextDelta.type == "text.delta"
    assert Done().type == "done"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"type":"text.delta","text":"a"', "malformed event JSON"),
        (b"", "malformed event JSON"),
        (b"[1,2]", "invalid event"),
        (b'{"type":"nope","text":"a"}', "Invalid value 'nope'"),
        (b'{"text":"a"}', "missing required field `type`"),
        (b'{"type":"text.delta"}', "missing required field `text`"),
        (b'{"type":"text.delta","text":42}', "Expected `str`, got `int`"),
        (b'{"type":"step","name":"x","status":"paused"}', "Invalid enum value 'paused'"),
        (b'{"type":"error","code":"x","message":"m","source":"elsewhere"}', "Invalid enum value 'elsewhere'"),
    ],
)
def test_decode_errors_say_what_was_wrong(data: bytes, message: str) -> None:
    with pytest.raises(tokenwire.errors.EventDecodeError) as info:
        decode(data)
    assert message in str(info.value)
    assert isinstance(info.value, tokenwire.TokenwireError)


def test_decode_error_quotes_long_input_truncated() -> None:
    data = b'{"type":"text.delta","oops":' + b'"x' * 500
    with pytest.raises(tokenwire.errors.EventDecodeError) as info:
        decode(data)
    assert len(str(info.value)) < 300


def test_from_builtins_rejects_bad_dict() -> None:
    with pytest.raises(tokenwire.errors.EventDecodeError, match="missing required field `call_id`"):
        from_builtins({"type": "tool_call", "name": "x", "args": {}})


def test_json_schema_is_generated_and_versioned() -> None:
    schema = json_schema()
    assert schema["version"] == SCHEMA_VERSION
    defs = schema["$defs"]
    assert set(defs) >= {"Start", "TextDelta", "Done", "Error", "Stats", "TokenUsage"}
    assert defs["TextDelta"]["properties"]["type"] == {"enum": ["text.delta"]}
    assert "text" in defs["TextDelta"]["required"]
    assert sorted(defs["Error"]["properties"]["source"]["enum"]) == [
        "internal",
        "limit",
        "provider",
        "tool",
        "transport",
    ]


def test_load_jsonl_names_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.jsonl"
    path.write_bytes(encode(SAMPLES[0]) + b"\n\n" + b'{"type":"bogus"}\n')
    with pytest.raises(tokenwire.errors.EventDecodeError, match=r"t\.jsonl:3: invalid event"):
        load_jsonl(path)


@given(st.text(), st.integers(min_value=0, max_value=2**53), st.floats(allow_nan=False, allow_infinity=False))
def test_text_delta_round_trips_any_text(text: str, seq: int, ts: float) -> None:
    event = TextDelta(text, stream_id="s", seq=seq, ts=ts)
    assert decode(encode(event)) == event


@given(st.binary(max_size=200))
def test_decode_never_crashes_on_garbage(data: bytes) -> None:
    with contextlib.suppress(tokenwire.errors.EventDecodeError):
        decode(data)


def test_msgspec_struct_envelope_defaults_mark_unstamped_events() -> None:
    event = TextDelta("x")
    assert (event.stream_id, event.seq, event.ts) == ("", -1, 0.0)
    assert msgspec.structs.replace(event, seq=1).seq == 1
