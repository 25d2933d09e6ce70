"""A Pydantic AI agent as a tokenwire provider (extra ``pydantic-ai``).

Its run — model responses, tool calls and their results — becomes one tokenwire stream, served
and resumed like any other::

    agent = Agent("openai:gpt-4o", tools=[...])       # any pydantic_ai.Agent
    response = await tokenwire.generate(PydanticAI(agent), "What is 6 times 7?")

It reads ``agent.run_stream_events(...)``:

- each model response → a ``step`` ``turn`` (started at its first part, finished before its calls
  run or at the end);
- ``PartStartEvent`` / ``PartDeltaEvent`` → text (``str``), reasoning (thinking parts) and
  streamed tool arguments (``tool_call.start`` / ``tool_call.delta``);
- ``FunctionToolCallEvent`` → the complete ``tool_call``; ``FunctionToolResultEvent`` →
  ``tool_result`` (``is_error`` unless the tool's outcome is ``success``: failed, denied, retried);
- ``AgentRunResultEvent`` → the run's ``usage``, then ``done``.

The request's last user message is the prompt and the messages before it the history. Leaving
the stream (cancel, a limit, a reader gone) closes the event iterator, which cancels the agent's
run; a failure in it ends the stream with one ``error`` (source ``provider``) naming the cause.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import msgspec

from tokenwire.adapters import Resumed
from tokenwire.core.fold import RunState, tool_messages
from tokenwire.core.provider import Part, Provider, Suspend
from tokenwire.core.request import Message, Request
from tokenwire.events import Done, ReasoningDelta, Step, ToolCall, ToolCallDelta, ToolCallStart, ToolResult, Usage

__all__ = ["PydanticAI", "history"]


def history(request: Request) -> tuple[str | None, list[Any]]:
    """A request as Pydantic AI takes it: a conversation that ends with a user message is that
    prompt and the messages before it; any other (a tool result last…) is all history, no prompt."""
    from pydantic_ai import messages as pm

    msgs = list(request.messages)
    prompt = msgs.pop().content if msgs and msgs[-1].role == "user" else None
    out: list[Any] = []
    for m in msgs:
        if m.role == "system":
            out.append(pm.ModelRequest(parts=[pm.SystemPromptPart(m.content)]))
        elif m.role == "user":
            out.append(pm.ModelRequest(parts=[pm.UserPromptPart(m.content)]))
        elif m.role == "tool":
            part = pm.ToolReturnPart(tool_name=m.name or "", content=m.content, tool_call_id=m.tool_call_id or "")
            out.append(pm.ModelRequest(parts=[part]))
        else:
            parts: list[Any] = [pm.TextPart(m.content)] if m.content else []
            for c in m.tool_calls or []:
                parts.append(pm.ToolCallPart(str(c.get("name")), c.get("args", {}), str(c.get("call_id"))))
            out.append(pm.ModelResponse(parts=parts))
    return prompt, out


class PydanticAI:
    """A ``pydantic_ai.Agent``, streamed as tokenwire events. ``run_options`` go to every run
    (``deps``, ``model_settings``, ``usage_limits``…); ``model`` names the stream's model.

    A tool with ``requires_approval=True`` (give the agent ``output_type=[str, DeferredToolRequests]``)
    asks over the wire, as tokenwire's own tools do: the stream logs a ``step`` ``approval`` and
    the run suspends (a durable run: a server's); the answer (``POST …/approvals``, ``Client.approve``)
    resumes it on a node that serves the agent, from the log alone (:meth:`resume`), with the
    decision as Pydantic AI's ``DeferredToolResults``. Unanswered for ``approval_timeout_s``, it is
    a denial."""

    runs_own_tools = True
    """The agent runs its tools: tokenwire's agent loop must not run them again."""

    def __init__(self, agent: Any, *, model: str | None = None, approval_timeout_s: float = 3600.0, **run_options: Any):
        self.agent = agent
        self.model = model or str(getattr(agent, "name", None) or getattr(agent.model, "model_name", "pydantic-ai"))
        self.approval_timeout_s = approval_timeout_s
        self.run_options = run_options

    def resume(self, state: RunState, decisions: Mapping[str, tuple[bool, str]] | None = None) -> Provider:
        """The run carried on from its folded log (a suspended run answered, or a run whose node
        stopped): the conversation so far as Pydantic AI's history, the answered approvals as its
        ``DeferredToolResults``; a turn cut short (or calls left without a result) is asked again."""
        return _Resumed(self, state, dict(decisions or {}))

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        prompt, past = history(request)
        async with contextlib.aclosing(self.run(prompt, past, Run())) as parts:
            async for part in parts:
                yield part

    def with_system_prompt(self, past: list[Any]) -> list[Any]:
        """``past`` with the agent's own system prompt first, when it holds none: Pydantic AI adds
        it only to a run with no history, so a conversation's later turns (and a run resumed
        from the log) went to the model without it. Its static prompts (``system_prompt=``);
        a dynamic one is the agent's to give, and ``instructions`` are applied to every request."""
        from pydantic_ai import messages as pm

        prompts = getattr(self.agent, "_system_prompts", ())  # no public accessor: see the docstring
        if not past or not prompts:
            return past
        for message in past:
            if isinstance(message, pm.ModelRequest) and any(isinstance(p, pm.SystemPromptPart) for p in message.parts):
                return past
        return [pm.ModelRequest(parts=[pm.SystemPromptPart(p) for p in prompts]), *past]

    async def run(
        self, prompt: str | None, past: list[Any], run: Run, deferred: Any = None
    ) -> AsyncGenerator[Part, None]:
        """One Pydantic AI run, mapped; it ends with ``done``, or suspends for approvals."""
        from pydantic_ai import DeferredToolRequests
        from pydantic_ai.run import AgentRunResultEvent

        waiting: dict[str, float] = {}
        options = {**self.run_options, "deferred_tool_results": deferred} if deferred is not None else self.run_options
        past = self.with_system_prompt(past)
        async with self.agent.run_stream_events(prompt, message_history=past, **options) as events:
            async for event in events:
                if isinstance(event, AgentRunResultEvent):
                    for part in run.end_turn():
                        yield part
                    usage = event.result.usage
                    usage = usage if hasattr(usage, "input_tokens") else usage()  # a method before Pydantic AI 2.7x
                    yield Usage(input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0)
                    output = event.result.output
                    if isinstance(output, DeferredToolRequests):
                        expires = round(time.time() + self.approval_timeout_s, 3)
                        for p in output.approvals:
                            waiting[p.tool_call_id] = expires
                            detail = {"call_id": p.tool_call_id, "tool": p.tool_name, "args": p.args_as_dict()}
                            yield Step(name="approval", status="started", detail={**detail, "expires": expires})
                    continue
                for part in run.parts(event):
                    yield part
        for part in run.end_turn():
            yield part
        if waiting:
            yield Suspend(f"waiting for approval of {', '.join(waiting)}", min(waiting.values()))
        else:
            yield Done(finish_reason="stop")


class _Resumed(Resumed):
    """:meth:`PydanticAI.resume`'s continuation: the run goes on from the history the log gives."""

    outer: PydanticAI

    async def go_on(self, request: Request) -> AsyncIterator[Part]:
        from pydantic_ai import DeferredToolResults, ToolDenied

        state, decisions = self.state, self.decisions
        messages, turns = list(request.messages), state.turns
        run = Run(turn=turns[-1].number if turns else 0)
        answered: dict[str, Any] = {}  # the last turn's decided calls without a result
        thinking: list[str] = []  # each turn's reasoning, for its response in the history
        for i, turn in enumerate(turns):
            last = i == len(turns) - 1
            if last:
                for call in turn.unanswered():
                    if call.call_id in decisions:
                        approved, by = decisions[call.call_id]
                        answered[call.call_id] = True if approved else ToolDenied(f"The call was denied ({by}).")
                    elif (asked := state.approvals.get(call.call_id, {})).get("held"):  # answered earlier
                        answered[call.call_id] = True if asked["approved"] else ToolDenied("The call was denied.")
                    elif asked.get("approved") is not None:
                        # Answered before, and its node stopped before a result: it may have run.
                        said = "The call was interrupted: it may or may not have run; do not assume either."
                        answered[call.call_id] = ToolDenied(said)
            if last and (not turn.finished or not turn.calls or len(answered) < len(turn.unanswered())):
                run.turn, run.restarted, answered = turn.number - 1, True, {}  # cut short: asked again
                break
            calls = [{"call_id": c.call_id, "name": c.name, "args": c.args} for c in turn.calls.values()]
            messages.append(Message("assistant", turn.text, tool_calls=calls))
            thinking.append(turn.reasoning)
            messages += tool_messages(turn.text, [turn.calls[cid] for cid in turn.results], turn.results)[1:]
        run.logged = set(answered)  # their calls are in the log: Pydantic AI reports them again
        prompt, past = history(msgspec.structs.replace(request, messages=messages))
        with_thinking(past, thinking)
        deferred = DeferredToolResults(approvals=answered) if answered else None
        async with contextlib.aclosing(self.outer.run(prompt, past, run, deferred)) as parts:
            async for part in parts:
                yield part


def with_thinking(past: list[Any], thinking: list[str]) -> None:
    """Give the last ``len(thinking)`` model responses of ``past`` (the turns read back from the
    log, in order) their reasoning as a ``ThinkingPart`` first, as the model wrote it: a resumed
    run's model sees what it thought. (Unsigned: a provider that needs its signature, as
    Anthropic does, gets it as text in Pydantic AI's thinking tags.)"""
    from pydantic_ai import messages as pm

    responses = [m for m in past if isinstance(m, pm.ModelResponse)][-len(thinking) :] if thinking else []
    for response, reasoning in zip(responses, thinking, strict=True):
        if reasoning:
            response.parts = [pm.ThinkingPart(reasoning), *response.parts]


class Run:
    """What one run's mapping remembers: the call streaming at each part index."""

    def __init__(self, turn: int = 0) -> None:
        self.calls: dict[int, str] = {}  # part index → call id, for the response being streamed
        self.turn = turn  # the last turn's number
        self.restarted = False  # the next turn is one asked again (its earlier attempt is void)
        self.logged: set[str] = set()  # calls already in the log (a resumed run's approved ones)
        self.texts: dict[int, list[str]] = {}  # part index → its text so far (pieces), this response
        self.open = False  # a model response is streaming: its turn is open

    def restart(self) -> list[Part]:
        """The response being streamed is void (rejected, or rewritten): its turn is asked again."""
        self.open, self.restarted, self.turn = False, True, self.turn - 1
        return self.begin_turn()

    def begin_turn(self) -> list[Part]:
        if self.open:
            return []
        self.open, self.turn, self.calls, self.texts = True, self.turn + 1, {}, {}
        detail: dict[str, Any] = {"turn": self.turn, "restarted": True} if self.restarted else {"turn": self.turn}
        self.restarted = False
        return [Step(name="turn", status="started", detail=detail)]

    def end_turn(self) -> list[Part]:
        """The response streamed so far is complete (its calls are about to run, or the run ended)."""
        if not self.open:
            return []
        self.open = False
        return [Step(name="turn", status="finished", detail={"turn": self.turn, "tool_calls": len(self.calls)})]

    def parts(self, event: Any) -> list[Part]:
        kind = getattr(event, "event_kind", "")
        if kind == "model_response_rejected" and self.open:  # a validator asked again: its output is void
            self.open, self.restarted, self.turn = False, True, self.turn - 1
            return []
        if kind == "part_start":
            return [*self.begin_turn(), *self.start(event.index, event.part)]
        if kind == "part_delta":
            return [*self.begin_turn(), *self.delta(event.index, event.delta)]
        if kind in ("function_tool_call", "output_tool_call"):  # output tools: the structured answer
            p = event.part
            if p.tool_call_id in self.logged:
                return self.end_turn()  # a deferred call now running: its call is in the log already
            return [*self.end_turn(), ToolCall(call_id=p.tool_call_id, name=p.tool_name, args=p.args_as_dict())]
        if kind in ("function_tool_result", "output_tool_result"):
            p = getattr(event, "part", None) or event.result  # ``.result`` before Pydantic AI 2.x's ``.part``
            content = p.content if isinstance(p.content, str | int | float | bool | None) else p.model_response_str()
            outcome = getattr(p, "outcome", None)
            failed = outcome != "success" if outcome is not None else p.part_kind == "retry-prompt"
            return [ToolResult(call_id=p.tool_call_id, name=p.tool_name or "", result=content, is_error=failed)]
        return []

    def start(self, index: int, part: Any) -> list[Part]:
        """A part starts, or replaces the one at its index (some models resend a part whole):
        only what is new is emitted; a replacement that rewrites text already sent asks the
        turn again."""
        kind = getattr(part, "part_kind", "")
        if kind == "text":
            pieces = self.texts.get(index)
            sent = "".join(pieces) if pieces is not None else None  # rare: a part started again
            self.texts[index] = [part.content]
            if sent is not None and not part.content.startswith(sent):
                return [*self.restart(), *([part.content] if part.content else [])]
            new = part.content[len(sent or "") :]
            return [new] if new else []
        if kind == "thinking":
            return [ReasoningDelta(text=part.content)] if part.content and index not in self.calls else []
        if kind == "tool-call":
            if self.calls.get(index) == part.tool_call_id:
                return []  # the same call again: its arguments stream as deltas, complete in its tool_call
            self.calls[index] = part.tool_call_id
            out: list[Part] = [ToolCallStart(call_id=part.tool_call_id, name=part.tool_name)]
            if part.args:
                out.append(ToolCallDelta(call_id=part.tool_call_id, args_delta=_text(part.args)))
            return out
        return []

    def delta(self, index: int, delta: Any) -> list[Part]:
        kind = getattr(delta, "part_delta_kind", "")
        if kind == "text":
            self.texts.setdefault(index, []).append(delta.content_delta or "")  # joined only if resent
            return [delta.content_delta] if delta.content_delta else []
        if kind == "thinking":
            return [ReasoningDelta(text=delta.content_delta)] if delta.content_delta else []
        call_id = self.calls.get(index)
        if kind == "tool_call" and call_id is not None and delta.args_delta:
            return [ToolCallDelta(call_id=call_id, args_delta=_text(delta.args_delta))]
        return []


def _text(args: str | dict[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(args)
