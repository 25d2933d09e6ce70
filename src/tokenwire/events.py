"""The event schema: the contract between producers and every subscriber.

Each event is a frozen msgspec Struct tagged by ``type`` with the envelope ``stream_id``, ``seq``
and ``ts`` (see DESIGN.md, "Event schema"). Providers build events without an envelope (the
envelope fields default to placeholders) and the stream engine stamps them; everything downstream
of the engine sees fully stamped events.

>>> from tokenwire.events import TextDelta, encode, decode
>>> ev = TextDelta("Hello", stream_id="s1", seq=1, ts=1700000000.0)
>>> encode(ev)
b'{"type":"text.delta","text":"Hello","stream_id":"s1","seq":1,"ts":1700000000.0}'
>>> decode(encode(ev)) == ev
True

The JSON Schema (``tokenwire schema``) is generated from these types; bump
:data:`SCHEMA_VERSION` when they change.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, TypeAlias

import msgspec

from tokenwire.errors import EventDecodeError

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL_TYPES",
    "Done",
    "Error",
    "ErrorSource",
    "Event",
    "EVENT_TYPES",
    "EventBase",
    "FinishReason",
    "Parent",
    "ReasoningDelta",
    "Start",
    "Stats",
    "Step",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolResult",
    "Usage",
    "Data",
    "StateDelta",
    "StateSnapshot",
    "decode",
    "encode",
    "from_builtins",
    "json_schema",
    "load_jsonl",
    "to_builtins",
]

SCHEMA_VERSION = "1.2.0"
"""Version of the event schema; semver: a new optional field is minor, anything else major."""

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "cancelled"]
ErrorSource: TypeAlias = Literal["transport", "provider", "tool", "limit", "internal"]


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Envelope shared by every event."""

    type: ClassVar[str]
    """The event's ``type`` tag (``"text.delta"`` …), readable on instances and classes."""
    stream_id: str = ""
    """Id of the stream; the correlation id across processes."""
    seq: int = -1
    """0, 1, 2 … per stream with no gaps; the dedupe and resume key. -1 before stamping."""
    ts: float = 0.0
    """Producer wall-clock time, float seconds since the epoch."""


class Parent(msgspec.Struct, frozen=True, kw_only=True):
    """The run that started a child run, named in the child's ``start`` (a run tree)."""

    stream_id: str
    """The parent run's stream."""
    call_id: str = ""
    """The parent's tool call that started the child ("" when not started by a tool call)."""
    depth: int = 1
    """How deep the child is in its tree: 1 under a root run, 2 under one of its children …"""


class Start(EventBase, frozen=True, tag="start"):
    """The stream began. Always seq 0."""

    model: str
    """Model (or provider-specific model name) that produces the stream."""
    request_id: str = ""
    """Caller-supplied or generated id of the request that started the stream."""
    meta: dict[str, Any] = {}
    """Free-form metadata given by the caller (user id, session, trace ids)."""
    parent: Parent | None = None
    """Set on a child run: the run and tool call that started it; None on a root run."""


class TextDelta(EventBase, frozen=True, tag="text.delta"):
    """Text to append to the answer."""

    text: str
    """The text fragment, usually one token."""


class ReasoningDelta(EventBase, frozen=True, tag="reasoning.delta"):
    """Model reasoning to append, when the provider exposes it."""

    text: str
    """The reasoning fragment."""


class ToolCallStart(EventBase, frozen=True, tag="tool_call.start"):
    """The model began a tool call; sent as soon as the tool is named."""

    call_id: str
    """Provider's id of this call; keeps parallel calls apart."""
    name: str
    """Name of the tool being called."""


class ToolCallDelta(EventBase, frozen=True, tag="tool_call.delta"):
    """A raw JSON fragment of a tool call's arguments."""

    call_id: str
    """Id of the call the fragment belongs to."""
    args_delta: str
    """Raw JSON text to append to the call's arguments."""


class ToolCall(EventBase, frozen=True, tag="tool_call"):
    """A tool call whose arguments are complete and parsed."""

    call_id: str
    """Id of the call."""
    name: str
    """Name of the tool."""
    args: dict[str, Any]
    """Parsed arguments object."""


class ToolResult(EventBase, frozen=True, tag="tool_result"):
    """Outcome of executing a tool call."""

    call_id: str
    """Id of the call this result answers."""
    name: str
    """Name of the tool."""
    result: Any
    """JSON-serialisable result, or an error message when ``is_error``."""
    is_error: bool = False
    """True when the tool failed or its arguments were invalid."""


class Step(EventBase, frozen=True, tag="step"):
    """Progress of a larger unit of work: agent turns, retrieval, citations, approvals."""

    name: str
    """What the step is (``"turn"``, ``"retrieval"``, a tool's progress label …)."""
    status: Literal["started", "finished"]
    """Whether the step started or finished."""
    detail: Any = None
    """Free-form JSON detail (counts, citations, progress)."""


class Data(EventBase, frozen=True, tag="data"):
    """The application's own named JSON payload (progress, retrieved documents, UI data).

    ``transient`` data is delivered to the readers connected when it is appended and to the
    run's observers, and is left out of every replay (a late reader, a resume, ``history``) and
    of the run's :class:`~tokenwire.Response`. A later ``data`` with the same ``name`` and a
    non-empty ``id`` replaces the earlier one where a format reconciles parts (AI SDK).
    """

    name: str
    """What the payload is (``"sources"``, ``"progress"`` …): ``data-<name>`` in the AI SDK."""
    data: Any = None
    """The payload (JSON)."""
    id: str = ""
    """Optional: the part this one updates (same ``name`` and ``id``)."""
    transient: bool = False
    """Delivered live only: never retained in a replay or the response."""


class StateSnapshot(EventBase, frozen=True, tag="state.snapshot"):
    """The run's shared state, whole (AG-UI ``STATE_SNAPSHOT``); later ``state.delta`` events
    patch it (:class:`tokenwire.core.state.SharedState` keeps the current value)."""

    snapshot: Any
    """The state (JSON)."""


class StateDelta(EventBase, frozen=True, tag="state.delta"):
    """A change to the run's shared state as RFC 6902 JSON Patch operations (AG-UI
    ``STATE_DELTA``), applied in order to the state so far (``null`` before any snapshot)."""

    delta: list[dict[str, Any]]
    """The operations (``{"op": "replace", "path": "/step", "value": 2}`` …)."""


class Usage(EventBase, frozen=True, tag="usage"):
    """Token usage as reported by the provider."""

    input_tokens: int
    """Prompt tokens."""
    output_tokens: int
    """Generated tokens."""


class TokenUsage(msgspec.Struct, frozen=True):
    """Token counts carried inside ``done``."""

    input_tokens: int = 0
    """Prompt tokens."""
    output_tokens: int = 0
    """Generated tokens."""


class Stats(msgspec.Struct, frozen=True):
    """Timing of a finished stream, measured by the engine."""

    duration_s: float = 0.0
    """From ``start`` to the terminal event."""
    ttft_s: float | None = None
    """Time to first token (first text, reasoning or tool-call event); None if none came."""
    output_tokens: int = 0
    """Provider-reported output tokens, or the number of deltas when it reported none."""
    tokens_per_s: float = 0.0
    """Output tokens per second after the first token."""
    max_gap_s: float = 0.0
    """Longest pause between two consecutive deltas."""
    stalls: int = 0
    """Number of pauses between deltas of at least ``Limits.stall_gap_s``."""


class Done(EventBase, frozen=True, tag="done"):
    """Terminal: the stream finished normally or was cancelled."""

    finish_reason: FinishReason = "stop"
    """Why it finished: ``stop``, ``length``, ``tool_calls``, ``content_filter`` or ``cancelled``."""
    usage: TokenUsage | None = None
    """Final token usage, when the provider reported it."""
    stats: Stats = Stats()
    """Timing measured by the engine."""
    reason: str | None = None
    """Human-readable detail, e.g. why a stream was cancelled."""


class Error(EventBase, frozen=True, tag="error"):
    """Terminal: the stream failed. Output produced before the failure stays valid."""

    code: str
    """Machine-readable code: ``timeout``, ``stalled``, ``provider_error``, a provider's code …"""
    message: str
    """Human-readable explanation."""
    retryable: bool = False
    """Whether retrying the same request may succeed."""
    source: ErrorSource = "internal"
    """Layer that failed: ``transport``, ``provider``, ``tool``, ``limit`` or ``internal``."""


Event: TypeAlias = (
    Start
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCall
    | ToolResult
    | Step
    | Data
    | StateSnapshot
    | StateDelta
    | Usage
    | Done
    | Error
)
"""Any event; a tagged union discriminated by ``type``."""

EVENT_TYPES: tuple[type[EventBase], ...] = (
    Start,
    TextDelta,
    ReasoningDelta,
    ToolCallStart,
    ToolCallDelta,
    ToolCall,
    ToolResult,
    Step,
    Data,
    StateSnapshot,
    StateDelta,
    Usage,
    Done,
    Error,
)
for _cls in EVENT_TYPES:
    _cls.type = str(_cls.__struct_config__.tag)

TERMINAL_TYPES: tuple[type[EventBase], ...] = (Done, Error)
"""Types that end a stream; exactly one of them is the last event of every stream."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: EventBase) -> bytes:
    """Encode an event as one compact JSON object."""
    return _encoder.encode(event)


def _describe(data: bytes | str) -> str:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates, quotable
    return text if len(text) <= 120 else text[:117] + "..."


def decode(data: bytes | str) -> Event:
    """Decode one JSON-encoded event.

    Raises :class:`EventDecodeError` naming the problem (malformed JSON, unknown ``type``, missing
    or mistyped field) and quoting the input.

    >>> decode(b'{"type":"text.delta"}')
    Traceback (most recent call last):
    ...
    tokenwire.errors.EventDecodeError: invalid event: Object missing required field `text` in {"type":"text.delta"}
    """
    try:
        event: Event = _decoder.decode(data)
        return event
    except msgspec.ValidationError as exc:
        raise EventDecodeError(f"invalid event: {exc} in {_describe(data)}") from None
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"malformed event JSON: {exc} in {_describe(data)}") from None
    except RecursionError:
        raise EventDecodeError(f"event JSON nested too deeply in {_describe(data)}") from None
    except UnicodeEncodeError as exc:  # a str with lone surrogates: not encodable, so not JSON text
        raise EventDecodeError(f"event text is not valid Unicode ({exc.reason}) in {_describe(data)}") from None


def load_jsonl(path: str | os.PathLike[str]) -> list[Event]:
    """Read events written one JSON object per line (a transcript); blank lines are skipped.

    Raises :class:`EventDecodeError` naming the file and line of the first bad event.
    """
    events: list[Event] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    events.append(decode(line))
                except EventDecodeError as exc:
                    raise EventDecodeError(f"{os.fspath(path)}:{lineno}: {exc}") from None
    return events


def to_builtins(event: EventBase) -> dict[str, Any]:
    """The event as a plain dict (the JSON object form), ``type`` included."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result


def from_builtins(obj: dict[str, Any]) -> Event:
    """Build an event from its dict form; raises :class:`EventDecodeError` like :func:`decode`."""
    try:
        event: Event = msgspec.convert(obj, Event)
        return event
    except msgspec.ValidationError as exc:
        raise EventDecodeError(f"invalid event: {exc} in {obj!r:.120}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :data:`Event`, generated from the types, with the schema version."""
    schema: dict[str, Any] = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tokenwire event"
    schema["version"] = SCHEMA_VERSION
    return schema
