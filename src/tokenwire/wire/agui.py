"""AG-UI (CopilotKit and others), both directions (sans-I/O): a ``RunAgentInput`` as our
:class:`~tokenwire.Request` (:func:`agui_request`), and our events as AG-UI events over SSE.

One :class:`AGUIEvents` per stream and reader. ``RUN_STARTED`` first; text and reasoning become
messages (``TEXT_MESSAGE_START`` / ``_CONTENT`` / ``_END``, ``REASONING_START`` …
``REASONING_END``) opened by their first delta; each tool call is ``TOOL_CALL_START`` /
``TOOL_CALL_ARGS`` / ``TOOL_CALL_END`` (its parent the message before it), a result
``TOOL_CALL_RESULT``; steps are ``STEP_STARTED`` / ``STEP_FINISHED``. Every message and call is
closed before the one terminal ``RUN_FINISHED`` or ``RUN_ERROR``. Keys are AG-UI's camelCase.

>>> from tokenwire.events import Start, TextDelta, Done
>>> enc = AGUIEvents("t1", "r1")
>>> for e in [Start(model="m", seq=0), TextDelta("Hi", seq=1), Done(seq=2)]:
...     for frame in enc.feed(e):
...         print(frame.decode().strip())
id: 0
data: {"type":"RUN_STARTED","threadId":"t1","runId":"r1"}
data: {"type":"TEXT_MESSAGE_START","messageId":"r1-m0","role":"assistant"}
id: 1
data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"r1-m0","delta":"Hi"}
data: {"type":"TEXT_MESSAGE_END","messageId":"r1-m0"}
id: 2
data: {"type":"RUN_FINISHED","threadId":"t1","runId":"r1"}
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from tokenwire.core.request import Request, ToolSpec
from tokenwire.events import Data, Done, Error, Event, Start, StateDelta, StateSnapshot, Step, ToolCall, ToolResult
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.openai_chat import message

__all__ = ["APPROVAL_SCHEMA", "AGUIBody", "AGUIEvents", "ResumeEntry", "agui_request", "approval_answers"]


# -- requests ---------------------------------------------------------------------------------------


class ResumeEntry(msgspec.Struct, kw_only=True, rename="camel"):
    """An answer to one interrupt (AG-UI 1.0), sent on the run that continues from it."""

    interrupt_id: str
    status: Literal["resolved", "cancelled"]
    payload: Any = None


class AGUIBody(msgspec.Struct, kw_only=True, rename="camel"):
    """AG-UI's ``RunAgentInput`` (``state``, ``context`` and ``forwardedProps`` are accepted; the
    model is the server's default provider, or ``forwardedProps.model``)."""

    thread_id: str
    run_id: str
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = []
    state: Any = None
    context: list[Any] = []
    forwarded_props: dict[str, Any] | None = None
    resume: list[ResumeEntry] = []

    @property
    def model(self) -> str:
        return str((self.forwarded_props or {}).get("model") or "")

    @property
    def server_tools(self) -> list[str]:
        """The server's tools the run may call, by name: ``forwardedProps.serverTools``."""
        names = (self.forwarded_props or {}).get("serverTools") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("forwardedProps.serverTools must be a list of tool names")
        return names


def agui_request(body: AGUIBody) -> Request:
    """Our request for an AG-UI run: its messages, and its tools as the client's (frontend) tools."""
    messages = []
    for m in body.messages:
        role = m.get("role")
        if role in ("reasoning", "activity"):
            continue  # what the client kept of earlier runs' thinking and UI activity: not model input
        if role == "assistant" and m.get("toolCalls"):
            m = {**m, "tool_calls": m["toolCalls"]}
        elif role == "tool":
            m = {**m, "tool_call_id": m.get("toolCallId")}
        elif role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"messages of role {role!r} are not supported")
        messages.append(message(m))
    if not messages:
        raise ValueError("an AG-UI run needs at least one message")
    return Request(messages, tools=list(body.tools))


def approval_answers(body: AGUIBody) -> dict[str, bool]:
    """The approvals a run of the thread answers (its ``resume`` entries): interrupt id ->
    approved. ``resolved`` approves unless its payload says ``{"approved": false}`` (or is
    ``false``); ``cancelled`` denies."""
    answers: dict[str, bool] = {}
    for entry in body.resume:
        payload = entry.payload
        approved = payload.get("approved", True) if isinstance(payload, dict) else payload is not False
        answers[entry.interrupt_id] = entry.status == "resolved" and approved is not False
    return answers


# -- events -----------------------------------------------------------------------------------------

APPROVAL_SCHEMA = {"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]}
"""What an approval's interrupt expects as its resume entry's ``payload``."""

_encode = msgspec.json.Encoder().encode


class AGUIEvents(StreamEncoder):
    """Our events in, AG-UI SSE frames out; one per stream and reader.

    The last frame an event writes carries its ``seq`` as the SSE ``id`` (an extension: a
    client that reconnects with ``Last-Event-ID`` gets the frames of the events after it; see
    :func:`tokenwire.server.frontends.agui`)."""

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        *,
        approval_id: Callable[[str], str] = str,
        messages: list[dict[str, Any]] | None = None,
    ):
        self.thread_id = thread_id
        self.run_id = run_id
        self.void: frozenset[int] = frozenset()
        """Seqs to write nothing for: a replay's output that a turn asked again voided
        (:func:`tokenwire.core.fold.void_seqs`)."""
        self.thread = _Thread(messages) if messages is not None else None
        self._keep: Callable[[str], None] | None = None  # the open message's content, kept (with a thread)
        """The messages the client holds (given: its input), kept so that a turn asked again can
        take its first attempt back with a ``MESSAGES_SNAPSHOT``; None: not kept."""
        self.approval_id = approval_id
        """The interrupt id of a call's approval (the server's proves it issued it)."""
        self._steps: list[str] = []  # steps started and not finished, by name
        self._asked: dict[str, dict[str, Any]] = {}  # call id -> its approval's detail, unanswered
        self._n = 0
        self._open: tuple[str, str] | None = None  # (kind, message id) of the message receiving deltas
        self._last_message: str | None = None
        self._calls: dict[str, bool] = {}  # call id -> arguments streamed
        self._ended: set[str] = set()

    def feed(self, event: Event) -> list[bytes]:
        if self.void and event.seq in self.void:
            return []
        frames = super().feed(event)
        if frames:
            frames[-1] = b"id: %d\n%s" % (event.seq, frames[-1])
        return frames

    def _frame(self, kind: str, **fields: Any) -> bytes:
        return b"data: " + _encode({"type": kind, **fields}) + b"\n\n"

    def _new_id(self) -> str:
        mid = f"{self.run_id}-m{self._n}"
        self._n += 1
        return mid

    def start(self, event: Start) -> list[bytes]:
        return [self._frame("RUN_STARTED", threadId=self.thread_id, runId=self.run_id)]

    def text(self, delta: str) -> list[bytes]:
        return self._delta("text", delta)

    def reasoning(self, delta: str) -> list[bytes]:
        return self._delta("reasoning", delta)

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        return self._call_start(call_id, name)

    def call_delta(self, call_id: str, delta: str) -> list[bytes]:
        out = [] if call_id in self._calls else self._call_start(call_id, "")
        self._calls[call_id] = True
        if self.thread is not None:
            self.thread.args(call_id, delta)
        return [*out, self._frame("TOOL_CALL_ARGS", toolCallId=call_id, delta=delta)]

    def call(self, call: ToolCall) -> list[bytes]:
        return self._call_end(call)

    def result(self, result: ToolResult) -> list[bytes]:
        content = result.result if isinstance(result.result, str) else _encode(result.result).decode()
        mid = self._new_id()
        if self.thread is not None:
            self.thread.result(mid, result.call_id, content)
        frame = self._frame("TOOL_CALL_RESULT", messageId=mid, toolCallId=result.call_id, content=content, role="tool")
        return [*self._close(), frame]

    def continued(self) -> bytes:
        """``RUN_STARTED`` for a run that continues our run from its middle (AG-UI's resume after
        an interrupt is a new run of the thread: it has no ``start`` of ours to open with)."""
        return self._frame("RUN_STARTED", threadId=self.thread_id, runId=self.run_id)

    def step(self, step: Step) -> list[bytes]:
        detail = step.detail if isinstance(step.detail, dict) else {}
        if step.name == "approval" and isinstance(detail.get("call_id"), str):
            if step.status == "started":
                self._asked[detail["call_id"]] = detail
            else:
                self._asked.pop(detail["call_id"], None)
        if step.name == "suspend":
            self.finished_at = step.seq
            return self._interrupt(detail)
        if step.name == "turn" and step.status == "started" and self.thread is not None:
            if detail.get("restarted"):  # asked again: take the first attempt back, if it went out
                return self._take_back()
            self.thread.attempt.clear()
        if step.status == "started":
            self._steps.append(step.name)
        elif step.name in self._steps:
            self._steps.remove(step.name)
        else:
            return []  # started before this run of the thread (a resume): AG-UI pairs steps per run
        return [self._frame("STEP_STARTED" if step.status == "started" else "STEP_FINISHED", stepName=step.name)]

    def _interrupt(self, detail: dict[str, Any]) -> list[bytes]:
        """The run waits for answers: this AG-UI run ends with an ``interrupt`` outcome, one
        interrupt per approval asked for; a run with ``resume`` entries answers them."""
        self.finished = True
        interrupts = []
        for cid, asked in self._asked.items():
            interrupt: dict[str, Any] = {
                "id": self.approval_id(cid),
                "reason": "tool_approval",
                "toolCallId": cid,
                "message": f"Run the tool {asked.get('tool')!r} with these arguments?",
                "responseSchema": APPROVAL_SCHEMA,
            }
            expires = asked.get("expires")
            if isinstance(expires, int | float):
                interrupt["expiresAt"] = datetime.fromtimestamp(expires, UTC).isoformat()
            interrupts.append(interrupt)
        out = self._close_all()
        out += [self._frame("STEP_FINISHED", stepName=name) for name in reversed(self._steps)]
        self._steps.clear()
        if not interrupts:  # waiting for something AG-UI has no interrupt for: say so, plainly
            return [*out, self._frame("RUN_ERROR", message=str(detail.get("reason", "")), code="suspended")]
        outcome = {"type": "interrupt", "interrupts": interrupts}
        return [*out, self._frame("RUN_FINISHED", threadId=self.thread_id, runId=self.run_id, outcome=outcome)]

    def data(self, event: Data) -> list[bytes]:
        return [self._frame("CUSTOM", name=event.name, value=event.data)]

    def state(self, event: StateSnapshot | StateDelta) -> list[bytes]:
        if isinstance(event, StateSnapshot):
            return [self._frame("STATE_SNAPSHOT", snapshot=event.snapshot)]
        return [self._frame("STATE_DELTA", delta=event.delta)]

    def done(self, event: Done) -> list[bytes]:
        return [*self._close_all(), self._frame("RUN_FINISHED", threadId=self.thread_id, runId=self.run_id)]

    def error(self, event: Error) -> list[bytes]:
        return [*self._close_all(), self._frame("RUN_ERROR", message=event.message, code=event.code)]

    def _delta(self, kind: str, text: str) -> list[bytes]:
        if not text:
            return []  # AG-UI content deltas are never empty
        out: list[bytes] = []
        if self._open is None or self._open[0] != kind:
            out += self._close()
            mid = self._new_id()
            self._open = (kind, mid)
            if kind == "text":
                self._last_message = mid
                out.append(self._frame("TEXT_MESSAGE_START", messageId=mid, role="assistant"))
            else:
                out.append(self._frame("REASONING_START", messageId=mid))
                out.append(self._frame("REASONING_MESSAGE_START", messageId=mid, role="reasoning"))
            if self.thread is not None:
                self._keep = self.thread.message(mid, "assistant" if kind == "text" else "reasoning")
        mid = self._open[1]
        if self._keep is not None:
            self._keep(text)
        kind_name = "TEXT_MESSAGE_CONTENT" if kind == "text" else "REASONING_MESSAGE_CONTENT"
        out.append(self._frame(kind_name, messageId=mid, delta=text))
        return out

    def _close(self) -> list[bytes]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        kind, mid = opened
        if kind == "text":
            return [self._frame("TEXT_MESSAGE_END", messageId=mid)]
        return [self._frame("REASONING_MESSAGE_END", messageId=mid), self._frame("REASONING_END", messageId=mid)]

    def _call_start(self, call_id: str, name: str) -> list[bytes]:
        out = self._close()
        self._calls[call_id] = False
        fields: dict[str, Any] = {"toolCallId": call_id, "toolCallName": name}
        if self._last_message is not None:
            fields["parentMessageId"] = self._last_message
        if self.thread is not None:
            self.thread.call(call_id, name, self._last_message)
        return [*out, self._frame("TOOL_CALL_START", **fields)]

    def _call_end(self, call: ToolCall) -> list[bytes]:
        out = [] if call.call_id in self._calls else self._call_start(call.call_id, call.name)
        if not self._calls[call.call_id]:  # it came whole: its arguments in one piece
            whole = _encode(call.args).decode()
            out.append(self._frame("TOOL_CALL_ARGS", toolCallId=call.call_id, delta=whole))
            self._calls[call.call_id] = True
            if self.thread is not None:
                self.thread.args(call.call_id, whole)
        self._ended.add(call.call_id)
        return [*out, self._frame("TOOL_CALL_END", toolCallId=call.call_id)]

    def _take_back(self) -> list[bytes]:
        """A turn asked again after its node stopped: its first attempt (text, reasoning, the
        calls it had not finished) leaves the client's messages by a ``MESSAGES_SNAPSHOT`` of the
        thread without it (AG-UI's only way to take a message back). Nothing when none of it went
        out to this reader (a replay leaves it out)."""
        assert self.thread is not None
        out = self._close()
        unfinished = {c for c in self._calls if c not in self._ended}
        if not self.thread.attempt and not unfinished & set(self.thread.calls):
            return out
        void = self.thread.take_back(unfinished)
        for call_id in unfinished:
            self._calls.pop(call_id, None)
        if self._last_message in void:
            self._last_message = None
        return [*out, self._frame("MESSAGES_SNAPSHOT", messages=self.thread.snapshot())]

    def _close_all(self) -> list[bytes]:
        out = self._close()
        for call_id in self._calls:
            if call_id not in self._ended:  # a call the model never finished
                self._ended.add(call_id)
                out.append(self._frame("TOOL_CALL_END", toolCallId=call_id))
        return out


class _Thread:
    """The messages an AG-UI client builds from what :class:`AGUIEvents` writes (AG-UI's own
    reducer, for these events): the client's input, then this run's text and reasoning messages,
    the tool calls on their parent message, the tool messages after their call's message."""

    def __init__(self, given: list[dict[str, Any]]):
        self.given = given
        self.produced: list[dict[str, Any]] = []
        self.parts: dict[str, list[str]] = {}  # message id -> its content's pieces
        self.calls: dict[str, dict[str, Any]] = {}  # call id -> its toolCalls entry
        self.holder: dict[str, dict[str, Any]] = {}  # call id -> the message that holds it
        self.pieces: dict[str, list[str]] = {}  # call id -> its arguments' pieces
        self.attempt: list[str] = []  # the messages the current turn wrote (text, reasoning)

    def message(self, mid: str, role: str) -> Callable[[str], None]:
        """A new message; returns what keeps its content's pieces."""
        self.produced.append({"id": mid, "role": role})
        parts: list[str] = []
        self.parts[mid] = parts
        self.attempt.append(mid)
        return parts.append

    def call(self, call_id: str, name: str, parent: str | None) -> None:
        holder = next((m for m in self.produced if m["id"] == parent and m["role"] == "assistant"), None)
        if holder is None:
            holder = {"id": parent or call_id, "role": "assistant"}
            self.produced.append(holder)
        entry = {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        holder.setdefault("toolCalls", []).append(entry)
        self.calls[call_id], self.holder[call_id], self.pieces[call_id] = entry, holder, []

    def args(self, call_id: str, delta: str) -> None:
        if call_id in self.pieces:
            self.pieces[call_id].append(delta)

    def result(self, mid: str, call_id: str, content: str) -> None:
        message = {"id": mid, "role": "tool", "toolCallId": call_id, "content": content}
        holder = self.holder.get(call_id)
        at = next((i for i, m in enumerate(self.produced) if m is holder), None)
        if at is None:
            self.produced.append(message)
            return
        at += 1
        while at < len(self.produced) and self.produced[at]["role"] == "tool":
            at += 1
        self.produced.insert(at, message)

    def take_back(self, unfinished: set[str]) -> set[str]:
        """Drop the current turn's messages and the unfinished calls; the ids dropped."""
        void = set(self.attempt)
        for call_id in unfinished & set(self.calls):
            holder = self.holder.pop(call_id)
            holder["toolCalls"] = [c for c in holder["toolCalls"] if c["id"] != call_id]
            del self.calls[call_id], self.pieces[call_id]
            if not holder["toolCalls"] and holder["id"] not in self.parts:
                void.add(holder["id"])  # a message that held only that call
        self.produced = [m for m in self.produced if m["id"] not in void]
        self.attempt.clear()
        return void

    def snapshot(self) -> list[dict[str, Any]]:
        out = list(self.given)
        for m in self.produced:
            m = dict(m)
            if m["id"] in self.parts:
                m["content"] = "".join(self.parts[m["id"]])
            if "toolCalls" in m:
                m["toolCalls"] = [
                    {**c, "function": {**c["function"], "arguments": "".join(self.pieces[c["id"]])}}
                    for c in m["toolCalls"]
                ]
            out.append(m)
        return out
