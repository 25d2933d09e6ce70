"""A LangGraph graph and a LangChain chat model as tokenwire streams, with the real packages and
LangChain's own fake chat model (taught to stream its tool calls as real models do)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool

import tokenwire
from adapter_kit import Forever, cancel_mid_tool, close_mid_tool, served_text
from lc_app import StreamingFake, build, call, multiply
from tokenwire.adapters.langchain import LangChain
from tokenwire.testing import Transcript, assert_transcript
from wire import free_port, wait_http

KEY = "lc-key"


async def test_a_graph_run_is_one_stream_nodes_streamed_call_result_answer() -> None:
    t = Transcript()
    provider = LangChain(build([call(), AIMessage("6 times 7 is 42.")], [multiply]), model="calc")
    response = await tokenwire.generate(provider, "What is 6 times 7?", observers=[t])
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "calc"},
            {"type": "step", "name": "node", "status": "started", "detail": {"node": "agent"}},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 1}},
            {"type": "tool_call.start", "call_id": "call_1", "name": "multiply"},
            {"type": "tool_call.delta", "args_delta": '{"a": 6'},
            {"type": "tool_call.delta", "args_delta": ","},
            {"type": "tool_call.delta", "args_delta": ' "b": 7}'},
            {"type": "tool_call", "call_id": "call_1", "args": {"a": 6, "b": 7}},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 1, "tool_calls": 1}},
            {"type": "step", "name": "node", "status": "finished", "detail": {"node": "agent"}},
            {"type": "step", "name": "node", "status": "started", "detail": {"node": "tools"}},
            {"type": "tool_result", "call_id": "call_1", "name": "multiply", "result": "42", "is_error": False},
            {"type": "step", "name": "node", "status": "finished", "detail": {"node": "tools"}},
            {"type": "step", "name": "node", "status": "started", "detail": {"node": "agent"}},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 2}},
            {"type": "text.delta", "text": "6"},
            ...,
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 2, "tool_calls": 0}},
            {"type": "step", "name": "node", "status": "finished", "detail": {"node": "agent"}},
            {"type": "done", "finish_reason": "stop"},
        ],
    )
    assert response.text == "6 times 7 is 42."


async def test_a_failing_tool_is_an_error_result_and_a_failing_model_one_terminal_error() -> None:
    @tool
    def broken(a: int, b: int) -> int:
        """Always fails."""
        raise ValueError("the abacus is broken")

    t = Transcript()  # the graph tells the model (ToolNode(handle_tool_errors=True)): the run goes on
    provider = LangChain(build([call(name="broken"), AIMessage("Sorry.")], [broken], handle_tool_errors=True))
    await tokenwire.generate(provider, "6 * 7?", observers=[t])
    result = next(e for e in t.events if e.type == "tool_result")
    assert result.is_error and "the abacus is broken" in str(result.result)
    assert t.events[-1].type == "done" and t.text == "Sorry."

    t = Transcript()  # the graph raises (ToolNode's default): the failed call, then one terminal error
    await tokenwire.generate(LangChain(build([call(name="broken")], [broken])), "6 * 7?", observers=[t])
    assert_transcript(
        t.events,
        [
            "start",
            ...,
            {
                "type": "tool_result",
                "call_id": "call_1",
                "is_error": True,
                "result": "ValueError: the abacus is broken",
            },
            ...,
            {"type": "error", "source": "provider"},
        ],
    )
    assert "the abacus is broken" in t.events[-1].message

    class Down(StreamingFake):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            yield ChatGenerationChunk(message=AIMessageChunk(content="Par"))
            raise ConnectionError("the model's server went away")

    t = Transcript()
    await tokenwire.generate(LangChain(Down(messages=iter([]))), "hi", observers=[t])
    assert_transcript(
        t.events, ["start", "step", {"type": "text.delta", "text": "Par"}, {"type": "error", "source": "provider"}]
    )
    assert "the model's server went away" in t.events[-1].message


async def test_cancel_mid_run_cancels_the_frameworks_running_tool() -> None:
    forever = Forever()

    @tool
    async def slow(a: int, b: int) -> int:
        """Takes forever."""
        return await forever()

    await cancel_mid_tool(LangChain(build(iter([call(name="slow"), AIMessage("never")]), [slow])), forever)


async def test_a_bare_chat_model_streams_text_and_a_served_graph_reads_in_the_openai_sdk() -> None:
    t = Transcript()
    await tokenwire.generate(LangChain(StreamingFake(messages=iter(["Hello there."]))), "hi", observers=[t])
    assert_transcript(t.events, ["start", "step", "text.delta", ..., "step", {"type": "done", "finish_reason": "stop"}])
    assert t.text == "Hello there."

    assert (
        await served_text(LangChain(build(iter([call(), AIMessage("It is 42.")]), [multiply])), "6 * 7?") == "It is 42."
    )


def test_tokenwire_serve_agent_serves_a_graph_by_import_path_to_the_openai_sdk() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), "--agent", "lc_app:graph"]
    proc = subprocess.Popen([*cmd, "--api-key", KEY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="lc_app:graph", messages=[{"role": "user", "content": "6 times 7?"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "It is 42."
        client.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err


async def test_a_frameworks_agent_is_never_wrapped_by_tokenwires_loop_nor_carried_on_by_another_node() -> None:
    """It runs its own tools: the agent loop would run each call a second time, and a node that
    takes the run over from the log cannot rebuild the framework's state."""
    import pytest

    from tokenwire.errors import InvalidRequest, RunSuspended
    from tokenwire.server import RunBody, RunService

    provider = LangChain(build(iter([call(), AIMessage("42.")]), [multiply]))
    with pytest.raises(ValueError, match="runs its own tools"):
        tokenwire.generate(provider, "6 * 7?", tools=[lambda: None])
    service = RunService(providers={"g": provider}, tools=[tokenwire.tool(lambda: 1, name="one")], api_keys=[KEY])
    owner = service.authenticate(KEY)
    with pytest.raises(InvalidRequest, match="runs its own tools"):
        await service.start(RunBody(prompt="hi", tools=["one"]), owner=owner)

    gate, began = asyncio.Event(), asyncio.Event()

    @tool
    async def slow(a: int, b: int) -> int:
        """Waits for the gate."""
        began.set()
        await gate.wait()
        return a * b

    service = RunService(providers={"g": LangChain(build(iter([call(name="slow"), AIMessage("42.")]), [slow]))})
    run = await service.start(RunBody(prompt="6 * 7?"), owner="")
    await asyncio.wait_for(began.wait(), 30)  # the graph runs the call: it is in the log
    run.handle.suspend("its node stopped", until=0.0)  # as a node that died: due for another
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    token = service.durable.token()
    assert await service.log.ownership.claim(run.stream_id, token, suspended_only=True)
    await service.durable.carry_on(run.stream_id, token)
    events = await service.history(run.stream_id)
    assert events[-1].type == "error" and events[-1].code == "not_resumable"
    assert sum(e.type in ("done", "error") for e in events) == 1
    await service.shutdown(1.0)


async def test_leaving_the_stream_early_stops_the_graph_at_once_and_parallel_calls_stay_apart() -> None:

    forever = Forever()

    @tool
    async def slow(a: int, b: int) -> int:
        """Takes forever."""
        return await forever()

    await close_mid_tool(LangChain(build(iter([call(name="slow")]), [slow])), forever)

    class Unnumbered(StreamingFake):  # calls named by id only, as some models stream them
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            for cid, first, rest in (("x", '{"a": 1,', ' "b": 2}'), ("y", '{"a": 3,', ' "b": 4}')):
                start = {"name": "multiply", "args": first, "id": cid, "index": None}
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[start]))
                more = {"name": None, "args": rest, "id": None, "index": None}
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[more]))

    t = Transcript()
    await tokenwire.generate(LangChain(Unnumbered(messages=iter([]))), "two calls", observers=[t])
    args: dict[str, str] = {}
    for e in t.events:
        if e.type == "tool_call.delta":
            args[e.call_id] = args.get(e.call_id, "") + e.args_delta
    assert args == {"x": '{"a": 1, "b": 2}', "y": '{"a": 3, "b": 4}'}


def test_adapt_serves_agents_and_graphs_not_their_pieces() -> None:
    import pytest
    from langchain_core.messages import HumanMessage
    from langchain_core.prompts import ChatPromptTemplate
    from langgraph.graph import MessagesState, StateGraph

    from tokenwire.adapters import adapt

    assert isinstance(adapt(build(iter([]), [multiply])), LangChain)
    assert isinstance(adapt(StreamingFake(messages=iter([]))), LangChain)
    for piece in (multiply, HumanMessage("hi"), ChatPromptTemplate.from_messages([("user", "{q}")])):
        assert adapt(piece) is None, piece
    with pytest.raises(ValueError, match=r"compile\(\)"):
        adapt(StateGraph(MessagesState))


async def test_reasoning_in_each_providers_own_shape_is_reasoning() -> None:
    class Thinking(StreamingFake):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            for content, extra, provider in (
                ([{"type": "thinking", "thinking": "Anthropic thinks."}], {}, "anthropic"),
                (
                    [{"type": "reasoning", "summary": [{"type": "summary_text", "text": " OpenAI sums up."}]}],
                    {},
                    "openai",
                ),
                ("", {"reasoning_content": " DeepSeek reasons."}, None),
                ("The answer.", {}, None),
            ):
                meta = {"model_provider": provider} if provider else {}
                chunk = AIMessageChunk(content=content, additional_kwargs=extra, response_metadata=meta)
                yield ChatGenerationChunk(message=chunk)

    response = await tokenwire.generate(LangChain(Thinking(messages=iter([]))), "hi")
    assert response.reasoning == "Anthropic thinks. OpenAI sums up. DeepSeek reasons."
    assert response.text == "The answer."


async def test_a_graph_interrupt_is_an_approval_answered_over_the_wire() -> None:
    """interrupt({"tool", "args"}) in a node (a graph with a checkpointer): the run suspends with
    a step approval naming the checkpointer's thread; the owner's answer resumes the graph there
    with Command(resume=...), and the interrupt returns the decision."""
    import pytest
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.types import interrupt

    from adapter_kit import until_ended
    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    async def one(approved: bool, said: str) -> None:
        wired: list[int] = []

        async def review(state: MessagesState) -> dict[str, Any]:
            yes = interrupt({"tool": "wire_money", "args": {"amount": 42}})
            if yes:
                wired.append(42)
            model = StreamingFake(messages=iter(["Sent 42." if yes else "Not sent."]))
            return {"messages": [await model.ainvoke(state["messages"])]}

        g = StateGraph(MessagesState)
        g.add_node("review", review)
        g.add_edge(START, "review")
        service = RunService(providers={"g": LangChain(g.compile(checkpointer=InMemorySaver()))}, api_keys=[KEY])
        owner = service.authenticate(KEY)
        run = await service.start(RunBody(prompt="Pay 42"), owner=owner)
        with pytest.raises(RunSuspended):
            await run.handle.wait()
        asked = await service.history(run.stream_id)
        step = asked[-2]
        assert step.type == "step" and step.name == "approval" and step.status == "started"
        assert asked[-1].type == "step" and asked[-1].name == "suspend"  # readers are told it waits
        assert step.detail["tool"] == "wire_money" and step.detail["args"] == {"amount": 42}
        assert step.detail["resume"]["thread_id"] and wired == []
        await service.approve(run.stream_id, step.detail["call_id"], approved, owner=owner)
        events = await until_ended(service, run.stream_id)
        resumed = events[len(asked) :]
        assert resumed[0].type == "step" and resumed[0].detail["approved"] is approved
        assert "".join(e.text for e in resumed if e.type == "text.delta") == said and events[-1].type == "done"
        assert wired == ([42] if approved else []) and [e.seq for e in events] == list(range(len(events)))
        await service.shutdown(1.0)

    await one(True, "Sent 42.")
    await one(False, "Not sent.")


async def test_an_interrupt_inside_a_tool_is_no_failure_and_a_waiting_graph_can_be_cancelled() -> None:
    import pytest
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import interrupt

    from adapter_kit import until_ended
    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    @tool
    def pay(a: int, b: int) -> str:
        """Pays a times b, once a human agreed."""
        return "paid" if interrupt({"tool": "pay", "args": {"amount": a * b}}) else "refused"

    def graph() -> Any:
        from langgraph.graph import START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode, tools_condition

        from lc_app import StreamingFake as Fake

        model = Fake(messages=iter([call(name="pay"), AIMessage("Done.")]))

        async def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        g = StateGraph(MessagesState)
        g.add_node("agent", agent)
        g.add_node("tools", ToolNode([pay]))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", tools_condition)
        g.add_edge("tools", "agent")
        return g.compile(checkpointer=InMemorySaver())

    service = RunService(providers={"g": LangChain(graph()), "again": LangChain(graph())}, api_keys=[KEY])
    owner = service.authenticate(KEY)
    run = await service.start(RunBody(prompt="pay", provider="g"), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    asked = await service.history(run.stream_id)
    assert not any(e.type == "tool_result" for e in asked)  # the interrupt is not a failed call
    await service.approve(run.stream_id, asked[-2].detail["call_id"], True, owner=owner)
    events = await until_ended(service, run.stream_id)
    results = [e for e in events if e.type == "tool_result"]
    assert [(r.call_id, r.result, r.is_error) for r in results] == [("call_1", "paid", False)]
    assert events[-1].type == "done" and "".join(e.text for e in events if e.type == "text.delta") == "Done."

    run = await service.start(RunBody(prompt="pay", provider="again"), owner=owner)  # asks, then is cancelled
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    assert await service.cancel(run.stream_id, "changed my mind")
    events = await until_ended(service, run.stream_id)
    assert events[-1].type == "done" and events[-1].finish_reason == "cancelled"
    assert sum(e.type in ("done", "error") for e in events) == 1
    await service.shutdown(1.0)


async def test_structured_output_answers_the_schema_call_and_is_the_answer() -> None:
    """``with_structured_output``: the model calls the schema as a tool that nothing runs; the
    stream answers that call with the parsed value and gives its JSON as the text."""
    from pydantic import BaseModel

    class Weather(BaseModel):
        """The weather in a city."""

        city: str
        sunny: bool

    class Binds(StreamingFake):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    answer = AIMessage("", tool_calls=[{"id": "c1", "name": "Weather", "args": {"city": "Paris", "sunny": True}}])
    chain = Binds(messages=iter([answer])).with_structured_output(Weather)
    t = Transcript()
    response = await tokenwire.generate(LangChain(chain), "Weather in Paris?", observers=[t])
    value = {"city": "Paris", "sunny": True}
    assert_transcript(
        t.events,
        [
            "start",
            ...,
            {"type": "tool_call", "call_id": "c1", "name": "Weather", "args": value},
            ...,
            {"type": "tool_result", "call_id": "c1", "name": "Weather", "result": value, "is_error": False},
            {"type": "text.delta", "text": '{"city": "Paris", "sunny": true}'},
            "done",
        ],
    )
    assert response.text == '{"city": "Paris", "sunny": true}'
