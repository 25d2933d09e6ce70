"""tokenwire serving the Vercel AI SDK's UI message stream, read by the SDK's own client.

The npm ``ai`` package (current major, and 5.x whose chunk schema is strict) runs in Node with
its ``DefaultChatTransport`` and ``readUIMessageStream`` against the real app; ``tests/js`` pins
both in a package-lock that ``npm ci`` installs on first use.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from starlette.responses import Response

from conftest import JS, paying_app, weather_agent
from tokenwire.events import Done, ReasoningDelta, ToolResult
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import create_app
from tokenwire.wire.ai_sdk import UIMessageStream
from wire import serve

pytestmark = pytest.mark.e2e  # Node.js and the npm registry
KEY = "ui-chat-key-123456"


def live_run(app: Any) -> Any:
    """The server's one live run."""
    (run,) = app.state.tokenwire.runs.running
    return run


def read_with_the_sdk(node: str, pkg: str, url: str, chat_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(JS / "ui_chat.mjs"), pkg, url, KEY, chat_id], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("pkg", ["ai", "ai5"])
def test_use_chat_transport_reads_text_reasoning_and_server_side_tools(node: str, pkg: str) -> None:
    from test_openai_compat import parallel_calls

    script = [
        ReasoningDelta("hm"),
        *parallel_calls(),
        ToolResult(call_id="call_a", name="weather", result={"temp_c": 17}),
        ToolResult(call_id="call_b", name="weather", result="rainy", is_error=True),
        "Done.",
    ]
    app = create_app(providers={"m": Scripted(script)}, api_keys=[KEY], log=MemoryLog())
    with serve(app) as url:
        result = read_with_the_sdk(node, pkg, url, "chat-1")
    assert result["errors"] == [] and result["resumed"] is False  # finished: nothing to resume
    parts = result["message"]["parts"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["step-start", "reasoning", "text", "tool-weather", "tool-weather", "text"]
    assert parts[1]["text"] == "hm" and parts[2]["text"] == "Checking." and parts[-1]["text"] == "Done."
    a, b = parts[3], parts[4]
    assert (a["toolCallId"], a["state"], a["input"], a["output"]) == (
        "call_a",
        "output-available",
        {"city": "Paris"},
        {"temp_c": 17},
    )
    assert (b["toolCallId"], b["state"], b["errorText"]) == ("call_b", "output-error", "rainy")


def read_with_the_sdk_resuming(node: str, url: str, chat_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(JS / "ui_chat.mjs"), "ai", url, KEY, chat_id, "resume"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_live_chat_stream_is_resumed_by_the_sdk_after_the_client_left(node: str) -> None:
    import httpx

    app = create_app(providers={"m": Scripted(["partial answer", Stall()])}, api_keys=[KEY], log=MemoryLog())
    body = {"id": "chat-2", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    with serve(app) as url:
        with httpx.stream("POST", f"{url}/api/chat", json=body, headers=headers) as r:
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            for line in r.iter_lines():
                if "text-delta" in line:
                    break  # the client leaves mid-answer (a page reload): the run goes on
        resumed = read_with_the_sdk_resuming(node, url, "chat-2")
        unknown = read_with_the_sdk_resuming(node, url, "no-such-chat")
        run = live_run(app)
        assert run is not None and not run.finished  # leaving did not cancel it
        stop = f"{url}/api/chat/chat-2/stream"
        assert httpx.delete(stop).status_code == 401 and not run.finished  # a key is needed to stop it
        assert httpx.delete(stop, headers=headers).status_code == 204
        deadline = time.monotonic() + 10
        while not run.finished and time.monotonic() < deadline:
            time.sleep(0.01)
        assert read_with_the_sdk_resuming(node, url, "chat-2") == {"resumed": False}  # stopped: nothing to resume
    assert resumed == {"resumed": True, "text": "partial answer", "errors": []}
    assert unknown == {"resumed": False}


def test_the_encoder_closes_open_parts_and_ends_with_done_or_error() -> None:
    from tokenwire.events import Done, Error, Start, TextDelta, ToolCall

    enc = UIMessageStream("m")
    frames = [
        f
        for e in [
            Start(model="x"),
            TextDelta("a"),
            ToolCall(call_id="c", name="t", args={}),
            Done(finish_reason="tool_calls"),
        ]
        for f in enc.feed(e)
    ]
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert [c["type"] for c in chunks] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    assert chunks[-1]["finishReason"] == "tool-calls" and frames[-1] == b"data: [DONE]\n\n"
    enc = UIMessageStream("m")
    frames = [f for e in [Start(model="x"), TextDelta("a"), Error(code="x", message="broke")] for f in enc.feed(e)]
    assert [json.loads(f[6:])["type"] for f in frames[:-1]][-2:] == ["text-end", "error"]


@pytest.mark.parametrize("pkg", ["ai", "ai5"])
def test_the_sdk_reads_the_golden_ui_message_stream(node: str, pkg: str) -> None:
    """tokenwire.testing.golden's AI SDK stream, served as is, through the SDK's own transport."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tokenwire.testing import golden
    from tokenwire.wire.ai_sdk import HEADERS

    async def chat(request: Any) -> Response:
        return Response(golden.stream("ai_sdk"), media_type="text/event-stream", headers=HEADERS)

    async def resume(request: Any) -> Response:
        return Response(status_code=204)

    app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"]), Route("/api/chat/{id}/stream", resume)])
    with serve(app) as url:
        result = read_with_the_sdk(node, pkg, url, "golden")
    parts = result["message"]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "reasoning", "text", "tool-weather", "tool-weather", "text"]
    assert [p["state"] for p in parts if p["type"] == "tool-weather"] == ["output-available", "output-available"]
    assert any("overloaded" in e for e in result["errors"])  # the transcript ends with an error


# -- useChat in a page, in headless Chromium ------------------------------------------------------------


@pytest.fixture(scope="module")
def use_chat_js(node: str) -> bytes:
    """tests/js/use_chat_page.jsx bundled with React and @ai-sdk/react by esbuild (pinned in the lock)."""
    out = JS / "dist" / "use_chat.js"
    esbuild = [str(JS / "node_modules" / ".bin" / "esbuild"), "use_chat_page.jsx", "--bundle", "--minify"]
    flags = ["--jsx=automatic", '--define:process.env.NODE_ENV="production"', f"--outfile={out}"]
    subprocess.run([*esbuild, *flags], cwd=JS, check=True, capture_output=True, timeout=120)
    return out.read_bytes()


def with_use_chat_page(app: Any, js: bytes) -> Any:
    """The app with the useChat page at /use-chat (same origin as /api/chat)."""
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    html = '<!doctype html><meta charset="utf-8"><div id="root"></div><script src="/use-chat.js"></script>'

    async def page(request: Any) -> Response:
        return HTMLResponse(html)

    async def script(request: Any) -> Response:
        return Response(js, media_type="text/javascript")

    app.router.routes[:0] = [Route("/use-chat", page), Route("/use-chat.js", script)]
    return app


def open_chat(page: Any, url: str, chat: str, *, resume: bool = False) -> None:
    page.goto(f"{url}/use-chat?key={KEY}&chat={chat}" + ("&resume" if resume else ""))
    page.wait_for_selector("#status")


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.click("#send")


def test_use_chat_in_chromium_runs_server_tools_and_answers_its_own(page: Any, use_chat_js: bytes) -> None:
    """useChat renders reasoning, a server-side tool's result and the page's own tool, which it answers
    (onToolCall → addToolOutput) and sends back: the model's next turn sees both results."""
    agent, model = weather_agent("It is sunny in Paris, and you like teal.")
    app = create_app(providers={"m": agent}, api_keys=[KEY], log=MemoryLog())
    with serve(with_use_chat_page(app, use_chat_js)) as url:
        open_chat(page, url, "chat-tools")
        send(page, "Weather, and my color?")
        page.wait_for_function(
            "document.querySelector('#messages').innerText.includes('you like teal')"
            " && document.querySelector('#status').innerText === 'ready'"
        )
        tools = page.eval_on_selector_all(
            ".tool", "els => els.map(e => [e.dataset.name, e.dataset.state, e.querySelector('.output').innerText])"
        )
        reasoning = page.text_content(".reasoning")
        assert page.query_selector("#error") is None
    assert tools == [
        ["weather", "output-available", '"sunny in Paris"'],
        ["pick_color", "output-available", '"teal"'],
    ]
    assert "hm" in reasoning
    assert model.started == 2  # one run per request: the tool turn, then the answer
    second = model.requests[1].messages
    assert [(m.role, m.content) for m in second if m.role == "tool"] == [
        ("tool", "sunny in Paris"),
        ("tool", "teal"),
    ]


def test_use_chat_in_chromium_resumes_after_a_reload_and_stops_the_run(page: Any, use_chat_js: bytes) -> None:
    """A reload mid-answer: useChat's resume reconnects to the live run; Stop ends it on the server."""
    app = create_app(providers={"m": Scripted(["partial answer", Stall()])}, api_keys=[KEY], log=MemoryLog())
    with serve(with_use_chat_page(app, use_chat_js)) as url:
        open_chat(page, url, "chat-reload")
        send(page, "Tell me")
        page.wait_for_selector("text=partial answer")
        open_chat(page, url, "chat-reload", resume=True)  # a new page: it only knows the chat id
        page.wait_for_selector("text=partial answer")
        run = live_run(app)
        assert run is not None and not run.finished  # neither the reload nor the resume ended it
        page.click("#stop")
        page.wait_for_function("document.querySelector('#status').innerText === 'ready'")
        deadline = time.monotonic() + 10
        while not run.finished and time.monotonic() < deadline:
            time.sleep(0.02)
        terminal = run.handle.terminal
    assert isinstance(terminal, Done) and terminal.finish_reason == "cancelled"


def framework_agent(framework: str) -> tuple[Any, str]:
    """An agent of ``framework`` that calls multiply(6, 7), then says "6 times 7 is 42.", and how
    useChat shows the tool's result."""
    if framework == "langgraph":
        from langchain_core.messages import AIMessage

        from lc_app import build, call, multiply
        from tokenwire.adapters.langchain import LangChain

        return LangChain(build(iter([call(), AIMessage("6 times 7 is 42.")]), [multiply])), '"42"'
    if framework == "pydantic_ai":
        from test_adapters_pydantic_ai import agent
        from test_adapters_pydantic_ai import multiply as times
        from tokenwire.adapters.pydantic_ai import PydanticAI

        return PydanticAI(agent(times)), "42"
    from agents import set_tracing_disabled

    from test_adapters_openai_agents import calc
    from tokenwire.adapters.openai_agents import OpenAIAgents

    set_tracing_disabled(True)
    return OpenAIAgents(calc()), "42"


@pytest.mark.parametrize("framework", ["langgraph", "pydantic_ai", "openai_agents"])
def test_use_chat_in_chromium_shows_a_framework_agents_tool_and_answer(
    page: Any, use_chat_js: bytes, framework: str
) -> None:
    """Another framework's agent (tokenwire.adapters) behind /api/chat: useChat renders its tool
    call with its result, then the answer, and sends nothing more: the answer is a step of its own
    (the framework's model calls are turns, each turn after the first a finish-step / start-step),
    so lastAssistantMessageIsCompleteWithToolCalls does not take the answered call for a new one."""
    provider, shown = framework_agent(framework)
    app = create_app(providers={"m": provider}, api_keys=[KEY], log=MemoryLog())
    with serve(with_use_chat_page(app, use_chat_js)) as url:
        open_chat(page, url, f"chat-{framework}")
        send(page, "What is 6 times 7?")
        page.wait_for_function(
            "document.querySelector('#messages').innerText.includes('is 42.')"
            " && document.querySelector('#status').innerText === 'ready'"
        )
        tools = page.eval_on_selector_all(
            ".tool", "els => els.map(e => [e.dataset.name, e.dataset.state, e.querySelector('.output').innerText])"
        )
        assert page.query_selector("#error") is None
    assert tools == [["multiply", "output-available", shown]]


def test_each_model_turn_after_the_first_is_a_step_of_its_own_a_restarted_one_is_not() -> None:
    from tokenwire.events import Start, Step, TextDelta

    env = {"stream_id": "s", "ts": 0.0}
    enc = UIMessageStream("m1")
    frames = [
        *enc.feed(Start(model="m", seq=0, **env)),
        *enc.feed(Step(name="turn", status="started", detail={"turn": 1}, seq=1, **env)),
        *enc.feed(TextDelta(text="a", seq=2, **env)),
        *enc.feed(Step(name="turn", status="finished", detail={"turn": 1}, seq=3, **env)),
        *enc.feed(Step(name="turn", status="started", detail={"turn": 2}, seq=4, **env)),
        *enc.feed(Step(name="turn", status="started", detail={"turn": 2, "restarted": True}, seq=5, **env)),
        *enc.feed(TextDelta(text="b", seq=6, **env)),
        *enc.feed(Done(finish_reason="stop", seq=7, **env)),
    ]
    kinds = [json.loads(f[6:])["type"] for f in frames if f.startswith(b"data: {")]
    assert kinds == [
        "start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "start-step",
        "text-start", "text-delta", "text-end", "finish-step", "finish",
    ]  # fmt: skip


@pytest.mark.parametrize("pkg", ["ai", "ai5"])
def test_a_sub_agent_s_text_streams_as_its_call_s_preliminary_output(node: str, pkg: str) -> None:
    """A lead calls a research sub-agent: while the child run writes, the SDK shows its text so
    far as the call's (preliminary) output; the call's result then replaces it, and the answer follows."""
    import tokenwire
    from test_trees import Delegates, calls
    from tokenwire.tools.agent import Agent

    words = [f"w{i} " for i in range(40)]
    research = tokenwire.sub_agent(Scripted(words, interval_s=0.005), name="research", description="R.")
    lead = Agent(Delegates(calls(("r1", "research", {"task": "t"})), ["Merged."]), [research])  # its tools are its own
    app = create_app(providers={"m": lead}, api_keys=[KEY], log=MemoryLog())
    with serve(app) as url:
        done = subprocess.run(
            [node, str(JS / "ui_chat.mjs"), pkg, url, KEY, "chat-tree"], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["errors"] == []
    outputs = [o for o in result["outputs"] if o["id"] == "r1"]
    preliminary = [o["output"] for o in outputs if o["preliminary"]]
    assert len(preliminary) >= 3 and all("".join(words).startswith(p) for p in preliminary)
    assert preliminary == sorted(preliminary, key=len)  # it grows
    assert outputs[-1] == {"id": "r1", "output": "".join(words), "preliminary": False}
    assert result["message"]["parts"][-1] == {"type": "text", "text": "Merged.", "state": "done"}


def test_use_chat_in_chromium_shows_data_parts_the_state_and_a_sub_agent_s_preliminary_output(
    page: Any, use_chat_js: bytes
) -> None:
    """useChat in a page: data parts (reconciled by id) and the shared state as a data part in the
    message, a transient one handed to onData only; a sub-agent's text as its call's growing
    preliminary output, then the call's result."""
    import tokenwire
    from test_app_data import FINAL, script
    from test_trees import Delegates, calls
    from tokenwire.tools.agent import Agent

    words = [f"w{i} " for i in range(40)]
    research = tokenwire.sub_agent(Scripted(words, interval_s=0.005), name="research", description="R.")
    lead = Agent(Delegates(calls(("r1", "research", {"task": "t"})), script()), [research])
    app = create_app(providers={"m": lead}, api_keys=[KEY], log=MemoryLog())
    with serve(with_use_chat_page(app, use_chat_js)) as url:
        open_chat(page, url, "chat-data")
        send(page, "Find it")
        page.wait_for_function(
            "document.querySelector('#messages').innerText.includes('Answer.')"
            " && document.querySelector('#status').innerText === 'ready'"
        )
        data = page.eval_on_selector_all(".data", "els => els.map(e => [e.dataset.name, JSON.parse(e.innerText)])")
        transient = page.evaluate("window.transient.map(p => [p.type, p.data])")
        outputs = page.evaluate("window.outputs")
        assert page.query_selector("#error") is None
    assert sorted(data) == [["sources", ["a.md", "b.md"]], ["state", FINAL]]
    assert ["data-progress", {"pct": 50}] in transient
    preliminary = [o for _, p, o in outputs if p]
    assert preliminary and all("".join(words).startswith(o) for o in preliminary)
    assert outputs[-1] == ["r1", False, "".join(words)]


def shapes(url: str, app: Any, stream_id: str) -> list[str]:
    """The ended run's events, read by the native client: each event's type (a step's name and status)."""
    from tokenwire.client import SyncClient

    with SyncClient(url, api_key=KEY) as client:
        events = list(client.subscribe(stream_id, app.state.tokenwire.issue(stream_id).read_token))
    return [e.type if e.type != "step" else f"{e.name}:{e.status}" for e in events]  # type: ignore[union-attr]


@pytest.mark.parametrize("approved", [True, False])
def test_use_chat_in_chromium_answers_a_server_tools_approval_and_the_suspended_run_goes_on(
    page: Any, use_chat_js: bytes, approved: bool
) -> None:
    """A server tool that needs an approval: the run suspends and its UI stream ends with the
    call's ``tool-approval-request``; useChat shows Approve / Deny (``approval-requested``);
    ``addToolApprovalResponse`` and ``lastAssistantMessageIsCompleteWithApprovalResponses`` send
    the answer, which resumes the run: the call runs (or is denied) once, and the answer
    continues the same message."""
    ran: list[str] = []
    app = paying_app(ran, [KEY])
    with serve(with_use_chat_page(app, use_chat_js)) as url:
        page.goto(f"{url}/use-chat?key={KEY}&chat=chat-pay&serverTools=wire_money")
        page.wait_for_selector("#status")
        send(page, "Pay 5")
        page.wait_for_selector(".tool[data-state='approval-requested'] .approve")
        page.wait_for_function("document.querySelector('#status').innerText === 'ready'")
        sid = page.get_attribute(".message[data-role='assistant']", "data-id").removeprefix("msg-")
        assert app.state.tokenwire.runs.running == []  # suspended: no task here
        assert ran == []
        page.click(".approve" if approved else ".deny")
        page.wait_for_function(
            "document.querySelector('#messages').innerText.includes('Sent it.')"
            " && document.querySelector('#status').innerText === 'ready'"
        )
        tools = page.eval_on_selector_all(".tool", "els => els.map(e => [e.dataset.name, e.dataset.state])")
        texts = page.eval_on_selector_all(".message[data-role='assistant'] .text", "els => els.map(e => e.textContent)")
        assert page.query_selector("#error") is None
        events = shapes(url, app, sid)
    assert tools == [["wire_money", "output-available" if approved else "output-denied"]]
    assert texts == ["I will pay. ", "Sent it."]  # one message, each text once
    assert ran == (["wired 5"] if approved else [])
    assert events[events.index("approval:started") :] == [
        "approval:started",
        "suspend:started",
        "approval:finished",
        "tool_result",
        "turn:finished",
        "turn:started",
        "text.delta",
        "turn:finished",
        "done",
    ]


def test_the_encoder_asks_for_approvals_ends_at_a_suspension_and_a_continuation_goes_on() -> None:
    """Sans-I/O: a call's approval is a ``tool-approval-request`` (its id the server's); the
    suspension ends the message's stream (``finish`` with ``tool-calls``, then ``[DONE]``). The
    stream of the request that answered opens with ``start`` (the same message) and shows the
    denied call as ``tool-output-denied``, never as an error."""
    from test_agui import approval_transcript
    from tokenwire.wire.ai_sdk import ChatUIBody, approval_answers

    asked, resumed = approval_transcript()
    enc = UIMessageStream("m1", approval_id=lambda cid: f"id-{cid}")
    frames = [f for e in [*asked, *resumed] for f in enc.feed(e)]
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert chunks[-4:] == [
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "wire_money", "input": {"amount": 5}},
        {"type": "tool-approval-request", "approvalId": "id-c1", "toolCallId": "c1"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "tool-calls"},
    ]
    enc = UIMessageStream("m1", approval_id=lambda cid: f"id-{cid}")
    frames = [enc.continued("s"), *(f for e in resumed for f in enc.feed(e))]
    chunks = [json.loads(line[6:]) for f in frames for line in f.split(b"\n\n") if line.startswith(b"data: {")]
    assert [c["type"] for c in chunks] == [
        "start", "start-step", "tool-output-denied", "finish-step", "start-step", "text-start", "text-delta",
        "text-end", "finish-step", "finish",
    ]  # fmt: skip
    assert chunks[0]["messageId"] == "m1" and chunks[2]["toolCallId"] == "c1"
    message = {
        "id": "m1",
        "role": "assistant",
        "parts": [
            {"type": "tool-wire_money", "state": "approval-responded", "approval": {"id": "a1", "approved": True}},
            {"type": "tool-pay", "state": "approval-responded", "approval": {"id": "a2", "approved": False}},
            {"type": "tool-pay", "state": "output-available", "approval": {"id": "a3", "approved": True}},
        ],
    }
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    assert approval_answers(ChatUIBody(id="c", messages=[user, message])) == {"a1": True, "a2": False}
    assert approval_answers(ChatUIBody(id="c", messages=[message, user])) == {}  # not an answer: a new turn


def test_the_sdk_drops_the_void_attempt_of_a_turn_asked_again_from_a_live_message(node: str) -> None:
    """AI SDK 7's own readUIMessageStream applies the live stream of a turn asked again: the
    ``reset-step`` takes the first attempt's text out of the message; the final text is there once."""
    from test_restarts import asked_again

    script = asked_again()
    enc = UIMessageStream("m1")
    frames = [f for e in script for f in enc.feed(e)]
    chunks = [json.loads(f[6:]) for f in frames if f.startswith(b"data: {")]
    done = subprocess.run(
        [node, str(JS / "ui_chunks.mjs"), "ai"], input=json.dumps(chunks), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["errors"] == []
    texts = [p["text"] for p in result["message"]["parts"] if p["type"] == "text"]
    assert texts == ["An answer."]
