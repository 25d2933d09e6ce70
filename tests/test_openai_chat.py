"""OpenAI Chat Completions and OpenAI-compatible adapters: wire fixtures through the real SDK,
and failures injected by a real loopback server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

import tokenwire
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.events import Error, ToolCall
from tokenwire.providers.http import RetryPolicy
from tokenwire.providers.openai_chat import ChatChunkMapper, OpenAIChat, OpenAICompatible
from tokenwire.testing import Transcript, assert_transcript
from wire import Faults, chunk, serve, sse, wait_for

FAST = RetryPolicy(max_retries=2, base_s=0.01, max_s=0.02)


def sdk_provider(body: bytes, seen: list[httpx.Request] | None = None, status: int = 200) -> OpenAIChat:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="http://api.test/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return OpenAIChat(client, model="gpt-test", retry=FAST)


async def transcript_of(provider: Any, request: Any = "hi") -> Transcript:
    t = Transcript()
    await tokenwire.generate(provider, request, observers=[t]).wait()
    return t


async def test_text_reasoning_usage_and_request_body() -> None:
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "thinking"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, finish="stop"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
    )
    seen: list[httpx.Request] = []
    request = Request(
        [Message("system", "be brief"), Message("user", "hi")], temperature=0.1, max_tokens=50, seed=3, stop=["\n"]
    )
    t = await transcript_of(sdk_provider(body, seen), request)
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "gpt-test"},
            {"type": "reasoning.delta", "text": "thinking"},
            {"type": "text.delta", "text": "Hel"},
            {"type": "text.delta", "text": "lo"},
            {"type": "usage", "input_tokens": 9, "output_tokens": 3},
            {"type": "done", "finish_reason": "stop", "usage": {"input_tokens": 9, "output_tokens": 3}},
        ],
    )
    sent = json.loads(seen[0].content)
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (sent["temperature"], sent["max_completion_tokens"], sent["seed"], sent["stop"]) == (0.1, 50, 3, ["\n"])


def tool_delta(
    index: int, call_id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    tc: dict[str, Any] = {"index": index, "function": fn}
    if call_id:
        tc.update(id=call_id, type="function")
    return {"tool_calls": [tc]}


async def test_parallel_tool_calls_after_text_are_kept_apart_and_emitted_early() -> None:
    body = sse(
        chunk({"content": "Let me check."}),
        chunk(tool_delta(0, "call_a", "get_weather", "")),
        chunk(tool_delta(0, args='{"city": "Pa')),
        chunk(tool_delta(0, args='ris"}')),
        chunk(tool_delta(1, "call_b", "get_weather", '{"city"')),
        chunk(tool_delta(1, args=': "Rome"}')),
        chunk({}, finish="tool_calls"),
    )
    request = Request(
        [Message("user", "weather?")], tools=[ToolSpec("get_weather", "w", {"type": "object"})], tool_choice="required"
    )
    seen: list[httpx.Request] = []
    t = await transcript_of(sdk_provider(body, seen), request)
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "text.delta", "text": "Let me check."},
            {"type": "tool_call.start", "call_id": "call_a", "name": "get_weather"},
            {"type": "tool_call.delta", "call_id": "call_a", "args_delta": '{"city": "Pa'},
            {"type": "tool_call.delta", "call_id": "call_a", "args_delta": 'ris"}'},
            {"type": "tool_call", "call_id": "call_a", "args": {"city": "Paris"}},  # before call_b starts
            {"type": "tool_call.start", "call_id": "call_b"},
            "tool_call.delta",
            "tool_call.delta",
            {"type": "tool_call", "call_id": "call_b", "args": {"city": "Rome"}},
            {"type": "done", "finish_reason": "tool_calls"},
        ],
    )
    sent = json.loads(seen[0].content)
    assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["name"] == "get_weather"


async def test_servers_reusing_index_zero_still_get_separate_calls() -> None:
    body = sse(
        chunk(tool_delta(0, "call_1", "a", "{}")),
        chunk(tool_delta(0, "call_2", "b", '{"x": 1}')),
        chunk({}, finish="tool_calls"),
    )
    t = await transcript_of(sdk_provider(body))
    calls = [e for e in t.events if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name, c.args) for c in calls] == [("call_1", "a", {}), ("call_2", "b", {"x": 1})]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            sse(
                chunk({"content": "par"}),
                {"error": {"message": "The server had an error", "type": "server_error"}},
                done=False,
            ),
            {"type": "error", "code": "server_error", "source": "provider", "retryable": True},
        ),
        (sse(chunk({"content": "par"}), "{not json", done=False), {"type": "error", "code": "malformed_chunk"}),
        (
            sse(chunk({"content": "par"}), done=False),
            {"type": "error", "code": "incomplete_stream", "source": "transport"},
        ),
    ],
)
async def test_in_stream_failures_are_never_dropped(body: bytes, expected: dict[str, Any]) -> None:
    t = await transcript_of(sdk_provider(body))
    assert_transcript(t.events, ["start", {"type": "text.delta", "text": "par"}, expected])


async def test_http_errors_have_the_provider_code_and_4xx_are_not_retried() -> None:
    seen: list[httpx.Request] = []
    body = json.dumps(
        {"error": {"message": "Invalid key", "type": "invalid_request_error", "code": "invalid_api_key"}}
    ).encode()
    t = await transcript_of(sdk_provider(body, seen, status=401))
    assert_transcript(
        t.events, ["start", {"type": "error", "code": "invalid_api_key", "source": "provider", "retryable": False}]
    )
    assert len(seen) == 1


def test_mapper_is_sans_io() -> None:
    m = ChatChunkMapper()
    assert m.feed("message", json.dumps(chunk({"content": "x"}))) == ["x"]
    assert m.feed("message", "[DONE]") == []
    assert [p.type for p in m.close()] == ["done"]  # type: ignore[union-attr]


# -- a real loopback server injecting faults ----------------------------------------------------------


@pytest.fixture
def faults() -> Any:
    f = Faults()
    with serve(f.app) as url:
        yield f, url


async def test_500_then_success_is_retried_before_output(faults: Any) -> None:
    f, url = faults
    f.plan = ["500", "ok"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    t = await transcript_of(provider)
    await provider.aclose()
    assert f.requests == 2
    assert_transcript(
        t.events,
        ["start", {"type": "text.delta", "text": "Hel"}, {"type": "text.delta", "text": "lo"}, "usage", "done"],
    )


async def test_429_honours_retry_after(faults: Any) -> None:
    f, url = faults
    f.plan = ["429", "ok"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    t0 = asyncio.get_running_loop().time()
    response = await tokenwire.generate(provider, "hi")
    await provider.aclose()
    assert asyncio.get_running_loop().time() - t0 >= 0.2
    assert response.text == "Hello" and f.requests == 2


async def test_retries_are_bounded(faults: Any) -> None:
    f, url = faults
    f.plan = ["500", "500", "500", "500"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    t = await transcript_of(provider)
    await provider.aclose()
    assert f.requests == 3
    assert_transcript(
        t.events, ["start", {"type": "error", "code": "http_500", "retryable": True, "source": "provider"}]
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("reset", {"type": "error", "source": "transport", "retryable": True}),
        ("malformed", {"type": "error", "code": "malformed_chunk", "source": "provider"}),
    ],
)
async def test_mid_stream_failures_keep_the_partial_text_and_are_not_retried(
    faults: Any, fault: str, expected: dict[str, Any]
) -> None:
    f, url = faults
    f.plan = [fault]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    t = Transcript()
    response = await tokenwire.generate(provider, "hi", observers=[t])
    await provider.aclose()
    assert_transcript(t.events, ["start", {"type": "text.delta", "text": "Hel"}, expected])
    assert response.text == "Hel" and f.requests == 1


async def test_stall_ends_the_stream_and_closes_the_connection(faults: Any) -> None:
    f, url = faults
    f.plan = ["stall"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    t = Transcript()
    await tokenwire.generate(provider, "hi", observers=[t], limits=tokenwire.Limits(stall_timeout_s=0.2)).wait()
    assert_transcript(t.events, ["start", "text.delta", {"type": "error", "code": "stalled", "source": "limit"}])
    await wait_for(f.disconnected.is_set)  # the server saw the connection close
    await provider.aclose()


async def test_cancel_closes_the_http_response(faults: Any) -> None:
    f, url = faults
    f.plan = ["stall"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    handle = tokenwire.generate(provider, "hi")
    await asyncio.sleep(0.2)
    handle.cancel("user")
    terminal = await handle.wait()
    assert terminal.type == "done" and terminal.finish_reason == "cancelled"
    await wait_for(f.disconnected.is_set)
    await provider.aclose()


async def test_connection_refused_is_a_transport_error() -> None:
    from wire import free_port

    provider = OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1", model="m", retry=FAST)
    terminal = await tokenwire.generate(provider, "hi").wait()
    await provider.aclose()
    assert isinstance(terminal, Error) and (terminal.source, terminal.code, terminal.retryable) == (
        "transport",
        "connect_error",
        True,
    )


async def test_agent_loop_over_recorded_openai_turns() -> None:
    turns = [
        sse(
            chunk(tool_delta(0, "call_1", "add", '{"a": 2, "b": 3}')),
            chunk({}, finish="tool_calls"),
            chunk(usage={"prompt_tokens": 5, "completion_tokens": 4}),
        ),
        sse(
            chunk({"content": "2 + 3 = 5"}),
            chunk({}, finish="stop"),
            chunk(usage={"prompt_tokens": 9, "completion_tokens": 6}),
        ),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=turns[len(seen) - 1])

    client = openai.AsyncOpenAI(
        api_key="sk",
        base_url="http://api.test/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )

    @tokenwire.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    t = Transcript()
    response = await tokenwire.generate(OpenAIChat(client, model="gpt-test"), "2+3?", tools=[add], observers=[t])
    assert_transcript(
        t.events,
        [
            "start",
            "step",
            "tool_call.start",
            "tool_call.delta",
            {"type": "tool_call", "args": {"a": 2, "b": 3}},
            "usage",
            {"type": "tool_result", "result": 5},
            "step",
            "step",
            {"type": "text.delta", "text": "2 + 3 = 5"},
            "usage",
            "step",
            {"type": "done", "finish_reason": "stop", "usage": {"input_tokens": 14, "output_tokens": 10}},
        ],
    )
    second = json.loads(seen[1].content)["messages"]
    assert second[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert second[2] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    assert response.text == "2 + 3 = 5"


async def test_the_stream_ends_at_done_even_if_the_server_keeps_the_body_open(faults: Any) -> None:
    f, url = faults
    f.plan = ["keep_open"]
    provider = OpenAICompatible(url + "/v1", model="m", retry=FAST)
    handle = tokenwire.generate(provider, "hi", limits=tokenwire.Limits(stall_timeout_s=2))
    terminal = await asyncio.wait_for(handle.wait(), 10)
    assert terminal.type == "done" and terminal.finish_reason == "stop"
    assert handle.result().text == "Hello"
    await wait_for(f.disconnected.is_set)  # we closed the connection instead of waiting on it


def tool_chunk(index: int, *, cid: str | None = None, name: str | None = None, args: str | None = None) -> Any:
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    tc: dict[str, Any] = {"index": index, "function": fn}
    if cid is not None:
        tc.update(id=cid, type="function")
    return chunk({"tool_calls": [tc]})


async def test_interleaved_parallel_tool_calls_complete_when_their_json_closes() -> None:
    body = sse(
        tool_chunk(0, cid="a", name="f", args=""),
        tool_chunk(1, cid="b", name="g", args=""),
        tool_chunk(0, args='{"x": '),
        tool_chunk(1, args='{"y": "}'),  # a brace inside a string does not close it
        tool_chunk(0, args="1}"),  # call a is complete here, while b is still streaming
        tool_chunk(1, args='"}'),
        chunk({}, finish="tool_calls"),
    )
    t = await transcript_of(sdk_provider(body))
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "tool_call.start", "call_id": "a"},
            {"type": "tool_call.start", "call_id": "b"},
            {"type": "tool_call.delta", "call_id": "a"},
            {"type": "tool_call.delta", "call_id": "b"},
            {"type": "tool_call.delta", "call_id": "a"},
            {"type": "tool_call", "call_id": "a", "args": {"x": 1}},
            {"type": "tool_call.delta", "call_id": "b"},
            {"type": "tool_call", "call_id": "b", "args": {"y": "}"}},
            {"type": "done", "finish_reason": "tool_calls"},
        ],
    )


async def test_no_argument_delta_after_a_call_completed() -> None:
    body = sse(
        tool_chunk(0, cid="a", name="f", args="{}"),
        tool_chunk(0, args="  "),  # trailing whitespace: ignored
        tool_chunk(0, args=', "z": 1}'),  # more JSON after the object closed: a clear error
    )
    t = await transcript_of(sdk_provider(body))
    types = [e.type for e in t.events]
    assert types == ["start", "tool_call.start", "tool_call.delta", "tool_call", "error"]
    assert t.events[-1].code == "malformed_tool_arguments"  # type: ignore[union-attr]
