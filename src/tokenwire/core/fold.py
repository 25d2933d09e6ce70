"""A run's state folded from its events: what a node needs to carry the run on.

The log is a durable run's source of truth. Folding its events (in order, once each) gives the
agent loop's state at the last event: the turns that finished (their text, tool calls and
results, which become the model's next messages), the turn in progress (its text so far, its
calls and which of them have results), the approvals asked for and answered, the usage so far.
Sans-I/O and linear: one pass, constant work per event.

>>> from tokenwire.events import Start, Step, TextDelta, ToolCall, ToolResult
>>> state = fold([
...     Start(model="m", seq=0),
...     Step(name="turn", status="started", detail={"turn": 1}, seq=1),
...     TextDelta("Let me add.", seq=2),
...     ToolCall(call_id="c1", name="add", args={"a": 1}, seq=3),
...     Step(name="approval", status="started", detail={"call_id": "c1", "tool": "add", "args": {"a": 1}}, seq=4),
... ])
>>> state.turn, state.open.text, list(state.open.calls), state.pending_approvals(), state.next_seq
(1, 'Let me add.', ['c1'], ['c1'], 5)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tokenwire.core.request import Message
from tokenwire.events import (
    TERMINAL_TYPES,
    Event,
    ReasoningDelta,
    Start,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)

__all__ = ["RunState", "TurnState", "child_usage", "fold", "tool_messages", "turn_change", "void_seqs"]


class TurnState:
    """One model turn as the log holds it."""

    __slots__ = ("calls", "finished", "number", "partial_calls", "reasoning_parts", "results", "text_parts")

    def __init__(self, number: int):
        self.number = number
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.calls: dict[str, ToolCall] = {}  # in the order the model made them
        self.results: dict[str, ToolResult] = {}
        self.partial_calls: set[str] = set()  # started (named), arguments not complete
        self.finished = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    def unanswered(self) -> list[ToolCall]:
        """Calls of this turn with no result in the log."""
        return [c for cid, c in self.calls.items() if cid not in self.results]


class RunState:
    """The fold of a run's events (see the module docstring); feed it with :meth:`add`."""

    def __init__(self) -> None:
        self.start: Start | None = None
        self.next_seq = 0
        self.finished = False
        self.turns: list[TurnState] = []
        self.approvals: dict[str, dict[str, Any]] = {}
        """call id -> ``{"tool", "args", "expires", "resume", "approved": None | bool}`` (None: asked, not
        answered; ``expires``: when an unanswered approval becomes a denial, wall time)."""
        self.waits: dict[str, dict[str, Any]] = {}
        """call id -> ``{"tool", "expires", "answered": bool}``: client-side calls waiting for the
        client's result (``step client_tool``)."""
        self.usage = [0, 0]
        self.reasoning_parts: list[str] = []

    @property
    def turn(self) -> int:
        """The number of the last turn that started (0: none)."""
        return self.turns[-1].number if self.turns else 0

    @property
    def open(self) -> TurnState:
        """The last turn (started, maybe finished); an empty turn 0 before any."""
        return self.turns[-1] if self.turns else TurnState(0)

    def add(self, event: Event) -> None:
        cls = event.__class__
        self.next_seq = event.seq + 1
        if cls is TextDelta:
            self._current().text_parts.append(event.text)  # type: ignore[union-attr]
            return
        if cls is ReasoningDelta:
            self.reasoning_parts.append(event.text)  # type: ignore[union-attr]
            self._current().reasoning_parts.append(event.text)  # type: ignore[union-attr]
        elif cls is ToolCallStart:
            self._current().partial_calls.add(event.call_id)  # type: ignore[union-attr]
        elif cls is ToolCall:
            turn = self._current()
            turn.partial_calls.discard(event.call_id)  # type: ignore[union-attr]
            turn.calls[event.call_id] = event  # type: ignore[union-attr,assignment]
        elif cls is ToolResult:
            for turn in reversed(self.turns):  # the turn that made the call (normally the last)
                if event.call_id in turn.calls:  # type: ignore[union-attr]
                    turn.results[event.call_id] = event  # type: ignore[union-attr,assignment]
                    break
        elif cls is Step:
            self._step(event)  # type: ignore[arg-type]
        elif cls is Usage:
            self.usage[0] += event.input_tokens  # type: ignore[union-attr]
            self.usage[1] += event.output_tokens  # type: ignore[union-attr]
        elif cls is Start:
            self.start = event  # type: ignore[assignment]
        elif cls in TERMINAL_TYPES:
            self.finished = True

    def _current(self) -> TurnState:
        if not self.turns:  # a run without the agent loop: its one turn has no steps (number 0)
            self.turns.append(TurnState(0))
        return self.turns[-1]

    def _step(self, step: Step) -> None:
        detail = step.detail if isinstance(step.detail, dict) else {}
        rolled = child_usage(step)
        if rolled is not None:
            self.usage[0] += rolled[0]
            self.usage[1] += rolled[1]
        change = turn_change(step, len(self.turns))
        if change == "restarted":
            self.turns[-1] = TurnState(self.turns[-1].number)  # asked again: its earlier output is void
        elif isinstance(change, int):
            self.turns.append(TurnState(change))
        elif change == "finished":
            self.turns[-1].finished = True
        elif step.name == "approval" and "call_id" in detail:
            cid = str(detail["call_id"])
            if step.status == "started":
                self.approvals[cid] = {
                    "tool": detail.get("tool"),
                    "args": detail.get("args"),
                    "expires": detail.get("expires"),
                    "resume": detail.get("resume"),  # what the producer needs to go on (opaque)
                    "approved": None,
                }
            elif cid in self.approvals:
                self.approvals[cid]["approved"] = bool(detail.get("approved"))
                self.approvals[cid]["held"] = bool(detail.get("held"))  # answered, not applied yet
        elif step.name == "client_tool" and "call_id" in detail:
            cid = str(detail["call_id"])
            if step.status == "started":
                self.waits[cid] = {"tool": detail.get("tool"), "expires": detail.get("expires"), "answered": False}
            elif cid in self.waits:
                self.waits[cid]["answered"] = True

    def pending_results(self) -> list[str]:
        """Client-side calls waiting for the client's result, in order."""
        return [cid for cid, w in self.waits.items() if not w["answered"]]

    def pending_approvals(self) -> list[str]:
        """Calls whose approval was asked for and not answered, in order."""
        return [cid for cid, a in self.approvals.items() if a["approved"] is None]

    def messages(self, base: list[Message]) -> list[Message]:
        """The model's conversation after the turns that finished with tool calls: ``base`` (the
        run's request), then each such turn's assistant message and its tool results."""
        out = list(base)
        for turn in self.turns:
            if turn.finished and turn.calls:
                out += tool_messages(turn.text, list(turn.calls.values()), turn.results)
        return out


def tool_messages(text: str, calls: list[ToolCall], results: dict[str, ToolResult]) -> list[Message]:
    """A turn that called tools, as the messages the model reads next: the assistant's text and
    calls, then one ``tool`` message per call (its result, its error, or "no result")."""
    assistant = Message(
        "assistant", text, tool_calls=[{"call_id": c.call_id, "name": c.name, "args": c.args} for c in calls]
    )
    answers = []
    for call in calls:
        result = results.get(call.call_id)
        content = "no result" if result is None else json.dumps(result.result, ensure_ascii=False, default=str)
        if result is not None and result.is_error:
            content = f"error: {result.result}"
        answers.append(Message("tool", content, tool_call_id=call.call_id, name=call.name))
    return [assistant, *answers]


def fold(events: Iterable[Event]) -> RunState:
    """The state of a run after ``events`` (from its ``start``, in order)."""
    state = RunState()
    for event in events:
        state.add(event)
    return state


_VOIDABLE = (TextDelta, ReasoningDelta, ToolCallStart, ToolCallDelta)


def void_seqs(events: Iterable[Event]) -> set[int]:
    """The seqs of the output that turns asked again voided (``step turn started`` with
    ``restarted``: the attempt's text, reasoning and unfinished calls since its turn began), in
    one stream's events: what a reader that cannot take text back (the AI SDK, AG-UI) leaves out
    when it reads the log past the restart. Linear; the fold drops the same output.

    >>> from tokenwire.events import TextDelta
    >>> void_seqs([
    ...     Step(name="turn", status="started", detail={"turn": 1}, seq=1),
    ...     TextDelta("Hel", seq=2),
    ...     Step(name="turn", status="started", detail={"turn": 1, "restarted": True}, seq=3),
    ...     TextDelta("Hello", seq=4),
    ... ])
    {2}
    """
    void: set[int] = set()
    attempt: list[int] = []  # the voidable output of the current attempt of the current turn
    turns = 0
    for event in events:
        cls = event.__class__
        if cls in _VOIDABLE:
            attempt.append(event.seq)
            turns = turns or 1  # a run without the agent loop: its one turn has no steps
        elif cls is Step:
            change = turn_change(event, turns)  # type: ignore[arg-type]
            if change == "restarted":
                void.update(attempt)
                attempt = []
            elif isinstance(change, int):
                turns += 1
                attempt = []
    return void


def turn_change(step: Step, turns: int) -> int | str | None:
    """What ``step`` does to a fold's list of ``turns`` turns: the number of a turn that starts,
    ``"restarted"`` (the last turn is asked again: its output is void), ``"finished"`` (the last
    turn ended), or None (not a turn step, or one with no turn to act on)."""
    if step.name != "turn":
        return None
    detail = step.detail if isinstance(step.detail, dict) else {}
    if step.status == "started":
        return "restarted" if detail.get("restarted") and turns else int(detail.get("turn", turns + 1))
    return "finished" if turns else None


def child_usage(step: Step) -> tuple[int, int] | None:
    """The tokens a child run used, from the ``step child finished`` that marks its end in the
    parent (:mod:`tokenwire.tools.tree`): they roll up into the parent's usage. None otherwise."""
    detail = step.detail
    if step.name != "child" or step.status != "finished" or not isinstance(detail, dict):
        return None
    usage = detail.get("usage")
    if not isinstance(usage, dict):
        return None
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
