"""A run as a viewer sees it, folded from its events: what a reader joining a long run gets in one
message instead of every delta since ``seq`` 0 (snapshot, then the tail from ``next_seq``).

It holds the start, each model turn (its text, its reasoning, its tool calls with their
arguments — streamed so far, then whole — and results), the other steps, the usage (child runs'
included), the application state (``state.snapshot`` / ``state.delta``), the lasting ``data``
events (the latest per ``id``) and the terminal event. Sans-I/O and linear: one pass, constant
work per event (text is joined only when the snapshot is serialised). Folding a prefix, sending
it, and adding the rest of the events on the other side gives what folding them all gives: the
property the join relies on (tests/test_snapshot.py).

>>> from tokenwire.events import Start, TextDelta, ToolCall, ToolResult, Done
>>> snap = Snapshot.of([Start(model="m", seq=0), TextDelta("Hel", seq=1), TextDelta("lo", seq=2)])
>>> snap.next_seq, snap.to_dict()["turns"][-1]["text"]
(3, 'Hello')
>>> later = Snapshot.from_json(snap.to_json())      # what a joining reader received
>>> for e in [ToolCall(call_id="c1", name="add", args={"a": 1}, seq=3),
...           ToolResult(call_id="c1", name="add", result=2, seq=4), Done(seq=5)]:
...     later.add(e)
>>> later.to_dict()["turns"][-1]["calls"]["c1"]["result"], later.finished
(2, True)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import msgspec

from tokenwire.core.fold import child_usage, turn_change
from tokenwire.core.state import SharedState
from tokenwire.events import (
    TERMINAL_TYPES,
    Data,
    Event,
    ReasoningDelta,
    Start,
    StateDelta,
    StateSnapshot,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    encode,
)

__all__ = ["Snapshot"]

_builtins = msgspec.json.Decoder()


def _plain(event: Event) -> dict[str, Any]:
    value: dict[str, Any] = _builtins.decode(encode(event))
    return value


class _Turn:
    __slots__ = ("calls", "finished", "number", "reasoning", "text")

    def __init__(self, number: int, text: str = "", reasoning: str = "", finished: bool = False):
        self.number = number
        self.text = [text] if text else []
        self.reasoning = [reasoning] if reasoning else []
        self.calls: dict[str, dict[str, Any]] = {}
        self.finished = finished

    def call(self, call_id: str, name: str) -> dict[str, Any]:
        found = self.calls.get(call_id)
        if found is None:
            found = self.calls[call_id] = {
                "name": name,
                "args_text": [],
                "args": None,
                "result": None,
                "is_error": None,
            }
        return found

    def to_dict(self) -> dict[str, Any]:
        calls = {cid: {**c, "args_text": "".join(c["args_text"])} for cid, c in self.calls.items()}
        text, reasoning = "".join(self.text), "".join(self.reasoning)
        return {"turn": self.number, "text": text, "reasoning": reasoning, "calls": calls, "finished": self.finished}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Turn:
        turn = cls(int(d["turn"]), d["text"], d["reasoning"], bool(d["finished"]))
        for cid, c in d["calls"].items():
            turn.calls[cid] = {**c, "args_text": [c["args_text"]] if c["args_text"] else []}
        return turn


class Snapshot:
    """A run's state for a viewer, at ``next_seq`` (see the module docstring); feed it with :meth:`add`."""

    def __init__(self, stream_id: str = "") -> None:
        self.stream_id = stream_id
        self.next_seq = 0
        self.start: dict[str, Any] | None = None
        self.turns: list[_Turn] = []
        self.steps: list[dict[str, Any]] = []
        self.usage = [0, 0]
        self.state = SharedState()
        self.data: dict[tuple[str, object], dict[str, Any]] = {}
        self.terminal: dict[str, Any] | None = None

    @classmethod
    def of(cls, events: Iterable[Event], stream_id: str = "") -> Snapshot:
        snap = cls(stream_id)
        for event in events:
            snap.add(event)
        return snap

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    def _turn(self) -> _Turn:
        if not self.turns:  # a run without the agent loop: its one turn has no steps (number 0)
            self.turns.append(_Turn(0))
        return self.turns[-1]

    def add(self, event: Event) -> None:
        """Fold one more event (the next seq) in."""
        cls = event.__class__
        self.next_seq = event.seq + 1
        if not self.stream_id:
            self.stream_id = event.stream_id
        if cls is TextDelta:
            self._turn().text.append(event.text)  # type: ignore[union-attr]
        elif cls is ReasoningDelta:
            self._turn().reasoning.append(event.text)  # type: ignore[union-attr]
        elif cls is ToolCallDelta:
            self._turn().call(event.call_id, "")["args_text"].append(event.args_delta)  # type: ignore[union-attr]
        elif cls is ToolCallStart:
            self._turn().call(event.call_id, event.name)  # type: ignore[union-attr]
        elif cls is ToolCall:
            call = self._turn().call(event.call_id, event.name)  # type: ignore[union-attr]
            call["name"], call["args"] = event.name, event.args  # type: ignore[union-attr]
        elif cls is ToolResult:
            for turn in reversed(self.turns):  # the turn that made the call (normally the last)
                if event.call_id in turn.calls:  # type: ignore[union-attr]
                    turn.calls[event.call_id]["result"] = event.result  # type: ignore[union-attr]
                    turn.calls[event.call_id]["is_error"] = event.is_error  # type: ignore[union-attr]
                    break
        elif cls is Step:
            self._step(event)  # type: ignore[arg-type]
        elif cls is Usage:
            self.usage[0] += event.input_tokens  # type: ignore[union-attr]
            self.usage[1] += event.output_tokens  # type: ignore[union-attr]
        elif cls is StateSnapshot or cls is StateDelta:
            self.state.apply(event)  # type: ignore[arg-type]
        elif cls is Data:
            if not event.transient:  # type: ignore[union-attr]
                key = ("id", event.id) if event.id else ("seq", event.seq)  # type: ignore[union-attr]
                self.data.pop(key, None)  # the latest of an id, in the order of the latest
                self.data[key] = {"name": event.name, "data": event.data, "id": event.id}  # type: ignore[union-attr]
        elif cls is Start:
            self.start = _plain(event)
        elif cls in TERMINAL_TYPES:
            self.terminal = _plain(event)

    def _step(self, step: Step) -> None:
        rolled = child_usage(step)
        if rolled is not None:
            self.usage[0] += rolled[0]
            self.usage[1] += rolled[1]
        change = turn_change(step, len(self.turns))
        if change == "restarted":
            self.turns[-1] = _Turn(self.turns[-1].number)  # asked again: its earlier output is void
        elif isinstance(change, int):
            self.turns.append(_Turn(change))
        elif change == "finished":
            self.turns[-1].finished = True
        elif step.name != "turn":
            self.steps.append({"name": step.name, "status": step.status, "detail": step.detail, "seq": step.seq})

    def running_children(self) -> list[str]:
        """The child runs marked started and not yet finished (or suspended): a reader joining the
        run's tree at this snapshot reads them from their start, the run itself from ``next_seq``."""
        running: dict[str, None] = {}
        for step in self.steps:
            detail = step["detail"] if isinstance(step["detail"], dict) else {}
            sid = detail.get("stream_id")
            if step["name"] != "child" or not isinstance(sid, str):
                continue
            if step["status"] == "started":
                running[sid] = None
            elif step["status"] == "finished":
                running.pop(sid, None)
        return list(running)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-able data (what :meth:`from_dict` takes back)."""
        return {
            "stream_id": self.stream_id,
            "next_seq": self.next_seq,
            "start": self.start,
            "turns": [t.to_dict() for t in self.turns],
            "steps": self.steps,
            "usage": {"input_tokens": self.usage[0], "output_tokens": self.usage[1]},
            "state": self.state.value,
            "data": list(self.data.values()),
            "terminal": self.terminal,
        }

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        snap = cls(str(d["stream_id"]))
        snap.next_seq = int(d["next_seq"])
        snap.start = d["start"]
        snap.turns = [_Turn.from_dict(t) for t in d["turns"]]
        snap.steps = list(d["steps"])
        snap.usage = [int(d["usage"]["input_tokens"]), int(d["usage"]["output_tokens"])]
        snap.state = SharedState(copy.deepcopy(d["state"]))
        for i, item in enumerate(d["data"]):
            snap.data[("id", item["id"]) if item["id"] else ("seq", -1 - i)] = dict(item)
        snap.terminal = d["terminal"]
        return snap

    def restore(self, data: bytes | str) -> None:
        """Become the snapshot ``data`` holds (JSON from :meth:`to_json`), in place."""
        other = Snapshot.from_json(data)
        for name in ("stream_id", "next_seq", "start", "turns", "steps", "usage", "state", "data", "terminal"):
            setattr(self, name, getattr(other, name))

    @classmethod
    def from_json(cls, data: bytes | str) -> Snapshot:
        value: dict[str, Any] = msgspec.json.decode(data)
        return cls.from_dict(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
