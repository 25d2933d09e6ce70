"""The aggregated result of a stream: what ``handle.result()`` returns.

The lifecycle core feeds every event to a :class:`ResponseBuilder` (text deltas through its fast
path); :meth:`ResponseBuilder.build` makes an immutable :class:`Response` snapshot at any time.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenwire.core.state import SharedState
from tokenwire.errors import StreamFailed
from tokenwire.events import (
    Data,
    Done,
    Error,
    Event,
    FinishReason,
    ReasoningDelta,
    StateDelta,
    StateSnapshot,
    Stats,
    Step,
    TokenUsage,
    ToolCall,
    ToolResult,
    Usage,
)

__all__ = ["Response", "ResponseBuilder"]


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a stream produced, aggregated.

    A stream that failed keeps its partial output: ``error`` is set and ``text`` holds what came
    before the failure.
    """

    stream_id: str
    """Id of the stream."""
    model: str
    """Model that produced it."""
    text: str = ""
    """Concatenated text deltas."""
    reasoning: str = ""
    """Concatenated reasoning deltas."""
    tool_calls: list[ToolCall] = []
    """Completed tool calls, in order."""
    tool_results: list[ToolResult] = []
    """Tool results, in order."""
    data: list[Data] = []
    """The application's ``data`` events, in order (not the transient ones)."""
    state: Any = None
    """The shared state after the last ``state.snapshot`` / ``state.delta`` (None without one)."""
    usage: TokenUsage | None = None
    """Last usage the provider reported."""
    finish_reason: FinishReason | None = None
    """Set when the stream ended with ``done``; None while running or after an ``error``."""
    error: Error | None = None
    """The terminal error event, if the stream failed."""
    stats: Stats | None = None
    """Timing measured by the engine; set once the stream ended."""

    @property
    def ok(self) -> bool:
        """True when the stream ended with ``done`` (including ``cancelled``)."""
        return self.finish_reason is not None

    def raise_for_error(self) -> Response:
        """Raise :class:`tokenwire.StreamFailed` if the stream ended with an error; else return self."""
        if self.error is not None:
            raise StreamFailed(self.error)
        return self


class ResponseBuilder:
    """Accumulates a stream's content into a :class:`Response` (timing is the lifecycle core's)."""

    __slots__ = (
        "data",
        "model",
        "reasoning_parts",
        "state",
        "stats",
        "stream_id",
        "terminal",
        "text_parts",
        "tool_calls",
        "tool_results",
        "turn_reasoning",
        "turn_text",
        "usage",
    )

    def __init__(self, stream_id: str, model: str):
        self.stream_id = stream_id
        self.model = model
        self.text_parts: list[str] = []
        self.turn_text = 0  # where the current agent turn's text begins in text_parts
        self.turn_reasoning = 0  # and its reasoning in reasoning_parts
        self.reasoning_parts: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.tool_results: list[ToolResult] = []
        self.data: list[Data] = []
        self.state = SharedState()
        self.usage: TokenUsage | None = None
        self.terminal: Done | Error | None = None
        self.stats: Stats | None = None

    def add(self, event: Event) -> None:
        """Record any event except text deltas, which the core adds to ``text_parts`` itself
        (:class:`~tokenwire.errors.InvalidStateDelta` for a state delta that does not apply)."""
        cls = event.__class__
        if cls is ReasoningDelta:
            self.reasoning_parts.append(event.text)  # type: ignore[union-attr]
        elif cls is ToolCall:
            self.tool_calls.append(event)  # type: ignore[arg-type]
        elif cls is ToolResult:
            self.tool_results.append(event)  # type: ignore[arg-type]
        elif cls is Usage:
            self.usage = TokenUsage(event.input_tokens, event.output_tokens)  # type: ignore[union-attr]
        elif cls is StateDelta or cls is StateSnapshot:
            self.state.apply(event)  # type: ignore[arg-type]
        elif cls is Data and not event.transient:  # type: ignore[union-attr]
            self.data.append(event)  # type: ignore[arg-type]
        elif cls is Step and event.name == "turn" and event.status == "started":  # type: ignore[union-attr]
            detail = event.detail  # type: ignore[union-attr]
            if isinstance(detail, dict) and detail.get("restarted"):
                del self.text_parts[self.turn_text :]  # the turn was asked again: its first text is void
                del self.reasoning_parts[self.turn_reasoning :]
            else:
                self.turn_text, self.turn_reasoning = len(self.text_parts), len(self.reasoning_parts)

    def build(self) -> Response:
        terminal = self.terminal
        return Response(
            stream_id=self.stream_id,
            model=self.model,
            text="".join(self.text_parts),
            reasoning="".join(self.reasoning_parts),
            tool_calls=list(self.tool_calls),
            tool_results=list(self.tool_results),
            data=list(self.data),
            state=self.state.value,
            usage=self.usage,
            finish_reason=terminal.finish_reason if isinstance(terminal, Done) else None,
            error=terminal if isinstance(terminal, Error) else None,
            stats=self.stats,
        )
