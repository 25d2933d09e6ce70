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

import json
from collections.abc import AsyncIterator
from typing import Any

from tokenwire.core.provider import Part
from tokenwire.core.request import Request
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
    (``deps``, ``model_settings``, ``usage_limits``…); ``model`` names the stream's model."""

    runs_own_tools = True
    """The agent runs its tools: tokenwire's agent loop must not run them again (nor carry the
    run on from its log on another node)."""

    def __init__(self, agent: Any, *, model: str | None = None, **run_options: Any):
        self.agent = agent
        self.model = model or str(getattr(agent, "name", None) or getattr(agent.model, "model_name", "pydantic-ai"))
        self.run_options = run_options

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        from pydantic_ai.run import AgentRunResultEvent

        prompt, past = history(request)
        run = Run()
        async with self.agent.run_stream_events(prompt, message_history=past, **self.run_options) as events:
            async for event in events:
                if isinstance(event, AgentRunResultEvent):
                    for part in run.end_turn():
                        yield part
                    usage = event.result.usage
                    usage = usage if hasattr(usage, "input_tokens") else usage()  # a method before Pydantic AI 2.7x
                    yield Usage(input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0)
                    continue
                for part in run.parts(event):
                    yield part
        for part in run.end_turn():
            yield part
        yield Done(finish_reason="stop")


class Run:
    """What one run's mapping remembers: the call streaming at each part index."""

    def __init__(self) -> None:
        self.calls: dict[int, str] = {}  # part index → call id, for the response being streamed
        self.turn = 0
        self.open = False  # a model response is streaming: its turn is open

    def begin_turn(self) -> list[Part]:
        if self.open:
            return []
        self.open, self.turn, self.calls = True, self.turn + 1, {}
        return [Step(name="turn", status="started", detail={"turn": self.turn})]

    def end_turn(self) -> list[Part]:
        """The response streamed so far is complete (its calls are about to run, or the run ended)."""
        if not self.open:
            return []
        self.open = False
        return [Step(name="turn", status="finished", detail={"turn": self.turn, "tool_calls": len(self.calls)})]

    def parts(self, event: Any) -> list[Part]:
        kind = getattr(event, "event_kind", "")
        if kind == "part_start":
            return [*self.begin_turn(), *self.start(event.index, event.part)]
        if kind == "part_delta":
            return [*self.begin_turn(), *self.delta(event.index, event.delta)]
        if kind in ("function_tool_call", "output_tool_call"):  # output tools: the structured answer
            p = event.part
            return [*self.end_turn(), ToolCall(call_id=p.tool_call_id, name=p.tool_name, args=p.args_as_dict())]
        if kind in ("function_tool_result", "output_tool_result"):
            p = getattr(event, "part", None) or event.result  # ``.result`` before Pydantic AI 2.x's ``.part``
            content = p.content if isinstance(p.content, str | int | float | bool | None) else p.model_response_str()
            outcome = getattr(p, "outcome", None)
            failed = outcome != "success" if outcome is not None else p.part_kind == "retry-prompt"
            return [ToolResult(call_id=p.tool_call_id, name=p.tool_name or "", result=content, is_error=failed)]
        return []

    def start(self, index: int, part: Any) -> list[Part]:
        kind = getattr(part, "part_kind", "")
        if kind == "text":
            return [part.content] if part.content else []
        if kind == "thinking":
            return [ReasoningDelta(text=part.content)] if part.content else []
        if kind == "tool-call":
            self.calls[index] = part.tool_call_id
            out: list[Part] = [ToolCallStart(call_id=part.tool_call_id, name=part.tool_name)]
            if part.args:
                out.append(ToolCallDelta(call_id=part.tool_call_id, args_delta=_text(part.args)))
            return out
        return []

    def delta(self, index: int, delta: Any) -> list[Part]:
        kind = getattr(delta, "part_delta_kind", "")
        if kind == "text":
            return [delta.content_delta] if delta.content_delta else []
        if kind == "thinking":
            return [ReasoningDelta(text=delta.content_delta)] if delta.content_delta else []
        call_id = self.calls.get(index)
        if kind == "tool_call" and call_id is not None and delta.args_delta:
            return [ToolCallDelta(call_id=call_id, args_delta=_text(delta.args_delta))]
        return []


def _text(args: str | dict[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(args)
