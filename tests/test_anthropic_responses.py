"""Anthropic Messages and OpenAI Responses adapters: wire fixtures through the real SDK clients."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import tokenwire
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.events import Error
from tokenwire.providers import Anthropic, OpenAIResponses
from tokenwire.providers.http import RetryPolicy
from tokenwire.testing import Transcript, assert_transcript
from tokenwire.tools.agent import Agent
from wire import sse

FAST = RetryPolicy(max_retries=2, base_s=0.01, max_s=0.02)
WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def anthropic_provider(*bodies: bytes, seen: list[Any] | None = None, status: int = 200) -> Anthropic:
    queue = list(bodies)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(request)
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx2.Response(status, headers={"content-type": "text/event-stream"}, content=body)

    client = anthropic.AsyncAnthropic(
        api_key="k", base_url="http://api.test", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    )
    return Anthropic(client, model="claude-test", retry=FAST)


def a_events(*events: dict[str, Any]) -> bytes:
    return sse(*events, done=False, event_names=True)


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "stop_reason": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
    },
}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_end(reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


async def transcript_of(provider: Any, request: Any = "hi") -> Transcript:
    t = Transcript()
    await tokenwire.generate(provider, request, observers=[t]).wait()
    return t


async def test_anthropic_thinking_text_parallel_tools_and_usage() -> None:
    body = a_events(
        MESSAGE_START,
        {"type": "ping"},
        block_start(0, {"type": "thinking", "thinking": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Two cities."}),
        block_delta(0, {"type": "signature_delta", "signature": "sig"}),
        stop(0),
        block_start(1, {"type": "text", "text": ""}),
        block_delta(1, {"type": "text_delta", "text": "Checking."}),
        stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
        block_delta(2, {"type": "input_json_delta", "partial_json": 'ris"}'}),
        stop(2),
        block_start(3, {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {}}),
        block_delta(3, {"type": "input_json_delta", "partial_json": '{"city": "Rome"}'}),
        stop(3),
        *message_end("tool_use", 40),
    )
    seen: list[Any] = []
    request = Request(
        [Message("system", "be brief"), Message("user", "weather?")],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
    )
    t = await transcript_of(anthropic_provider(body, seen=seen), request)
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "claude-test"},
            {"type": "reasoning.delta", "text": "Two cities."},
            {"type": "text.delta", "text": "Checking."},
            {"type": "tool_call.start", "call_id": "toolu_a", "name": "get_weather"},
            {"type": "tool_call.delta", "args_delta": '{"city": "Pa'},
            {"type": "tool_call.delta", "args_delta": 'ris"}'},
            {"type": "tool_call", "call_id": "toolu_a", "args": {"city": "Paris"}},
            {"type": "tool_call.start", "call_id": "toolu_b"},
            "tool_call.delta",
            {"type": "tool_call", "call_id": "toolu_b", "args": {"city": "Rome"}},
            {"type": "usage", "input_tokens": 30, "output_tokens": 40},
            {"type": "done", "finish_reason": "tool_calls", "usage": {"input_tokens": 30, "output_tokens": 40}},
        ],
    )
    sent = json.loads(seen[0].content)
    assert sent["system"] == "be brief" and sent["max_tokens"] == 200 and sent["stream"] is True
    assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["input_schema"]["type"] == "object"


async def test_anthropic_overloaded_before_output_is_retried_and_after_output_is_an_error() -> None:
    overloaded = a_events({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    ok = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hi"}),
        stop(0),
        *message_end("end_turn", 2),
    )
    seen: list[Any] = []
    t = await transcript_of(anthropic_provider(overloaded, ok, seen=seen))
    assert len(seen) == 2
    assert_transcript(
        t.events, ["start", {"type": "text.delta", "text": "Hi"}, "usage", {"type": "done", "finish_reason": "stop"}]
    )

    late = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hi"}),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    t = await transcript_of(anthropic_provider(late))
    assert_transcript(
        t.events,
        ["start", "text.delta", {"type": "error", "code": "overloaded_error", "retryable": True, "source": "provider"}],
    )


async def test_anthropic_http_error_and_truncated_stream() -> None:
    body = json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}}
    ).encode()
    t = await transcript_of(anthropic_provider(body, status=400))
    assert_transcript(t.events, ["start", {"type": "error", "code": "invalid_request_error", "retryable": False}])
    cut = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hi"}),
    )
    t = await transcript_of(anthropic_provider(cut))
    assert_transcript(
        t.events, ["start", "text.delta", {"type": "error", "code": "incomplete_stream", "source": "transport"}]
    )


async def test_anthropic_max_tokens_is_length() -> None:
    body = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hi"}),
        stop(0),
        *message_end("max_tokens", 1),
    )
    t = await transcript_of(anthropic_provider(body))
    assert t.events[-1].finish_reason == "length"  # type: ignore[union-attr]


async def test_agent_loop_over_recorded_anthropic_turns() -> None:
    turn1 = a_events(
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'}),
        stop(0),
        *message_end("tool_use", 10),
    )
    turn2 = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Cold in Oslo."}),
        stop(0),
        *message_end("end_turn", 5),
    )
    seen: list[Any] = []

    @tokenwire.tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"-3 C in {city}"

    response = await tokenwire.generate(
        Agent(anthropic_provider(turn1, turn2, seen=seen), [get_weather]), "Weather in Oslo?"
    )
    assert response.text == "Cold in Oslo." and response.tool_results[0].result == "-3 C in Oslo"
    assert response.usage == tokenwire.events.TokenUsage(60, 15)
    second = json.loads(seen[1].content)["messages"]
    assert second[1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }
    assert second[2]["content"][0]["type"] == "tool_result" and second[2]["content"][0]["tool_use_id"] == "toolu_1"


# -- OpenAI Responses -------------------------------------------------------------------------------


def responses_provider(*bodies: bytes, seen: list[httpx.Request] | None = None) -> OpenAIResponses:
    queue = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.AsyncOpenAI(
        api_key="sk",
        base_url="http://api.test/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return OpenAIResponses(client, model="gpt-test", retry=FAST)


def r_events(*events: dict[str, Any]) -> bytes:
    return sse(*events, done=False, event_names=True)


def completed(usage: tuple[int, int] = (11, 22), status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "type": f"response.{status}",
        "response": {
            "id": "resp_1",
            "status": status,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
            **extra,
        },
    }


async def test_responses_reasoning_text_function_calls_and_usage() -> None:
    body = r_events(
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1"}},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "Plan."},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []},
        },
        {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "On it."},
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "",
            },
        },
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"city":'},
        {
            "type": "response.output_item.added",
            "output_index": 3,
            "item": {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": "",
            },
        },
        {"type": "response.function_call_arguments.delta", "item_id": "fc_2", "delta": '{"city": "Rome"}'},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": ' "Paris"}'},
        {"type": "response.function_call_arguments.done", "item_id": "fc_1", "arguments": '{"city": "Paris"}'},
        {"type": "response.function_call_arguments.done", "item_id": "fc_2", "arguments": '{"city": "Rome"}'},
        completed(),
    )
    seen: list[httpx.Request] = []
    request = Request(
        [Message("system", "sys"), Message("user", "weather?")],
        tools=[WEATHER],
        tool_choice="get_weather",
        max_tokens=99,
    )
    t = await transcript_of(responses_provider(body, seen=seen), request)
    assert_transcript(
        t.events,
        [
            "start",
            {"type": "reasoning.delta", "text": "Plan."},
            {"type": "text.delta", "text": "On it."},
            {"type": "tool_call.start", "call_id": "call_1", "name": "get_weather"},
            {"type": "tool_call.delta", "call_id": "call_1"},
            {"type": "tool_call.start", "call_id": "call_2"},
            {"type": "tool_call.delta", "call_id": "call_2"},
            {"type": "tool_call.delta", "call_id": "call_1"},
            {"type": "tool_call", "call_id": "call_1", "args": {"city": "Paris"}},
            {"type": "tool_call", "call_id": "call_2", "args": {"city": "Rome"}},
            {"type": "usage", "input_tokens": 11, "output_tokens": 22},
            {"type": "done", "finish_reason": "tool_calls"},
        ],
    )
    sent = json.loads(seen[0].content)
    assert sent["instructions"] == "sys" and sent["input"] == [{"role": "user", "content": "weather?"}]
    assert sent["tool_choice"] == {"type": "function", "name": "get_weather"} and sent["max_output_tokens"] == 99


@pytest.mark.parametrize(
    ("terminal", "expected"),
    [
        (
            completed(status="failed", error={"code": "server_error", "message": "The model failed"}),
            {"type": "error", "code": "server_error", "retryable": True},
        ),
        (
            completed(status="incomplete", incomplete_details={"reason": "max_output_tokens"}),
            {"type": "done", "finish_reason": "length"},
        ),
        (
            {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"},
            {"type": "error", "code": "rate_limit_exceeded"},
        ),
    ],
)
async def test_responses_failed_incomplete_and_error_events_are_never_dropped(
    terminal: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = r_events({"type": "response.output_text.delta", "item_id": "m", "delta": "par"}, terminal)
    t = await transcript_of(responses_provider(body))
    assert_transcript(t.events, ["start", {"type": "text.delta", "text": "par"}, ..., expected])
    assert isinstance(t.events[-1], Error) == (expected["type"] == "error")


async def test_anthropic_continues_a_cut_off_answer_from_its_prefill() -> None:
    """A durable run taken over mid-turn asks the provider to go on from the text so far (a
    trailing assistant message). Anthropic gets it as the prefill, without the trailing space the
    API refuses, and the model's first words lose the space they bring: prefix + continuation is
    the answer, written once. With ``thinking`` on (no prefill allowed) it does not offer to."""
    body = a_events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": " blue,"}),
        block_delta(0, {"type": "text_delta", "text": " mostly."}),
        stop(0),
        *message_end("end_turn", 2),
    )
    seen: list[Any] = []
    provider = anthropic_provider(body, seen=seen)
    assert provider.continues_prefix
    asked = Request([Message("user", "What colour is the sky?"), Message("assistant", "The sky is ")])
    response = await tokenwire.generate(provider, asked)
    sent = json.loads(seen[0].content)
    assert sent["messages"][-1] == {"role": "assistant", "content": "The sky is"}
    assert "The sky is " + response.text == "The sky is blue, mostly."
    blank = await _sent(Request([Message("user", "Hi"), Message("assistant", "  ")]), body)
    assert blank["messages"] == [{"role": "user", "content": "Hi"}]  # an empty prefill is left out
    assert not Anthropic(anthropic.AsyncAnthropic(api_key="k"), "m", thinking={"type": "enabled"}).continues_prefix


async def _sent(request: Request, body: bytes) -> Any:
    """The request body the provider sent for ``request``."""
    seen: list[Any] = []
    await tokenwire.generate(anthropic_provider(body, seen=seen), request)
    return json.loads(seen[0].content)
