"""The base of the stateful wire encoders (OpenAI Chat Completions and Responses, AG-UI).

:meth:`StreamEncoder.feed` takes one of our events and calls the hook for its kind; a format
implements the hooks it has a place for (the others write nothing). After the terminal event
(``done`` or ``error``) the encoder is :attr:`~StreamEncoder.finished` and writes nothing more.
Usage is kept in :attr:`~StreamEncoder.usage` for the terminal hook.

>>> from tokenwire.events import Start, TextDelta, Done
>>> class Upper(StreamEncoder):
...     def text(self, delta: str) -> list[bytes]:
...         return [delta.upper().encode()]
>>> enc = Upper()
>>> [f for e in [Start(model="m"), TextDelta("hi"), Done(), TextDelta("late")] for f in enc.feed(e)]
[b'HI']
"""

from __future__ import annotations

from tokenwire.events import (
    Data,
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    StateDelta,
    StateSnapshot,
    Step,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)

__all__ = ["StreamEncoder"]


class StreamEncoder:
    """Our events in, one format's frames out (one instance per stream and reader)."""

    finished: bool = False
    """True once the terminal event was fed (or the format ended its response early: a suspension)."""
    finished_at: int | None = None
    """The seq of the event it finished at."""
    usage: Usage | TokenUsage | None = None
    """The stream's usage, once a ``usage`` event (or a ``done`` carrying one) arrived."""

    def feed(self, event: Event) -> list[bytes]:
        """The frames for one event (none for events the format has no place for)."""
        if self.finished:
            return []
        match event:
            case TextDelta():
                return self.text(event.text)
            case ReasoningDelta():
                return self.reasoning(event.text)
            case ToolCallStart():
                return self.call_start(event.call_id, event.name)
            case ToolCallDelta():
                return self.call_delta(event.call_id, event.args_delta)
            case ToolCall():
                return self.call(event)
            case ToolResult():
                return self.result(event)
            case Step():
                return self.step(event)
            case Data():
                return self.data(event)
            case StateSnapshot() | StateDelta():
                return self.state(event)
            case Usage():
                self.usage = event
                return []
            case Start():
                return self.start(event)
            case Done():
                self.finished, self.finished_at = True, event.seq
                self.usage = self.usage or event.usage
                return self.done(event)
            case Error():
                self.finished, self.finished_at = True, event.seq
                return self.error(event)
        return []

    # -- hooks: each returns the frames to write -------------------------------------------------

    def start(self, event: Start) -> list[bytes]:
        return []

    def text(self, delta: str) -> list[bytes]:
        return []

    def reasoning(self, delta: str) -> list[bytes]:
        return []

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        return []

    def call_delta(self, call_id: str, delta: str) -> list[bytes]:
        return []

    def call(self, call: ToolCall) -> list[bytes]:
        """A tool call is complete (its arguments may have streamed as deltas, or not at all)."""
        return []

    def result(self, result: ToolResult) -> list[bytes]:
        return []

    def step(self, step: Step) -> list[bytes]:
        return []

    def data(self, event: Data) -> list[bytes]:
        """The application's named payload."""
        return []

    def state(self, event: StateSnapshot | StateDelta) -> list[bytes]:
        """A change of the run's shared state (whole, or a JSON Patch)."""
        return []

    def done(self, event: Done) -> list[bytes]:
        return []

    def error(self, event: Error) -> list[bytes]:
        return []
