"""tokenwire serving the Vercel AI SDK's UI message stream, read by the SDK's own client.

The npm ``ai`` package (current major, and 5.x whose chunk schema is strict) runs in Node with
its ``DefaultChatTransport`` and ``readUIMessageStream`` against the real app; ``tests/js`` pins
both in a package-lock that ``npm ci`` installs on first use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tokenwire.events import ReasoningDelta, ToolResult
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import create_app
from tokenwire.wire.ai_sdk import UIMessageStream
from wire import serve

pytestmark = pytest.mark.e2e  # Node.js and the npm registry
JS = Path(__file__).with_name("js")
KEY = "ui-chat-key-123456"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed (the README's set-up installs them)")
    if not (JS / "node_modules" / "ai").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True, timeout=300)
    return binary


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
        run = app.state.tokenwire.runs.get(app.state.tokenwire.chats["chat-2"])
        assert run is not None and not run.finished  # leaving did not cancel it
        run.handle.cancel("test over")
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
