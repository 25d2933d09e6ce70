"""tokenwire serving AG-UI: every event validated by AG-UI's own types (ag-ui-protocol), the
lifecycle rules a frontend relies on (run started first, every message and tool call closed, one
terminal), frontend tools and their results on the next run."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from ag_ui.core import RunAgentInput
from ag_ui.core.events import Event as AGUIEvent
from pydantic import TypeAdapter

from tokenwire.events import Error, ReasoningDelta, Step, ToolResult
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted
from tokenwire.server import create_app
from tokenwire.testing import golden
from tokenwire.wire.agui import AGUIEvents
from wire import serve

KEY = "agui-key-123456"
EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)


def check_lifecycle(events: list[Any]) -> None:
    """What an AG-UI client checks: RUN_STARTED first, one terminal last, every start ended."""
    kinds = [e.type.value for e in events]
    assert kinds[0] == "RUN_STARTED" and kinds[-1] in ("RUN_FINISHED", "RUN_ERROR")
    assert sum(k in ("RUN_FINISHED", "RUN_ERROR") for k in kinds) == 1
    open_messages: set[str] = set()
    open_calls: set[str] = set()
    for e in events:
        kind = e.type.value
        if kind in ("TEXT_MESSAGE_START", "REASONING_MESSAGE_START"):
            open_messages.add(e.message_id)
        elif kind in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
            assert e.message_id in open_messages and e.delta
        elif kind in ("TEXT_MESSAGE_END", "REASONING_MESSAGE_END"):
            open_messages.remove(e.message_id)
        elif kind == "TOOL_CALL_START":
            open_calls.add(e.tool_call_id)
        elif kind == "TOOL_CALL_ARGS":
            assert e.tool_call_id in open_calls
        elif kind == "TOOL_CALL_END":
            open_calls.remove(e.tool_call_id)
    assert not open_messages and not open_calls


def parse(body: bytes) -> list[Any]:
    return [EVENTS.validate_json(line[6:]) for line in body.splitlines() if line.startswith(b"data: ")]


def test_the_golden_agui_stream_is_valid_for_agui_types() -> None:
    events = parse(golden.stream("agui"))
    check_lifecycle(events)
    kinds = [e.type.value for e in events]
    assert kinds.count("TOOL_CALL_START") == 2 and kinds.count("TOOL_CALL_RESULT") == 2
    assert kinds[-1] == "RUN_ERROR" and events[-1].code == "overloaded"
    args: dict[str, str] = {}
    for e in events:
        if e.type.value == "TOOL_CALL_ARGS":
            args[e.tool_call_id] = args.get(e.tool_call_id, "") + e.delta
    assert args == {"call_a": '{"city": "Paris"}', "call_b": '{"city": "Rome"}'}


async def test_an_agui_run_over_sse_with_frontend_tools_and_their_results() -> None:
    from test_openai_compat import parallel_calls

    model = Scripted.turns(
        [ReasoningDelta("hm"), Step(name="plan", status="started"), *parallel_calls()],
        ["Paris is sunny."],
    )
    app = create_app(providers={"m": model}, api_keys=[KEY], log=MemoryLog())
    first = RunAgentInput(
        thread_id="t1",
        run_id="r1",
        messages=[{"id": "u1", "role": "user", "content": "weather?"}],
        tools=[{"name": "weather", "description": "w", "parameters": {"type": "object"}}],
        state={},
        context=[],
        forwarded_props={},
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/agui", content=first.model_dump_json(by_alias=True), headers=headers)
            events = parse(r.content)
            check_lifecycle(events)
            calls = [e for e in events if e.type.value == "TOOL_CALL_START"]
            assistant = {
                "id": "a1",
                "role": "assistant",
                "toolCalls": [
                    {"id": c.tool_call_id, "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                    for c in calls
                ],
            }
            results = [
                {"id": f"t{i}", "role": "tool", "toolCallId": c.tool_call_id, "content": "sunny"}
                for i, c in enumerate(calls)
            ]
            follow_up = RunAgentInput.model_validate(
                {
                    **first.model_dump(by_alias=True),
                    "runId": "r2",
                    "messages": [*first.model_dump(by_alias=True)["messages"], assistant, *results],
                }
            )
            r2 = await http.post(f"{url}/agui", content=follow_up.model_dump_json(by_alias=True), headers=headers)
            bad = await http.post(f"{url}/agui", json={"threadId": "t"}, headers=headers)
    assert r.headers["content-type"].startswith("text/event-stream")
    kinds = [e.type.value for e in events]
    assert kinds[:4] == ["RUN_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT"]
    assert "STEP_STARTED" in kinds and kinds[-1] == "RUN_FINISHED" and events[-1].run_id == "r1"
    assert [c.tool_call_id for c in calls] == ["call_a", "call_b"] and calls[0].parent_message_id is not None
    second = parse(r2.content)
    check_lifecycle(second)
    assert "".join(e.delta for e in second if e.type.value == "TEXT_MESSAGE_CONTENT") == "Paris is sunny."
    last = model.requests[-1]
    assert [m.role for m in last.messages] == ["user", "assistant", "tool", "tool"]
    assert bad.status_code == 400


@pytest.mark.parametrize(
    "tail",
    [[Error(code="boom", message="it broke", source="provider")], [ToolResult(call_id="x", name="t", result=[1])]],
)
def test_open_messages_and_calls_are_closed_before_the_end(tail: list[Any]) -> None:
    from tokenwire.events import Done, Start, TextDelta, ToolCallStart

    enc = AGUIEvents("t", "r")
    script = [Start(model="m"), TextDelta("a"), ToolCallStart(call_id="x", name="t"), *tail, Done()]
    events = parse(b"".join(f for e in script for f in enc.feed(e)))
    check_lifecycle(events)


@pytest.mark.e2e  # Node.js and the npm registry
def test_agui_s_own_client_runs_server_tools_and_answers_a_frontend_tool(node: str) -> None:
    """@ag-ui/client's HttpAgent (it verifies the event order and applies each event to its
    messages) runs a tokenwire agent: a server-side tool's result arrives as TOOL_CALL_RESULT, the
    frontend tool is left pending, the client answers it and its next run gets the answer."""
    import json
    import subprocess

    from conftest import JS, weather_agent

    agent, model = weather_agent("Sunny in Paris; you like teal.")
    app = create_app(providers={"m": agent}, api_keys=[KEY], log=MemoryLog())
    with serve(app) as url:
        done = subprocess.run([node, str(JS / "agui_client.mjs"), url, KEY], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    first, second = result["runs"]
    assert first["events"][0] == "RUN_STARTED" and first["events"][-1] == "RUN_FINISHED"
    assert first["events"].count("TOOL_CALL_START") == 2 and first["events"].count("TOOL_CALL_RESULT") == 1
    assert second["events"][-1] == "RUN_FINISHED" and "TOOL_CALL_START" not in second["events"]
    messages = result["messages"]
    tool_results = {m["toolCallId"]: m["content"] for m in messages if m["role"] == "tool"}
    assert tool_results == {"c1": "sunny in Paris", "c2": "teal"}
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == "Sunny in Paris; you like teal."
    assert [(m.role, m.content) for m in model.requests[1].messages if m.role == "tool"] == [
        ("tool", "sunny in Paris"),
        ("tool", "teal"),
    ]


async def test_a_resumable_agui_run_carries_on_after_a_drop_from_last_event_id() -> None:
    """The extension: ``X-Tokenwire-Resumable`` keeps the run going when its client drops; the
    same request with ``Last-Event-ID`` gets the frames after it, which with those before make
    the whole run, each AG-UI event once. Not resumable, or another key's: 404."""
    words = [f"w{i} " for i in range(40)]
    app = create_app(providers={"m": Scripted(words, interval_s=0.01)}, api_keys=[KEY, "other-key-123456"])
    run_input = RunAgentInput(
        thread_id="t9",
        run_id="r9",
        messages=[{"id": "u1", "role": "user", "content": "talk"}],
        tools=[],
        state={},
        context=[],
        forwarded_props={},
    ).model_dump_json(by_alias=True)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            before, last = [], None
            headers = {**auth, "X-Tokenwire-Resumable": "true"}
            async with http.stream("POST", f"{url}/agui", content=run_input, headers=headers) as r:
                async for line in r.aiter_lines():  # a drop after the fifth text delta
                    if line.startswith("id: "):
                        last = line[4:]
                    elif line.startswith("data: "):
                        before.append(EVENTS.validate_json(line[6:]))
                        if sum(e.type.value == "TEXT_MESSAGE_CONTENT" for e in before) == 5 and last is not None:
                            break
            assert last is not None
            r = await http.post(f"{url}/agui", content=run_input, headers={**auth, "Last-Event-ID": last})
            assert r.status_code == 200
            after = parse(r.content)
            events = before + after
            check_lifecycle(events)
            text = "".join(e.delta for e in events if e.type.value == "TEXT_MESSAGE_CONTENT")
            assert text == "".join(words) and len(before) < len(events)
            other = {"Authorization": "Bearer other-key-123456", "Last-Event-ID": last}
            assert (await http.post(f"{url}/agui", content=run_input, headers=other)).status_code == 404
            plain = run_input.replace('"r9"', '"r10"')
            async with http.stream("POST", f"{url}/agui", content=plain, headers=auth) as r:
                async for _ in r.aiter_lines():
                    break  # left at once: the run is cancelled, and not resumable
            again = await http.post(f"{url}/agui", content=plain, headers={**auth, "Last-Event-ID": "0"})
            assert again.status_code == 404
