"""A LangChain runnable or a LangGraph graph as a tokenwire provider (extra ``langchain``).

Its run — model calls, tool calls and their results, graph nodes — becomes one tokenwire stream,
so everything tokenwire serves works for it: resume, many readers, the Redis log, the OpenAI /
AI SDK / AG-UI endpoints, the web UI, transcripts::

    graph = create_agent(model, tools)                 # or any StateGraph(...).compile(), chat model, chain
    provider = LangChain(graph)
    response = await tokenwire.generate(provider, "What is 6 times 7?")

It reads ``astream_events(version="v2")``, the event stream every LangChain runnable has:

- a model call → a ``step`` ``turn`` (started, then finished with its number of tool calls);
- ``on_chat_model_stream`` → text (``str``), reasoning (LangChain's standard ``reasoning``
  blocks, whatever the provider's own shape: Anthropic thinking, the Responses API's summaries,
  ``reasoning_content``) and streamed tool arguments
  (``tool_call.start`` / ``tool_call.delta``); ``on_chat_model_end`` → each complete
  ``tool_call`` and the call's usage (summed into one ``usage`` at the end);
- ``on_tool_end`` / ``on_tool_error`` → ``tool_result`` (``is_error`` for a failure);
- structured output (``with_structured_output``, an agent's ``response_format``): the model's
  call of the schema, which no tool answers, gets the parsed value as its ``tool_result``, and
  the value's JSON is the answer's text;
- a LangGraph node's start and end → ``step`` ``node`` (``detail.node``).

Subgraphs and sub-agents are flattened into the one stream: their events carry no tree yet.
Cancelling the stream cancels the framework's run (its model request and running tools); a
failure in it ends the stream with one ``error`` (source ``provider``) naming the cause.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from tokenwire.core.fold import RunState
from tokenwire.core.provider import Part, Provider, Suspend
from tokenwire.core.request import Message, Request
from tokenwire.errors import InvalidRequest, ProviderError
from tokenwire.events import Done, ReasoningDelta, Step, ToolCall, ToolCallDelta, ToolCallStart, ToolResult, Usage

__all__ = ["LangChain", "messages_in"]


def messages_in(request: Request) -> list[Any]:
    """A request's messages as LangChain messages (system, human, AI with its tool calls, tool)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    def one(m: Message) -> Any:
        if m.role == "system":
            return SystemMessage(m.content)
        if m.role == "assistant":
            calls = [
                {"id": c.get("call_id"), "name": c.get("name"), "args": c.get("args", {})} for c in m.tool_calls or []
            ]
            return AIMessage(m.content, tool_calls=calls)
        if m.role == "tool":
            return ToolMessage(m.content, tool_call_id=m.tool_call_id or "", name=m.name)
        return HumanMessage(m.content)

    return [one(m) for m in request.messages]


class LangChain:
    """A LangChain runnable (chat model, chain, agent) or LangGraph graph, streamed as tokenwire events.

    ``input`` turns a request into the runnable's input; by default a graph (anything with
    LangGraph's ``stream_mode``) gets ``{"messages": [...]}`` and any other runnable the message
    list. ``config`` is passed to every run (callbacks, ``recursion_limit``, ``configurable``…);
    ``model`` names the stream's model.
    """

    continues_prefix = False
    runs_own_tools = True
    """The graph runs its tools: tokenwire's agent loop must not run them again; with no
    ``resume``, another node cannot carry its run on from the log (it ends ``not_resumable``)."""

    def __init__(
        self,
        runnable: Any,
        *,
        model: str | None = None,
        input: Callable[[Request], Any] | None = None,
        config: dict[str, Any] | None = None,
        approval_timeout_s: float = 3600.0,
    ):
        self.runnable = runnable
        self.approval_timeout_s = approval_timeout_s
        self.model = model or str(getattr(runnable, "name", None) or type(runnable).__name__)
        graph = hasattr(runnable, "stream_mode")
        self.input = input or ((lambda r: {"messages": messages_in(r)}) if graph else messages_in)
        self.config = config or {}

    def run_config(self) -> dict[str, Any]:
        """The config of one run: a graph with a checkpointer gets a thread of its own per run
        unless ``config`` names one (``{"configurable": {"thread_id": …}}``)."""
        configurable = self.config.get("configurable", {})
        if getattr(self.runnable, "checkpointer", None) is None or "thread_id" in configurable:
            return self.config
        return {**self.config, "configurable": {**configurable, "thread_id": uuid.uuid4().hex}}

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        async with contextlib.aclosing(self.run(self.input(request), self.run_config(), Run())) as parts:
            async for part in parts:
                yield part

    async def run(self, graph_input: Any, config: dict[str, Any], state: Run) -> AsyncGenerator[Part, None]:
        """One run of the runnable, mapped; it ends with ``done``, or suspends at an interrupt."""
        events = self.runnable.astream_events(graph_input, config=config, version="v2")
        async with contextlib.aclosing(events):  # leaving early stops the graph now, not at a GC
            async for event in events:
                for part in state.parts(event):
                    yield part
        if state.usage is not None:
            yield Usage(input_tokens=state.usage[0], output_tokens=state.usage[1])
        if not state.interrupts:
            yield Done(finish_reason="stop")
            return
        expires = round(time.time() + self.approval_timeout_s, 3)
        thread = config.get("configurable", {}).get("thread_id")
        for interrupt in state.interrupts.values():
            value = interrupt.value
            asked = value if isinstance(value, dict) and "tool" in value else {"tool": "interrupt", "args": value}
            detail = {"call_id": interrupt.id, "tool": asked["tool"], "args": asked.get("args"), "expires": expires}
            yield Step(name="approval", status="started", detail={**detail, "resume": {"thread_id": thread}})
        yield Suspend(f"waiting for approval of {', '.join(state.interrupts)}", expires)

    def resume(self, state: RunState, decisions: Mapping[str, tuple[bool, str]] | None = None) -> Provider:
        """A graph stopped at ``interrupt()`` goes on from its checkpointer's thread (named in the
        approval), with ``Command(resume={interrupt id: approved})``: the interrupt returns True
        or False. Use a checkpointer every node shares (Postgres, Redis) for any node to carry
        it on. Any other run of a graph cannot be carried on from the log (InvalidRequest)."""
        answers = dict(decisions or {})
        threads = {(state.approvals.get(cid, {}).get("resume") or {}).get("thread_id") for cid in answers}
        if not answers or len(threads) != 1 or None in threads:
            raise InvalidRequest("a LangChain run goes on from the log only at an answered interrupt of a graph")
        return _Resumed(self, state, answers, str(threads.pop()))


class _Resumed:
    """:meth:`LangChain.resume`'s continuation: a provider whose stream goes on with the graph."""

    runs_own_tools = True

    def __init__(self, outer: LangChain, state: RunState, decisions: dict[str, tuple[bool, str]], thread: str):
        self.outer, self.state, self.decisions, self.thread = outer, state, decisions, thread
        self.model = outer.model
        self.provider = outer  # what telemetry names, as for tokenwire's Agent

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        from langgraph.types import Command

        for cid, (approved, by) in self.decisions.items():
            asked = self.state.approvals.get(cid, {})
            detail = {"call_id": cid, "tool": asked.get("tool"), "args": asked.get("args"), "approved": approved}
            yield Step(name="approval", status="finished", detail={**detail, "by": by})
        configurable = {**self.outer.config.get("configurable", {}), "thread_id": self.thread}
        config = {**self.outer.config, "configurable": configurable}
        snapshot = await self.outer.runnable.aget_state(config)
        if not set(self.decisions) <= {i.id for i in snapshot.interrupts}:
            raise ProviderError(
                f"the graph's checkpointer has no such interrupt on thread {self.thread!r}: a run goes on "
                "on another node only with a checkpointer every node shares",
                code="not_resumable",
            )
        run = Run()
        run.turn = self.state.turns[-1].number if self.state.turns else 0
        run.called = {c.call_id for turn in self.state.turns for c in turn.unanswered()}  # a tool that interrupted
        command: Any = Command(resume={cid: approved for cid, (approved, _) in self.decisions.items()})
        async with contextlib.aclosing(self.outer.run(command, config, run)) as parts:
            async for part in parts:
                yield part


class Run:
    """What one run's event mapping remembers: streamed calls by (model run, index), usage."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int | str], str] = {}  # (model run id, chunk index or id) → call id
        self.last: dict[str, str] = {}  # model run id → the call its chunks without index or id continue
        self.announced: set[str] = set()
        self.called: set[str] = set()  # calls streamed complete: the results that may follow
        self.answered: set[str] = set()  # calls whose result was streamed
        self.root: str | None = None  # the run id of the runnable itself (its end is the run's output)
        self.usage: tuple[int, int] | None = None
        self.turn = 0
        self.names: dict[str, str] = {}  # call id → tool name
        self.turns: dict[str, int] = {}  # model run id → its turn (model runs may overlap)
        self.interrupts: dict[str, Any] = {}  # interrupt id → LangGraph's Interrupt: the run stops there

    def parts(self, event: dict[str, Any]) -> list[Part]:
        kind, data = event["event"], event.get("data", {})
        if self.root is None and not event.get("parent_ids"):
            self.root = event.get("run_id")
        if kind == "on_chain_end" and event.get("run_id") == self.root:
            return self.structured(data.get("output"))
        if kind == "on_chat_model_stream":
            return self.chunk(event["run_id"], data["chunk"])
        if kind == "on_chat_model_start":
            self.turn += 1
            self.turns[event["run_id"]] = self.turn
            return [Step(name="turn", status="started", detail={"turn": self.turn})]
        if kind == "on_chat_model_end":
            return self.model_end(data.get("output"), self.turns.pop(event["run_id"], self.turn))
        if kind in ("on_tool_end", "on_tool_error"):
            return self.tool_end(event, data, kind == "on_tool_error")
        chunk = data.get("chunk")
        if kind == "on_chain_stream" and isinstance(chunk, dict) and "__interrupt__" in chunk:
            self.interrupts.update((i.id, i) for i in chunk["__interrupt__"])
            return []
        node = event.get("metadata", {}).get("langgraph_node")
        if kind in ("on_chain_start", "on_chain_end") and node is not None and event.get("name") == node:
            return [
                Step(name="node", status="started" if kind == "on_chain_start" else "finished", detail={"node": node})
            ]
        return []

    def chunk(self, run_id: str, chunk: Any) -> list[Part]:
        out: list[Part] = []
        content = chunk.content
        if isinstance(content, str) and not chunk.additional_kwargs:
            if content:
                out.append(content)  # the common case, without building the standard blocks
        else:  # LangChain's standard blocks: every provider's text and reasoning, one shape
            for block in chunk.content_blocks:
                kind = block.get("type")
                if kind == "text" and block.get("text"):
                    out.append(block["text"])
                elif kind == "reasoning" and block.get("reasoning"):
                    out.append(ReasoningDelta(text=block["reasoning"]))
        for piece in getattr(chunk, "tool_call_chunks", None) or []:
            index = piece.get("index")  # some models number a turn's calls, others only name them
            key: tuple[str, int | str] = (run_id, index if index is not None else piece.get("id") or "")
            call_id = self.calls.get(key) or (self.last.get(run_id) if key[1] == "" else None)
            if call_id is None and piece.get("id"):
                call_id = self.calls[key] = self.last[run_id] = piece["id"]
                self.announced.add(call_id)
                out.append(ToolCallStart(call_id=call_id, name=piece.get("name") or ""))
            if call_id is not None and piece.get("args"):
                out.append(ToolCallDelta(call_id=call_id, args_delta=piece["args"]))
        return out

    def model_end(self, message: Any, turn: int) -> list[Part]:
        out: list[Part] = []
        for call in getattr(message, "tool_calls", None) or []:
            call_id = call.get("id") or ""
            if call_id not in self.announced:  # a model that did not stream its call
                out.append(ToolCallStart(call_id=call_id, name=call["name"]))
                out.append(ToolCallDelta(call_id=call_id, args_delta=json.dumps(call.get("args", {}))))
            out.append(ToolCall(call_id=call_id, name=call["name"], args=dict(call.get("args", {}))))
            self.called.add(call_id)
            self.names[call_id] = call["name"]
        usage = getattr(message, "usage_metadata", None)
        if usage:
            before = self.usage or (0, 0)
            self.usage = (before[0] + usage.get("input_tokens", 0), before[1] + usage.get("output_tokens", 0))
        calls = sum(isinstance(p, ToolCall) for p in out)
        return [*out, Step(name="turn", status="finished", detail={"turn": turn, "tool_calls": calls})]

    def structured(self, output: Any) -> list[Part]:
        """The run's structured output (``with_structured_output``, an agent's ``response_format``):
        the model's call of the schema "tool", which no tool answers, is answered with the parsed
        value, and the value's JSON is the answer's text."""
        unanswered = [c for c in self.called if c not in self.answered]
        if self.interrupts:
            return []  # stopped for an answer: its calls are answered when it resumes
        if isinstance(output, dict) and "structured_response" in output:
            value = output["structured_response"]
        elif (isinstance(output, dict) and "messages" not in output) or hasattr(output, "model_dump"):
            value = output
        else:
            return []
        if not unanswered or value is None:
            return []
        value = value.model_dump(mode="json") if hasattr(value, "model_dump") else _jsonable(value)
        names = {c: n for c, n in self.names.items() if c in unanswered}
        self.answered.update(unanswered)
        return [*(ToolResult(call_id=c, name=names.get(c, ""), result=value) for c in unanswered), json.dumps(value)]

    def tool_end(self, event: dict[str, Any], data: dict[str, Any], failed: bool) -> list[Part]:
        name = str(event.get("name", ""))
        output = data.get("error") if failed else data.get("output")
        if failed and any(c.__name__ == "GraphBubbleUp" for c in type(output).__mro__):
            return []  # an interrupt() in the tool: not a failure, the run stops for an answer
        output = _tool_message(output) or output
        call_id = data.get("tool_call_id") or getattr(output, "tool_call_id", None)
        if call_id not in self.called:
            return []  # a tool run outside a model's streamed call (the graph's own business)
        self.answered.add(call_id)
        if failed:
            return [ToolResult(call_id=call_id, name=name, result=f"{type(output).__name__}: {output}", is_error=True)]
        result = getattr(output, "content", output)
        error = getattr(output, "status", "success") == "error"
        return [ToolResult(call_id=call_id, name=name, result=_jsonable(result), is_error=error)]


def _tool_message(output: Any) -> Any:
    """The ``ToolMessage`` a tool's output carries: itself, or inside a LangGraph ``Command``'s
    update, or in a list of outputs; None when it carries none."""
    update = getattr(output, "update", None)
    found = update.get("messages") if isinstance(update, dict) else output if isinstance(output, list) else None
    for item in found or []:
        if getattr(item, "tool_call_id", None):
            return item
    return output if getattr(output, "tool_call_id", None) else None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
