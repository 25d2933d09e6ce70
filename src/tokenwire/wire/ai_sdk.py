"""The Vercel AI SDK's UI message stream (v1), both directions (sans-I/O): what ``useChat`` /
``DefaultChatTransport`` posts as our :class:`~tokenwire.Request` (:func:`ui_request`), and our
events as the stream it reads.

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

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.core.state import SharedState
from tokenwire.errors import InvalidStateDelta
from tokenwire.events import (
    Data,
    Done,
    Error,
    Event,
    Start,
    StateDelta,
    StateSnapshot,
    Step,
    TextDelta,
    ToolCall,
    ToolResult,
)
from tokenwire.wire.encoder import StreamEncoder

__all__ = ["HEADERS", "ChatUIBody", "UIMessageStream", "approval_answers", "message_id", "ui_request"]


# -- requests ---------------------------------------------------------------------------------------


class ChatUIBody(msgspec.Struct, kw_only=True):
    """What ``DefaultChatTransport`` posts: the chat id and its UI messages (``trigger``,
    ``messageId`` and fields the app adds are accepted; ``model`` picks a provider).

    ``tools`` (the app adds it with the transport's ``body`` option) declares the page's own
    tools as ``{name, description, parameters}``: a call to one ends the run, ``useChat``'s
    ``onToolCall`` answers it with ``addToolResult``, and the next request carries the output."""

    id: str
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    model: str = ""
    tools: list[ToolSpec] = []
    server_tools: list[str] = msgspec.field(default_factory=list, name="serverTools")
    """The server's tools the run may call, by name (a call to one that needs approval asks
    with a ``tool-approval-request``, and the run suspends until the page answers)."""


def _messages(body: ChatUIBody) -> list[Message]:
    """UI messages (parts) to ours: text parts joined; tool parts with an output (or an error)
    become the assistant's call and a tool message."""
    out: list[Message] = []
    for m in body.messages:
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages of role {role!r} are not supported")
        parts = m.get("parts", [])
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise ValueError("a UI message's parts must be a list of objects")
        text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        calls, results = [], []
        for p in parts:
            kind = str(p.get("type", ""))
            state = p.get("state")
            if kind.startswith("tool-") and state in ("output-available", "output-error"):
                calls.append({"call_id": p["toolCallId"], "name": kind[5:], "args": p.get("input") or {}})
                output = p.get("output")
                if state == "output-error":
                    content = f"error: {p.get('errorText', '')}"
                else:
                    content = output if isinstance(output, str) else msgspec.json.encode(output).decode()
                results.append(Message("tool", content, tool_call_id=p["toolCallId"]))
        out.append(Message(role, text, tool_calls=calls or None))
        out += results
    return out


def approval_answers(body: ChatUIBody) -> dict[str, bool]:
    """The approvals the page answers with this request (``addToolApprovalResponse``): approval id
    -> approved, from the tool parts of the last message (the assistant's) in state
    ``approval-responded``. Empty for a request that is not an answer."""
    last = body.messages[-1]
    parts = last.get("parts") if last.get("role") == "assistant" else None
    answers: dict[str, bool] = {}
    for p in parts if isinstance(parts, list) else ():
        approval = p.get("approval") if isinstance(p, dict) and p.get("state") == "approval-responded" else None
        if isinstance(approval, dict) and isinstance(approval.get("id"), str):
            answers[approval["id"]] = approval.get("approved") is True
    return answers


def ui_request(body: ChatUIBody) -> Request:
    """Our request for a ``useChat`` one; the page's tools are the client's."""
    return Request(_messages(body), tools=list(body.tools))


def message_id(body: ChatUIBody, run_id: str) -> str:
    """The id of the assistant message the run's stream writes: a request that ends with the
    assistant's message (tool outputs sent back) continues that message (the SDK appends the new
    parts to it only when the stream names the same id); otherwise a new one."""
    last = body.messages[-1]
    if last.get("role") == "assistant" and isinstance(last.get("id"), str):
        return str(last["id"])
    return f"msg-{run_id}"


# -- events -----------------------------------------------------------------------------------------

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
"""The response header the AI SDK's transport expects on a UI message stream."""

_encode = msgspec.json.Encoder().encode
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool-calls", "content_filter": "content-filter"}


PRELIMINARY_EVERY = 16
"""A child run's text goes out as its call's preliminary output after this many deltas, then each
time it has grown by a quarter (and at its end): each carries the text so far, so sending it per
delta would be quadratic in bytes; this is O(n log n)."""


class UIMessageStream(StreamEncoder):
    """Our events in, UI message stream chunks out; one per stream and reader.

    Fed a run tree (:func:`tokenwire.log.read_tree`), the root's events make the message and
    each child run's text becomes the ``preliminary`` output of the tool call that started it
    (the AI SDK shows it as the call's output while it streams; the call's result replaces it).
    Runs deeper down show in their ancestor's call only through that child's own answer.
    """

    def __init__(self, message_id: str, *, approval_id: Callable[[str], str] = str):
        self.message_id = message_id
        self.approval_id = approval_id
        """The ``approvalId`` of a call's approval (the server's proves it issued it)."""
        self._denied: set[str] = set()
        self._root: str | None = None
        self._call_of: dict[str, str] = {}  # child stream -> the root's call it works for (direct children)
        self._texts: dict[str, dict[str, list[str]]] = {}  # call id -> child stream -> its text parts
        self._next: dict[str, int] = {}  # child stream -> its delta count at which to send again
        self._answered: set[str] = set()
        self._n = 0
        self._open: tuple[str, str] | None = None  # (text | reasoning, part id)
        self._names: dict[str, str] = {}  # call id -> tool name
        self._turns = 0  # model turns started (``step`` ``turn``)
        self._step_calls: list[str] = []  # calls started in the current step
        self._step_dirty = False  # a text, reasoning or tool part went out in the current step
        self._state: SharedState | None = None
        self.void: frozenset[int] = frozenset()
        """The root's seqs to write nothing for: a replay's output that a turn asked again voided
        (:func:`tokenwire.core.fold.void_seqs`)."""

    def _chunk(self, **fields: Any) -> bytes:
        return b"data: " + _encode(fields) + b"\n\n"

    def feed(self, event: Event) -> list[bytes]:
        root = self._root
        if root is None and event.__class__ is Start:
            self._root = root = event.stream_id
        if event.stream_id != root and root is not None:
            return self._child(event)
        if self.void and event.seq in self.void:
            return []
        return super().feed(event)

    def _child(self, event: Event) -> list[bytes]:
        """An event of a child run: its text, as the preliminary output of the call it works for."""
        sid, cls = event.stream_id, event.__class__
        if cls is Start:
            parent = event.parent  # type: ignore[union-attr]
            if parent is not None and parent.stream_id == self._root and not self.finished:
                self._call_of[sid] = parent.call_id
                self._texts.setdefault(parent.call_id, {})[sid] = []
            return []
        call = self._call_of.get(sid)
        if call is None or call in self._answered or self.finished:
            return []
        if cls is TextDelta:
            parts = self._texts[call][sid]
            parts.append(event.text)  # type: ignore[union-attr]
            n = len(parts)
            if n < self._next.get(sid, 1):
                return []
            self._next[sid] = n + max(PRELIMINARY_EVERY, n // 4)
            return self._preliminary(call)
        if cls is Done or cls is Error:
            return self._preliminary(call)
        return []

    def _preliminary(self, call: str) -> list[bytes]:
        text = "\n\n".join("".join(parts) for parts in self._texts[call].values() if parts)
        if not text:
            return []
        return [self._chunk(type="tool-output-available", toolCallId=call, output=text, preliminary=True)]

    def start(self, event: Start) -> list[bytes]:
        return [self._chunk(type="start", messageId=self.message_id), self._chunk(type="start-step")]

    def continued(self, root: str) -> bytes:
        """The first chunks of a stream that continues the message from the middle of run
        ``root`` (after a suspension: the request that answered its approvals), which has no
        ``start`` of its own to open with."""
        self._root, self._turns = root, 1
        return b"".join(self.start(Start(model="", stream_id=root)))

    def text(self, delta: str) -> list[bytes]:
        return self._delta("text", delta)

    def reasoning(self, delta: str) -> list[bytes]:
        return self._delta("reasoning", delta)

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        self._names[call_id] = name
        self._step_calls.append(call_id)
        self._step_dirty = True
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
        self._answered.add(result.call_id)
        if result.call_id in self._denied:
            return [self._chunk(type="tool-output-denied", toolCallId=result.call_id)]
        if result.is_error:
            text = result.result if isinstance(result.result, str) else _encode(result.result).decode()
            return [self._chunk(type="tool-output-error", toolCallId=result.call_id, errorText=text)]
        return [self._chunk(type="tool-output-available", toolCallId=result.call_id, output=result.result)]

    def step(self, step: Step) -> list[bytes]:
        """A model turn after the first is a step of its own (``finish-step``, ``start-step``), as
        in the AI SDK's own multi-step streams: useChat's ``lastAssistantMessageIsCompleteWithToolCalls``
        reads the last step only, and a server tool's call and the answer after it in one step
        would make the page send the conversation again. A turn asked again after its node
        stopped is a ``reset-step`` (AI SDK 7: the client drops the step's parts, the void first
        attempt) when this reader was sent any of it; a replay leaves the attempt out (``void``)."""
        detail = step.detail if isinstance(step.detail, dict) else {}
        if step.name == "approval" and isinstance(detail.get("call_id"), str):
            return self._approval(step.status, detail)
        if step.name == "suspend":  # the run waits for answers: this message ends here, for now
            self.finished, self.finished_at = True, step.seq
            finish = self._chunk(type="finish", finishReason="tool-calls")
            return [*self._close(), self._chunk(type="finish-step"), finish, b"data: [DONE]\n\n"]
        if step.name != "turn" or step.status != "started":
            return []
        dirty, self._step_dirty = self._step_dirty, False
        started, self._step_calls = self._step_calls, []
        if detail.get("restarted"):
            for call_id in started:
                self._names.pop(call_id, None)
            return [*self._close(), self._chunk(type="reset-step")] if dirty else []
        self._turns += 1
        if self._turns == 1:
            return []  # its start-step went out with start
        return [*self._close(), self._chunk(type="finish-step"), self._chunk(type="start-step")]

    def _approval(self, status: str, detail: dict[str, Any]) -> list[bytes]:
        """A call waiting for an approval (the AI SDK 6+'s ``tool-approval-request``: ``useChat``
        shows it, ``addToolApprovalResponse`` answers it), and its answer."""
        cid = detail["call_id"]
        approved = bool(detail.get("approved"))
        if status == "finished" and not approved:
            self._denied.add(cid)  # its result is shown as denied
        if cid not in self._names:
            return []  # a call this reader never saw (it asked before the stream this reader continues)
        fields: dict[str, Any] = {"approvalId": self.approval_id(cid), "toolCallId": cid}
        if status == "started":
            return [*self._close(), self._chunk(type="tool-approval-request", **fields)]
        if not approved and detail.get("by") == "timeout":
            fields["reason"] = "the approval was not given in time"
        return [self._chunk(type="tool-approval-response", approved=approved, **fields)]

    def data(self, event: Data) -> list[bytes]:
        """A ``data-<name>`` part (reconciled by ``id`` when it has one; ``transient``: for
        ``onData`` only, never in the message)."""
        fields: dict[str, Any] = {"type": f"data-{event.name}", "data": event.data}
        if event.id:
            fields["id"] = event.id
        if event.transient:
            fields["transient"] = True
        return [self._chunk(**fields)]

    def state(self, event: StateSnapshot | StateDelta) -> list[bytes]:
        """The state whole as one ``data-state`` part (id ``state``: each replaces the last), as
        the AI SDK has no patches."""
        if self._state is None:
            self._state = SharedState()
        try:
            value = self._state.apply(event)
        except InvalidStateDelta:
            return []  # never logged: the run ends with an error before a reader sees such a delta
        return [self._chunk(type="data-state", id="state", data=value)]

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
            self._step_dirty = True
            out.append(self._chunk(type=f"{kind}-start", id=part))
        return [*out, self._chunk(type=f"{kind}-delta", id=self._open[1], delta=delta)]

    def _close(self) -> list[bytes]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        return [self._chunk(type=f"{opened[0]}-end", id=opened[1])]
