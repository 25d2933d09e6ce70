"""An OpenAI Agents SDK agent as a tokenwire provider (extra ``openai-agents``).

Its run — every agent's model responses, tool calls and their outputs, handoffs — becomes one
tokenwire stream, served and resumed like any other::

    agent = Agent(name="Assistant", tools=[...], handoffs=[...])
    response = await tokenwire.generate(OpenAIAgents(agent), "What is 6 times 7?")

It reads ``Runner.run_streamed(...).stream_events()``:

- each model response (``response.created`` … ``response.completed``) → a ``step`` ``turn``;
- raw Responses events → text (``response.output_text.delta``), reasoning (reasoning text and
  summary deltas) and streamed tool arguments (a ``function_call`` item added →
  ``tool_call.start``; ``response.function_call_arguments.delta`` → ``tool_call.delta``);
  each ``response.completed`` adds its usage to the one ``usage`` sent at the end;
- run items → ``tool_call`` (``tool_called``) and ``tool_result`` (``tool_output``);
- the running agent changing (a handoff) → a ``step`` ``agent`` naming it.

A tool with ``needs_approval`` asks over the wire, as tokenwire's own tools do: the stream logs
a ``step`` ``approval`` per call (the SDK's ``RunState``, serialised, kept in the first one's
opaque ``resume``) and the run suspends (a durable run: a server's); the answer
(``POST …/approvals``, ``Client.approve``, useChat's or AG-UI's) approves or rejects the call in
that state and the SDK's run goes on, on any node with the same agents. Unanswered for
``approval_timeout_s``, it is a rejection.

Sub-agents and handoffs are flattened into the one stream for now. Leaving the stream (cancel, a
limit, a reader gone) cancels the SDK's run; a failure in it ends the stream with one ``error``
(source ``provider``) naming the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from tokenwire.adapters import Resumed
from tokenwire.core.fold import RunState
from tokenwire.core.provider import Part, Provider, Suspend
from tokenwire.core.request import Message, Request
from tokenwire.errors import InvalidRequest
from tokenwire.events import Done, ReasoningDelta, Step, ToolCall, ToolCallDelta, ToolCallStart, ToolResult, Usage

__all__ = ["CANCEL_WAIT_S", "OpenAIAgents", "input_items"]

CANCEL_WAIT_S = 5.0
"""How long a stream that ends early waits for the SDK's cancelled run task to finish."""


def input_items(request: Request) -> list[dict[str, Any]]:
    """A request's messages as the Agents SDK's input items (the Responses API's)."""

    def items(m: Message) -> list[dict[str, Any]]:
        if m.role == "tool":
            return [{"type": "function_call_output", "call_id": m.tool_call_id or "", "output": m.content}]
        out: list[dict[str, Any]] = [{"role": m.role, "content": m.content}] if m.content or not m.tool_calls else []
        for c in m.tool_calls or []:
            args = json.dumps(c.get("args", {}))
            out.append({"type": "function_call", "call_id": c.get("call_id"), "name": c.get("name"), "arguments": args})
        return out

    return [item for m in request.messages for item in items(m)]


class OpenAIAgents:
    """An Agents SDK ``Agent``, streamed as tokenwire events. ``run_options`` go to every
    ``Runner.run_streamed`` (``context``, ``max_turns``, ``run_config``…)."""

    runs_own_tools = True
    """The agent runs its tools: tokenwire's agent loop must not run them again; with no
    ``resume``, another node cannot carry its run on from the log (it ends ``not_resumable``)."""

    def __init__(self, agent: Any, *, model: str | None = None, approval_timeout_s: float = 3600.0, **run_options: Any):
        self.agent = agent
        self.model = model or str(getattr(agent, "name", None) or "openai-agents")
        self.approval_timeout_s = approval_timeout_s
        self.run_options = run_options

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        async with contextlib.aclosing(self.run(input_items(request), Run())) as parts:
            async for part in parts:
                yield part

    async def run(self, start: Any, run: Run) -> AsyncGenerator[Part, None]:
        """One ``Runner.run_streamed`` from ``start`` (input items, or a ``RunState`` that goes on),
        mapped; it ends with ``done``, or suspends at the tools' approvals (``needs_approval``)."""
        from agents import Runner

        options = {**self.run_options, "run_config": run.noting_failures(self.run_options.get("run_config"))}
        result = Runner.run_streamed(self.agent, start, **options)
        events: Any = result.stream_events()  # an async generator (typed as an iterator)
        try:
            async for event in events:
                for part in run.parts(event):
                    yield part
        finally:
            # The run task first (a no-op after the end): closing the SDK's event stream waits for
            # it, and a tool that never ends would hold that close for ever. Then the stream, then
            # a bounded wait for the task's own clean-up.
            result.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(events.aclose(), CANCEL_WAIT_S)
            task = result.run_loop_task
            if task is not None and not task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), CANCEL_WAIT_S)
        if result.run_loop_exception is not None:  # a failure the event stream did not raise
            raise result.run_loop_exception
        if run.usage is not None:
            yield Usage(input_tokens=run.usage[0], output_tokens=run.usage[1])
        interruptions = list(getattr(result, "interruptions", None) or [])
        if not interruptions:
            yield Done(finish_reason="stop")
            return
        # The SDK's own state, serialised, is what goes on: kept (once) in the log, on the server.
        expires, saved = round(time.time() + self.approval_timeout_s, 3), result.to_state().to_string()
        waiting: list[str] = []
        for item in interruptions:
            raw = item.raw_item
            call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
            arguments = raw.get("arguments") if isinstance(raw, dict) else getattr(raw, "arguments", None)
            detail = {"call_id": call_id, "tool": item.tool_name, "args": _args(arguments), "expires": expires}
            resume = {"state": saved} if not waiting else {}
            waiting.append(str(call_id))
            yield Step(name="approval", status="started", detail={**detail, "resume": resume})
        yield Suspend(f"waiting for approval of {', '.join(waiting)}", expires)

    def resume(self, state: RunState, decisions: Mapping[str, tuple[bool, str]] | None = None) -> Provider:
        """A run stopped at its tools' approvals goes on from the SDK's ``RunState`` that the log
        keeps (``RunState.from_string``), each call approved or rejected as answered: on any node
        with the same agents. Any other run cannot be carried on from the log (InvalidRequest)."""
        answers = dict(decisions or {})
        saved = [a["resume"]["state"] for a in state.approvals.values() if "state" in (a.get("resume") or {})]
        if not answers or not saved:
            raise InvalidRequest("an Agents SDK run goes on from the log only at its answered approvals")
        return _Resumed(self, state, answers, saved[-1])


class _Resumed(Resumed):
    """:meth:`OpenAIAgents.resume`'s continuation: the SDK's run goes on from its saved state."""

    outer: OpenAIAgents

    def __init__(self, outer: OpenAIAgents, state: RunState, decisions: dict[str, tuple[bool, str]], saved: str):
        super().__init__(outer, state, decisions)
        self.saved = saved

    async def go_on(self, request: Request) -> AsyncIterator[Part]:
        from agents.run_state import RunState as SDKState

        state, decisions = self.state, self.decisions
        sdk_state = await SDKState.from_string(self.outer.agent, self.saved)
        run = Run()
        run.turn = state.turns[-1].number if state.turns else 0
        run.names = {c.call_id: c.name for turn in state.turns for c in turn.calls.values()}
        for item in sdk_state.get_interruptions():
            raw = item.raw_item
            call_id = str(raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", ""))
            answer = decisions.get(call_id)
            asked = state.approvals.get(call_id, {})
            approved = answer[0] if answer is not None else bool(asked.get("approved"))
            if approved:
                sdk_state.approve(item)
            else:
                run.failed.add(call_id)  # its result is the SDK's rejection message: an error result
                by = answer[1] if answer is not None else "log"
                sdk_state.reject(item, rejection_message=f"The call was denied ({by}).")
        async with contextlib.aclosing(self.outer.run(sdk_state, run)) as parts:
            async for part in parts:
                yield part


class Run:
    """What one run's mapping remembers: streamed calls by item id, names by call id, usage."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}  # output item id → call id
        self.names: dict[str, str] = {}  # call id → tool name
        self.usage: tuple[int, int] | None = None
        self.turn = 0
        self.turn_calls = 0
        self.failed: set[str] = set()  # call ids whose tool failed (the SDK gave the model a message)

    def noting_failures(self, config: Any) -> Any:
        """``config`` (a ``RunConfig``, or a new one) whose ``tool_error_formatter`` also notes the
        failed call's id, so its ``tool_result`` says ``is_error``: the SDK hands the model a
        message in place of the exception and flags nothing. It sees the tools that use its
        default failure handler (a tool with its own ``failure_error_function`` is not seen)."""
        import dataclasses

        from agents import RunConfig

        config = config if config is not None else RunConfig()
        if "tool_error_formatter" not in {f.name for f in dataclasses.fields(config)}:
            return config  # an SDK before the hook: failures stay unflagged
        formatter = config.tool_error_formatter

        def noted(args: Any) -> Any:
            self.failed.add(args.call_id)
            return formatter(args) if formatter is not None else None

        return dataclasses.replace(config, tool_error_formatter=noted)

    def parts(self, event: Any) -> list[Part]:
        kind = event.type
        if kind == "raw_response_event":
            return self.raw(event.data)
        if kind == "agent_updated_stream_event":
            return [Step(name="agent", status="started", detail={"agent": event.new_agent.name})]
        if kind == "run_item_stream_event":
            raw = event.item.raw_item
            if event.name in ("tool_called", "handoff_requested") and getattr(raw, "type", "") == "function_call":
                self.names[raw.call_id] = raw.name
                return [ToolCall(call_id=raw.call_id, name=raw.name, args=_args(raw.arguments))]
            if event.name in ("tool_output", "handoff_occured"):
                call_id = raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
                if call_id not in self.names:
                    return []  # the output of a call type this adapter does not stream (hosted tools)
                output = getattr(event.item, "output", None)
                if output is None and isinstance(raw, dict):
                    output = raw.get("output")
                result = output if isinstance(output, str | int | float | bool | None | list | dict) else str(output)
                failed = call_id in self.failed
                return [ToolResult(call_id=call_id, name=self.names[call_id], result=result, is_error=failed)]
        return []

    def raw(self, data: Any) -> list[Part]:
        kind = data.type
        if kind == "response.created":
            self.turn, self.turn_calls = self.turn + 1, 0
            return [Step(name="turn", status="started", detail={"turn": self.turn})]
        if kind == "response.output_text.delta":
            return [data.delta] if data.delta else []
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [ReasoningDelta(text=data.delta)] if data.delta else []
        if kind == "response.output_item.added" and getattr(data.item, "type", "") == "function_call":
            item = data.item
            self.items[item.id or item.call_id] = item.call_id
            self.turn_calls += 1
            return [ToolCallStart(call_id=item.call_id, name=item.name)]
        if kind == "response.function_call_arguments.delta":
            call_id = self.items.get(data.item_id)
            return [ToolCallDelta(call_id=call_id, args_delta=data.delta)] if call_id and data.delta else []
        if kind == "response.completed":
            if data.response.usage is not None:
                before, usage = self.usage or (0, 0), data.response.usage
                self.usage = (before[0] + usage.input_tokens, before[1] + usage.output_tokens)
            return [Step(name="turn", status="finished", detail={"turn": self.turn, "tool_calls": self.turn_calls})]
        return []


def _args(raw: str | None) -> dict[str, Any]:
    """A call's arguments: the SDK tells the model when they are not a JSON object and goes on,
    so the stream goes on too, with the text kept under ``arguments``."""
    try:
        args = json.loads(raw or "{}")
    except ValueError:
        return {"arguments": raw}
    return args if isinstance(args, dict) else {"arguments": raw}
