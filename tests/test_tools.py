"""Tools: definitions, validation, the runner's bounds and the agent loop, as transcripts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
import pydantic
import pytest

import tokenwire
from conftest import other_tasks
from tokenwire.events import Done, Step, TextDelta, ToolCall, ToolCallDelta, ToolCallStart, ToolResult
from tokenwire.providers import Delay, Scripted, Stall
from tokenwire.testing import Transcript, assert_transcript
from tokenwire.tools import Progress, ToolArgumentsInvalid, Toolset, tool
from tokenwire.tools.agent import Agent


def call(tool_name: str, cid: str = "c1", **args: Any) -> ToolCall:
    return ToolCall(call_id=cid, name=tool_name, args=args)


# -- definitions -----------------------------------------------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: int


class Filter(pydantic.BaseModel):
    field: str
    value: int


@tool
def search(query: str, limit: int = 5, kind: Literal["web", "news"] = "web", near: Point | None = None) -> list[str]:
    """Search the index.

    Args:
        query: What to look for.
        limit: How many results,
            at most.
    """
    return [query] * limit


def test_schema_is_generated_from_the_signature_and_docstring() -> None:
    spec = search.spec
    assert spec.name == "search" and spec.description == "Search the index."
    params = spec.parameters
    assert params["type"] == "object" and params["required"] == ["query"] and params["additionalProperties"] is False
    props = params["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert props["limit"] == {"type": "integer", "default": 5, "description": "How many results, at most."}
    assert sorted(props["kind"]["enum"]) == ["news", "web"]
    assert "Point" in params["$defs"]


def test_pydantic_model_parameters() -> None:
    @tool
    async def query(table: str, where: Filter) -> int:
        """Count rows."""
        return 1

    props = query.spec.parameters["properties"]
    assert props["where"]["properties"]["value"]["type"] == "integer"
    kwargs = query.validate({"table": "t", "where": {"field": "a", "value": 3}})
    assert isinstance(kwargs["where"], Filter) and kwargs["where"].value == 3
    with pytest.raises(
        ToolArgumentsInvalid, match=r"tool 'query' argument 'where.value': input should be a valid integer"
    ):
        query.validate({"table": "t", "where": {"field": "a", "value": "3"}})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"query": 42}, "tool 'search' argument 'query': expected str, got int (42)"),
        ({}, "tool 'search' is missing required argument 'query'"),
        ({"query": "x", "limit": "3"}, "tool 'search' argument 'limit': expected int, got str ('3')"),
        ({"query": "x", "kind": "maps"}, "tool 'search' argument 'kind': invalid enum value 'maps'"),
        ({"query": "x", "color": 1}, "tool 'search' got unknown argument 'color'; it takes: query, limit, kind, near"),
        ({"query": "x", "near": {"x": 1}}, "tool 'search' argument 'near': object missing required field y"),
    ],
)
def test_validation_messages_name_argument_expectation_and_value(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolArgumentsInvalid) as info:
        search.validate(args)
    assert str(info.value) == message


def test_validation_returns_typed_kwargs() -> None:
    kwargs = search.validate({"query": "x", "near": {"x": 1, "y": 2}})
    assert kwargs == {"query": "x", "limit": 5, "kind": "web", "near": Point(1, 2)}


def test_varargs_and_duplicate_names_are_rejected() -> None:
    with pytest.raises(TypeError, match="name every argument"):
        tool(lambda *a: None)
    with pytest.raises(ValueError, match="two tools are named 'search'"):
        Toolset([search, search])


# -- the agent loop ------------------------------------------------------------------------------


async def run_agent(model: Scripted, tools: list[Any], **kwargs: Any) -> tuple[Transcript, tokenwire.Response]:
    t = Transcript()
    options = tokenwire.tools.ToolOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k != "limits"})
    agent = Agent(model, tools, options)
    response = await tokenwire.generate(agent, "go", observers=[t], **kwargs)
    return t, response


async def test_two_parallel_calls_overlap_in_time() -> None:
    spans: dict[str, tuple[float, float]] = {}

    @tool
    async def slow(name: str) -> str:
        """Take a while."""
        t0 = time.perf_counter()
        await asyncio.sleep(0.1)
        spans[name] = (t0, time.perf_counter())
        return name.upper()

    model = Scripted.turns([call("slow", "a", name="a"), call("slow", "b", name="b")], ["both done"])
    t, response = await run_agent(model, [slow])
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1, "the executions must overlap"
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 1}},
            {"type": "tool_call", "call_id": "a"},
            {"type": "tool_call", "call_id": "b"},
            {"type": "tool_result", "call_id": "a", "result": "A", "is_error": False},
            {"type": "tool_result", "call_id": "b", "result": "B"},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 1, "tool_calls": 2}},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 2}},
            {"type": "text.delta", "text": "both done"},
            {"type": "step", "name": "turn", "status": "finished"},
            {"type": "done", "finish_reason": "stop"},
        ],
    )
    second_turn = model.requests[1].messages
    assert [m.role for m in second_turn] == ["user", "assistant", "tool", "tool"]
    assert second_turn[1].tool_calls == [
        {"call_id": "a", "name": "slow", "args": {"name": "a"}},
        {"call_id": "b", "name": "slow", "args": {"name": "b"}},
    ]
    assert (second_turn[2].tool_call_id, second_turn[2].content) == ("a", '"A"')
    assert response.tool_results[0].result == "A"


async def test_tools_start_when_the_call_arrives_not_when_the_turn_ends() -> None:
    started: list[float] = []

    @tool
    def lookup(key: str) -> str:
        """Look something up (sync: runs in a worker thread)."""
        started.append(time.time())
        return key * 2

    turn_one: list[Any] = [call("lookup", key="k"), *[x for _ in range(5) for x in ("word ", Delay(0.04))]]
    t, _ = await run_agent(Scripted.turns(turn_one, ["ok"]), [lookup])
    tool_call = next(e for e in t.events if isinstance(e, ToolCall))
    result_index = next(i for i, e in enumerate(t.events) if isinstance(e, ToolResult))
    last_text_of_turn_one = max(i for i, e in enumerate(t.events) if isinstance(e, TextDelta) and e.text == "word ")
    assert result_index < last_text_of_turn_one, "the result joined the stream while the model was still talking"
    assert started[0] - tool_call.ts < 0.15  # started right away, not after the turn's 0.2 s of text


async def test_invalid_arguments_never_reach_the_function_and_go_back_to_the_model() -> None:
    calls: list[Any] = []

    @tool
    def weather(city: str) -> str:
        """Weather."""
        calls.append(city)
        return "sunny"

    model = Scripted.turns([call("weather", city=42)], [call("weather", "c2", city="Paris")], ["Sunny in Paris."])
    t, response = await run_agent(model, [weather])
    results = [e for e in t.events if isinstance(e, ToolResult)]
    assert results[0].is_error and results[0].result == "tool 'weather' argument 'city': expected str, got int (42)"
    assert not results[1].is_error and results[1].result == "sunny"
    assert calls == ["Paris"]
    assert model.requests[1].messages[-1].content == "error: tool 'weather' argument 'city': expected str, got int (42)"
    assert response.text == "Sunny in Paris."


async def test_malformed_json_arguments_streamed_by_the_model() -> None:
    @tool
    def weather(city: str) -> str:
        """Weather."""
        return "sunny"

    turn: list[Any] = [
        ToolCallStart(call_id="c1", name="weather"),
        ToolCallDelta(call_id="c1", args_delta='{"city": "Par'),
        ToolCall(call_id="c1", name="weather", args={}),
    ]
    t, _ = await run_agent(Scripted.turns(turn, ["ok"]), [weather])
    result = next(e for e in t.events if isinstance(e, ToolResult))
    assert result.is_error and "arguments are not valid JSON" in result.result and "Par" in result.result


async def test_timeouts_exceptions_unknown_tools_and_bounds_become_error_results() -> None:
    @tool(timeout_s=0.05)
    async def hang() -> None:
        """Never returns."""
        await asyncio.Event().wait()

    @tool
    def boom() -> None:
        """Fails."""
        raise RuntimeError("disk on fire")

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    turn = [
        call("hang", "h"),
        call("boom", "b"),
        call("nope", "n"),
        call("echo", "big", text="x" * 200),
        call("echo", "e", text="hi"),
    ]
    t, response = await run_agent(
        Scripted.turns(turn, ["done"]), [hang, boom, echo], max_args_bytes=100, max_tool_calls=4
    )
    by_id = {e.call_id: e for e in t.events if isinstance(e, ToolResult)}
    assert by_id["h"].result == "tool 'hang' timed out after 0.05 s"
    assert by_id["b"].result == "tool 'boom' raised RuntimeError: disk on fire"
    assert by_id["n"].result == "there is no tool 'nope' here; available tools: hang, boom, echo"
    assert by_id["big"].result == "tool 'echo' arguments are 211 bytes; the limit is 100 bytes"
    assert by_id["e"].result == "this run allows at most 4 tool calls; answer without more"
    assert all(r.is_error for r in by_id.values())
    assert response.finish_reason == "stop" and response.text == "done"


async def test_allowlist_hides_and_refuses_other_tools() -> None:
    @tool
    def safe() -> str:
        """Safe."""
        return "ok"

    @tool
    def dangerous() -> str:
        """Dangerous."""
        return "boom"

    model = Scripted.turns([call("dangerous")], ["fine"])
    t, _ = await run_agent(model, [safe, dangerous], allow=frozenset({"safe"}))
    assert [s.name for s in model.requests[0].tools] == ["safe"]
    result = next(e for e in t.events if isinstance(e, ToolResult))
    assert result.is_error and "available tools: safe" in result.result


async def test_cancel_mid_tool_cancels_the_tool_and_ends_with_cancelled() -> None:
    cancelled = asyncio.Event()

    @tool
    async def long_job() -> str:
        """Runs for a long time."""
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    t = Transcript()
    handle = tokenwire.generate(Scripted.turns([call("long_job"), Stall()]), "go", observers=[t], tools=[long_job])
    await asyncio.sleep(0.05)
    handle.cancel("user stop")
    terminal = await asyncio.wait_for(handle.wait(), 1)
    assert cancelled.is_set()
    assert isinstance(terminal, Done) and terminal.finish_reason == "cancelled"
    assert not any(isinstance(e, ToolResult) for e in t.events)
    assert not other_tasks()


@pytest.mark.parametrize("granted", [True, False])
async def test_approval_is_visible_as_steps_and_denial_is_an_error_result(granted: bool) -> None:
    ran: list[str] = []

    @tool(requires_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    async def approve(c: ToolCall) -> bool:
        await asyncio.sleep(0.01)  # a human thinking
        return granted and c.args["path"].startswith("/tmp/")

    t, _ = await run_agent(Scripted.turns([call("delete_file", path="/tmp/x")], ["ok"]), [delete_file], approve=approve)
    assert_transcript(
        t.events,
        [
            ...,
            "tool_call",
            {
                "type": "step",
                "name": "approval",
                "status": "started",
                "detail": {"call_id": "c1", "tool": "delete_file", "args": {"path": "/tmp/x"}},
            },
            {"type": "step", "name": "approval", "status": "finished"},
            {"type": "tool_result", "is_error": not granted},
            ...,
        ],
    )
    approval = [e for e in t.events if isinstance(e, Step) and e.name == "approval"][-1]
    assert approval.detail["approved"] is granted
    assert ran == (["/tmp/x"] if granted else [])


async def test_max_steps_ends_with_a_clear_reason() -> None:
    @tool
    def again() -> str:
        """Loop."""
        return "more"

    t, response = await run_agent(Scripted.turns([call("again")]), [again], max_steps=3)
    assert [e.detail["turn"] for e in t.events if isinstance(e, Step) and e.status == "started"] == [1, 2, 3]
    assert response.finish_reason == "tool_calls"
    done = t.events[-1]
    assert isinstance(done, Done) and done.reason == "max_steps=3 reached while the model was still calling tools"


async def test_async_generator_tools_report_progress_as_steps() -> None:
    @tool
    async def crawl(pages: int) -> AsyncIterator[Any]:
        """Crawl pages."""
        for i in range(pages):
            yield Progress({"page": i + 1})
        yield {"crawled": pages}

    t, _ = await run_agent(Scripted.turns([call("crawl", pages=3)], ["ok"]), [crawl])
    progress = [e.detail["progress"] for e in t.events if isinstance(e, Step) and e.name == "tool:crawl"]
    assert progress == [{"page": 1}, {"page": 2}, {"page": 3}]
    assert next(e for e in t.events if isinstance(e, ToolResult)).result == {"crawled": 3}


async def test_tools_the_request_declares_are_the_callers_and_end_the_run() -> None:
    """An agent's own tools run; a call to a tool only the request declares ends the run with
    finish "tool_calls" once the agent's calls are answered (the caller answers it next time)."""
    from tokenwire.core.request import Message, Request, ToolSpec

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = Scripted.turns([call("weather", "c1", city="Oslo"), call("pick_color", "c2")], ["unreachable"])
    request = Request([Message("user", "go")], tools=[ToolSpec("pick_color", "The user picks a color.", {})])
    t = Transcript()
    response = await tokenwire.generate(Agent(model, [weather]), request, observers=[t])
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "step", "name": "turn", "status": "started"},
            {"type": "tool_call", "name": "weather"},
            {"type": "tool_call", "name": "pick_color"},
            {"type": "tool_result", "call_id": "c1", "result": "sunny in Oslo"},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 1, "tool_calls": 2}},
            {"type": "done", "finish_reason": "tool_calls"},
        ],
    )
    assert [r.call_id for r in response.tool_results] == ["c1"] and model.started == 1
    assert sorted(s.name for s in model.requests[0].tools) == ["pick_color", "weather"]  # the model saw both


async def test_client_side_tools_wait_for_a_submitted_result() -> None:
    @tool(client_side=True)
    def pick_color() -> str:
        """The user picks a color in the browser."""
        raise AssertionError("never runs on the server")

    agent = Agent(Scripted.turns([call("pick_color")], ["nice"]), [pick_color])
    t = Transcript()
    waiting = asyncio.Event()

    def on_step(e: tokenwire.Event) -> None:
        if isinstance(e, Step) and e.name == "client_tool":
            waiting.set()

    handle = tokenwire.generate(agent, "go", observers=[t, on_step])
    await waiting.wait()
    agent.submit("c1", "teal")
    response = await handle
    assert next(e for e in t.events if isinstance(e, ToolResult)).result == "teal"
    assert response.text == "nice"

    slow = Agent(
        Scripted.turns([call("pick_color")], ["nice"]), [pick_color], tokenwire.tools.ToolOptions(client_timeout_s=0.05)
    )
    result = (await tokenwire.generate(slow, "go")).tool_results[0]
    assert result.is_error and "got no result within 0.05 s" in result.result


async def test_sync_tools_do_not_block_the_event_loop() -> None:
    @tool
    def blocking() -> str:
        """Blocks its thread."""
        time.sleep(0.1)
        return threading.current_thread().name

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    response = await tokenwire.generate(Scripted.turns([call("blocking")], ["ok"]), "go", tools=[blocking])
    tick.cancel()
    assert ticks >= 5
    assert response.tool_results[0].result.startswith("tokenwire-tool")


@pytest.mark.e2e
async def test_the_agent_loop_on_the_embedded_model() -> None:
    from tokenwire.core.request import Message, Request
    from tokenwire.providers import LlamaCpp

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    t = Transcript()
    request = Request([Message("user", "What is 2 plus 3?")], tool_choice="add", seed=3, max_tokens=40)
    with LlamaCpp.default() as model:
        response = await tokenwire.generate(
            model, request, observers=[t], tools=[add], tool_options=tokenwire.ToolOptions(max_steps=2)
        )
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "step", "name": "turn", "detail": {"turn": 1}},
            "tool_call.start",
            ...,
            "tool_call",
            ...,
            "done",
        ],
    )
    call_event = next(e for e in t.events if isinstance(e, ToolCall))
    result = next(e for e in t.events if isinstance(e, ToolResult))
    assert result.result == call_event.args["a"] + call_event.args["b"] and not result.is_error
    assert response.finish_reason in ("stop", "length", "tool_calls")


GOOGLE = """Current weather.

    Args:
        city: City name,
            e.g. Paris.
        days (int): How many days.
    """
NUMPY = """Current weather.

    Parameters
    ----------
    city : str
        City name,
        e.g. Paris.
    days : int
        How many days.
    """
SPHINX = """Current weather.

    :param city: City name,
        e.g. Paris.
    :param days: How many days.
    :returns: the forecast.
    """


@pytest.mark.parametrize("doc", [GOOGLE, NUMPY, SPHINX], ids=["google", "numpy", "sphinx"])
def test_tool_descriptions_come_from_any_docstring_style(doc: str) -> None:
    def weather(city: str, days: int = 1) -> str:
        return city

    weather.__doc__ = doc
    spec = tokenwire.tool(weather).spec
    assert spec.description == "Current weather."
    props = spec.parameters["properties"]
    assert (props["city"]["description"], props["days"]["description"]) == ("City name, e.g. Paris.", "How many days.")
