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


@pytest.mark.e2e  # Node.js and the npm registry
@pytest.mark.parametrize("approved", [True, False])
def test_agui_s_own_client_answers_an_approval_interrupt_and_the_run_goes_on(node: str, approved: bool) -> None:
    """A server tool that needs an approval (``forwardedProps.serverTools``): the run suspends
    and the AG-UI run ends with RUN_FINISHED's ``interrupt`` outcome naming the call; @ag-ui/client
    keeps it as a pending interrupt, and its next run's resume entry (resolved with
    ``{approved: true}``, or cancelled) carries the same run on: the call runs (or is denied)
    once, and the answer follows."""
    import json
    import subprocess

    from conftest import JS, paying_app

    ran: list[str] = []
    app = paying_app(ran, [KEY])
    with serve(app) as url:
        answer = "approve" if approved else "deny"
        done = subprocess.run(
            [node, str(JS / "agui_interrupt.mjs"), url, KEY, answer], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = json.loads(done.stdout)["runs"]
    assert first["outcome"]["outcome"] == "interrupt" and second["outcome"]["outcome"] == "success"
    (interrupt,) = first["pending"]
    assert interrupt["toolCallId"] == "c1" and interrupt["reason"] == "tool_approval"
    assert interrupt["id"].split(".")[-1] == "c1" and interrupt["expiresAt"]
    assert first["events"][-1] == "RUN_FINISHED" and "TOOL_CALL_RESULT" not in first["events"]
    assert second["events"][0] == "RUN_STARTED" and second["events"][-1] == "RUN_FINISHED"
    assert second["pending"] == [] and second["events"].count("TOOL_CALL_RESULT") == 1
    messages = json.loads(done.stdout)["messages"]
    (result,) = [m for m in messages if m["role"] == "tool"]
    assert (result["content"] == "sent") is approved
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == "Sent it."
    assert ran == (["wired 5"] if approved else [])


def approval_transcript(sid: str = "s") -> tuple[list[Any], list[Any]]:
    """A run that calls a tool needing approval and suspends; then what its resumption appends."""
    from tokenwire.events import Done, Start, TextDelta, ToolCall

    env = {"stream_id": sid, "ts": 0.0}
    asked = [
        Start(model="m", seq=0, **env),
        Step(name="turn", status="started", detail={"turn": 1}, seq=1, **env),
        TextDelta("I will pay.", seq=2, **env),
        ToolCall(call_id="c1", name="wire_money", args={"amount": 5}, seq=3, **env),
        Step(
            name="approval",
            status="started",
            detail={"call_id": "c1", "tool": "wire_money", "expires": 1e9},
            seq=4,
            **env,
        ),
        Step(
            name="suspend",
            status="started",
            detail={"reason": "waiting for approval of c1", "until": 1e9},
            seq=5,
            **env,
        ),
    ]
    resumed = [
        Step(
            name="approval", status="finished", detail={"call_id": "c1", "approved": False, "by": "api"}, seq=6, **env
        ),
        ToolResult(call_id="c1", name="wire_money", result="denied (api)", is_error=True, seq=7, **env),
        Step(name="turn", status="finished", detail={"turn": 1}, seq=8, **env),
        Step(name="turn", status="started", detail={"turn": 2}, seq=9, **env),
        TextDelta("Not sent.", seq=10, **env),
        Step(name="turn", status="finished", detail={"turn": 2}, seq=11, **env),
        Done(seq=12, **env),
    ]
    return asked, resumed


def test_a_suspension_ends_the_agui_run_with_an_interrupt_and_a_resume_entry_run_carries_it_on() -> None:
    """Sans-I/O: the suspension closes the open steps (the turn's, the approval's) and ends the run with
    RUN_FINISHED ``interrupt`` (one interrupt per approval asked, its id the server's), valid for
    AG-UI's Python types; the run that answers starts with its own RUN_STARTED, drops the
    STEP_FINISHED of steps it never started, and ends once."""
    from tokenwire.wire.agui import AGUIBody, approval_answers

    asked, resumed = approval_transcript()
    enc = AGUIEvents("t", "r0", approval_id=lambda cid: f"id-{cid}")
    first = parse(b"".join(f for e in [*asked, *resumed] for f in enc.feed(e)))
    check_lifecycle(first)
    kinds = [e.type.value for e in first]
    assert kinds[-5:] == ["TOOL_CALL_END", "STEP_STARTED", "STEP_FINISHED", "STEP_FINISHED", "RUN_FINISHED"]
    assert [e.step_name for e in first if e.type.value == "STEP_FINISHED"] == ["approval", "turn"]
    (interrupt,) = first[-1].outcome.interrupts
    assert (interrupt.id, interrupt.reason, interrupt.tool_call_id) == ("id-c1", "tool_approval", "c1")
    assert interrupt.expires_at.startswith("2001-09-09T01:46:40")  # 1e9 as ISO 8601
    enc = AGUIEvents("t", "r1")
    second = parse(enc.continued() + b"".join(f for e in resumed for f in enc.feed(e)))
    check_lifecycle(second)
    assert [e.type.value for e in second] == [
        "RUN_STARTED", "TOOL_CALL_RESULT", "STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
        "STEP_FINISHED", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]  # fmt: skip
    base = {"threadId": "t", "runId": "r1", "messages": []}
    body = AGUIBody(thread_id="t", run_id="r1", messages=[])
    assert approval_answers(body) == {}
    import msgspec

    body = msgspec.json.decode(
        msgspec.json.encode(
            {
                **base,
                "resume": [
                    {"interruptId": "a", "status": "resolved", "payload": {"approved": True}},
                    {"interruptId": "b", "status": "resolved", "payload": {"approved": False}},
                    {"interruptId": "c", "status": "resolved"},
                    {"interruptId": "d", "status": "cancelled", "payload": {"approved": True}},
                    {"interruptId": "e", "status": "resolved", "payload": False},
                ],
            }
        ),
        type=AGUIBody,
    )
    assert approval_answers(body) == {"a": True, "b": False, "c": True, "d": False, "e": False}


def test_a_turn_asked_again_is_taken_back_from_a_live_agui_client_with_a_messages_snapshot() -> None:
    """Live (nothing left out): a turn asked again after its node stopped ends its first
    attempt's message and sends MESSAGES_SNAPSHOT of the thread without it (the client's input,
    the earlier turns' messages, valid for AG-UI's types); the new attempt follows."""
    from tokenwire.events import Done, Start, TextDelta, ToolCall

    env = {"stream_id": "s", "ts": 0.0}
    given = [{"id": "u1", "role": "user", "content": "Weather?"}]
    script = [
        Start(model="m", seq=0, **env),
        Step(name="turn", status="started", detail={"turn": 1}, seq=1, **env),
        TextDelta("Let me look.", seq=2, **env),
        ToolCall(call_id="c1", name="weather", args={"city": "Paris"}, seq=3, **env),
        ToolResult(call_id="c1", name="weather", result="sunny", seq=4, **env),
        Step(name="turn", status="finished", detail={"turn": 1}, seq=5, **env),
        Step(name="turn", status="started", detail={"turn": 2}, seq=6, **env),
        TextDelta("It is sun", seq=7, **env),
        Step(name="turn", status="started", detail={"turn": 2, "restarted": True}, seq=8, **env),
        TextDelta("Sunny in Paris.", seq=9, **env),
        Done(seq=10, **env),
    ]
    enc = AGUIEvents("t", "r", messages=given)
    events = parse(b"".join(f for e in script for f in enc.feed(e)))
    check_lifecycle(events)
    (snapshot,) = [e for e in events if e.type.value == "MESSAGES_SNAPSHOT"]
    shown = [m.model_dump(by_alias=True, exclude_none=True) for m in snapshot.messages]
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
    assert shown == [
        {"id": "u1", "role": "user", "content": "Weather?"},
        {"id": "r-m0", "role": "assistant", "content": "Let me look.", "toolCalls": [call]},
        {"id": "r-m1", "role": "tool", "content": "sunny", "toolCallId": "c1"},
    ]
    kinds = [e.type.value for e in events]
    after = kinds[kinds.index("MESSAGES_SNAPSHOT") :]
    assert after[:4] == ["MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"]


@pytest.mark.e2e  # Node.js and the npm registry
def test_agui_s_own_client_ends_with_the_final_text_once_when_a_turn_is_asked_again(node: str) -> None:
    """@ag-ui/client's HttpAgent reading a run whose producer is handed over mid-answer to a
    provider that cannot continue a prefix: the turn is asked again, the MESSAGES_SNAPSHOT takes
    the first attempt back, and the agent's messages hold the answer once."""
    import json
    import subprocess
    import time

    from conftest import JS
    from tokenwire.providers import Delay

    words = [f"w{i} " for i in range(6)]
    model = Scripted([*words[:3], Delay(2.0), *words[3:]])  # every call plays the whole answer
    app = create_app(providers={"m": model}, api_keys=[KEY])
    service = app.state.tokenwire
    service.durable.poll_s = 0.02
    with serve(app) as url:
        proc = subprocess.Popen(
            [node, str(JS / "agui_run.mjs"), url, KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while True:  # mid-answer: three words out, the model waiting
            assert time.monotonic() < deadline, "the run did not start"
            running = service.runs.running
            if running and running[0].handle.result().text == "".join(words[:3]):
                break
            time.sleep(0.01)
        running[0].handle.suspend("handed over (test)", until=0.0)  # thread-safe: its own loop runs it
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out)
    assert "MESSAGES_SNAPSHOT" in result["events"] and result["events"][-1] == "RUN_FINISHED"
    answers = [m["content"] for m in result["messages"] if m["role"] == "assistant"]
    assert answers == ["".join(words)]
