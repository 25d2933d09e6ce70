"""tokenwire serving the OpenAI Chat Completions API, read by the real ``openai`` SDK.

The server is the real app on a loopback port; the provider is scripted so that every chunk the
SDK parses is known: text, reasoning, two tool calls streamed in parallel, usage, errors.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tokenwire.events import Error, ReasoningDelta, ToolCall, ToolCallDelta, ToolCallStart, Usage
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from tokenwire.wire.openai_chat import ChatCompletionChunks
from wire import serve, wait_for

KEY = "openai-compat-key-1"

TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "description": "w", "parameters": {"type": "object", "properties": {}}},
    }
]


def parallel_calls() -> list[Any]:
    return [
        "Checking.",
        ToolCallStart(call_id="call_a", name="weather"),
        ToolCallStart(call_id="call_b", name="weather"),
        ToolCallDelta(call_id="call_a", args_delta='{"city": "Pa'),
        ToolCallDelta(call_id="call_b", args_delta='{"city": "Rome"}'),
        ToolCallDelta(call_id="call_a", args_delta='ris"}'),
        ToolCall(call_id="call_b", name="weather", args={"city": "Rome"}),
        ToolCall(call_id="call_a", name="weather", args={"city": "Paris"}),
    ]


def app(**providers: Any) -> Any:
    return create_app(
        providers=providers
        or {"echo": Scripted([ReasoningDelta("hm"), "Hel", "lo", Usage(input_tokens=2, output_tokens=3)])},
        api_keys=[KEY],
        log=MemoryLog(),
        config=ServerConfig(ping_s=0.05),
    )


def client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


async def test_streaming_text_with_usage_through_the_sdk() -> None:
    with serve(app()) as url:
        async with client(url) as c:
            stream = await c.chat.completions.create(
                model="any-name",  # one provider: served whatever the name
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == "Hello"
    assert [getattr(d, "reasoning_content", None) for d in deltas if getattr(d, "reasoning_content", None)] == ["hm"]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk, last
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens) == (
        2,
        3,
        5,
    )
    assert {ch.id for ch in chunks} == {chunks[0].id} and chunks[0].model == "any-name"


async def test_the_sdk_stream_helper_and_non_streaming_answers() -> None:
    with serve(app()) as url:
        async with client(url) as c:
            async with c.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as s:
                async for _ in s:
                    pass
                final = await s.get_final_completion()
            whole = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert final.choices[0].message.content == "Hello"
    assert whole.choices[0].message.content == "Hello" and whole.choices[0].finish_reason == "stop"
    assert whole.object == "chat.completion"
    assert whole.usage is not None and whole.usage.total_tokens == 5


async def test_parallel_tool_calls_arrive_as_the_sdk_expects() -> None:
    provider = Scripted(parallel_calls())
    with serve(app(tools=provider)) as url:
        async with client(url) as c:
            messages: Any = [{"role": "user", "content": "weather?"}]
            async with c.chat.completions.stream(model="tools", messages=messages, tools=TOOLS) as s:  # type: ignore[arg-type]
                async for _ in s:
                    pass
                final = await s.get_final_completion()
            # The client executes the calls and sends the results back, as with OpenAI.
            calls = final.choices[0].message.tool_calls or []
            follow_up = [
                *messages,
                final.choices[0].message.model_dump(exclude_none=True),
                *({"role": "tool", "tool_call_id": call.id, "content": "sunny"} for call in calls),
            ]
            await c.chat.completions.create(model="tools", messages=follow_up, tools=TOOLS)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(call.id, json.loads(call.function.arguments)) for call in calls] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Rome"}),
    ]
    last = provider.requests[-1]
    assert [m.role for m in last.messages] == ["user", "assistant", "tool", "tool"]
    assert last.messages[1].tool_calls == [
        {"call_id": "call_a", "name": "weather", "args": {"city": "Paris"}},
        {"call_id": "call_b", "name": "weather", "args": {"city": "Rome"}},
    ]
    assert last.tools[0].name == "weather"


async def test_an_error_mid_stream_is_raised_by_the_sdk_and_a_failed_run_is_an_error_status() -> None:
    broken = Scripted(["part", Error(code="overloaded", message="the model is overloaded", source="provider")])
    with serve(app(broken=broken)) as url:
        async with client(url) as c:
            stream = await c.chat.completions.create(
                model="broken", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            with pytest.raises(openai.APIError, match="overloaded"):
                [chunk async for chunk in stream]
            with pytest.raises(openai.InternalServerError, match="overloaded"):
                await c.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])


async def test_models_unknown_model_bad_key_and_bad_request_in_openai_shapes() -> None:
    with serve(app(a=Scripted(["x"]), b=Scripted(["y"]))) as url:
        async with client(url) as c:
            assert [m.id async for m in c.models.list()] == ["a", "b"]
            with pytest.raises(openai.NotFoundError, match="does not exist; this server has: a, b"):
                await c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
            b = await c.chat.completions.create(model="b", messages=[{"role": "user", "content": "hi"}])
            assert b.choices[0].message.content == "y"
            with pytest.raises(openai.BadRequestError, match="only text content"):
                await c.chat.completions.create(
                    model="a",
                    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                )
        async with client(url, key="wrong") as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.models.list()
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{url}/v1/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {KEY}"}
            )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_streaming_client_that_leaves_cancels_its_run() -> None:
    application = app(endless=Scripted(["a", Stall()]))
    runs = application.state.tokenwire.runs
    with serve(application) as url:
        async with client(url) as c:
            stream = await c.chat.completions.create(
                model="endless", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            run = runs.running[0]
            await stream.close()  # the client leaves mid-answer
            await wait_for(lambda: not runs.running)
    assert run.handle.terminal.type == "done"
    assert run.handle.terminal.finish_reason == "cancelled"


def test_chunks_carry_only_openai_keys_and_number_calls_in_start_order() -> None:
    enc = ChatCompletionChunks("chatcmpl-x", model="m", created=1, include_usage=True)
    from tokenwire.events import Done, Start, TokenUsage, Usage

    events = [Start(model="m", stream_id="s", seq=0), *[_stamp(e, i + 1) for i, e in enumerate(parallel_calls())]]
    events += [Usage(input_tokens=3, output_tokens=9), Done(finish_reason="tool_calls", usage=TokenUsage(3, 9))]
    frames = [f for e in events for f in enc.feed(e)]
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    for chunk in chunks:
        assert set(chunk) <= {"id", "object", "created", "model", "choices", "usage"}
        assert "seq" not in json.dumps(chunk) and "stream_id" not in json.dumps(chunk)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [(c["index"], c.get("id")) for c in calls[:2]] == [(0, "call_a"), (1, "call_b")]
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == '{"city": "Paris"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    assert enc.feed(Done()) == []  # nothing after the end


def _stamp(item: Any, seq: int) -> Any:
    from tokenwire.events import TextDelta

    if isinstance(item, str):
        return TextDelta(item, stream_id="s", seq=seq)
    return item


# -- the Responses API ---------------------------------------------------------------------------------

RESPONSE_TOOLS: Any = [
    {"type": "function", "name": "weather", "description": "w", "parameters": {"type": "object", "properties": {}}}
]


async def test_responses_stream_through_the_sdk_helper_and_raw() -> None:
    with serve(app()) as url:
        async with client(url) as c:
            async with c.responses.stream(model="m", input="hi") as s:
                kinds = [event.type async for event in s]
                final = await s.get_final_response()
            raw = await c.responses.create(model="m", input=[{"role": "user", "content": "hi"}], stream=True)
            events = [e async for e in raw]
            whole = await c.responses.create(model="m", input="hi", instructions="be brief")
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert whole.output_text == "Hello" and whole.object == "response"


async def test_responses_parallel_function_calls_and_their_outputs() -> None:
    provider = Scripted(parallel_calls())
    with serve(app(tools=provider)) as url:
        async with client(url) as c:
            async with c.responses.stream(model="tools", input="weather?", tools=RESPONSE_TOOLS) as s:
                deltas = [e.delta async for e in s if e.type == "response.function_call_arguments.delta"]
                final = await s.get_final_response()
            calls = [item for item in final.output if item.type == "function_call"]
            follow_up: Any = [
                {"role": "user", "content": "weather?"},
                *(
                    {"type": "function_call", "call_id": i.call_id, "name": i.name, "arguments": i.arguments}
                    for i in calls
                ),
                *({"type": "function_call_output", "call_id": i.call_id, "output": "sunny"} for i in calls),
            ]
            await c.responses.create(model="tools", input=follow_up, tools=RESPONSE_TOOLS)
    assert [(i.call_id, i.name, json.loads(i.arguments), i.status) for i in calls] == [
        ("call_a", "weather", {"city": "Paris"}, "completed"),
        ("call_b", "weather", {"city": "Rome"}, "completed"),
    ]
    assert "".join(deltas) == '{"city": "Pa{"city": "Rome"}ris"}'  # interleaved, as they streamed
    last = provider.requests[-1]
    assert [m.role for m in last.messages] == ["user", "assistant", "tool", "tool"]
    assert len(last.messages[1].tool_calls or []) == 2


async def test_a_multi_turn_tool_loop_with_a_reasoning_model_through_the_responses_api() -> None:
    """What openai-agents, pydantic-ai and the AI SDK send back: the previous output items
    (a reasoning item included), or item_reference to them; usage is reported either way."""
    thinker = Scripted.turns(
        [ReasoningDelta("need the weather"), ToolCall(call_id="c1", name="weather", args={"city": "Oslo"})],
        [ReasoningDelta("got it"), "Sunny in Oslo."],
        [ReasoningDelta("again"), "Still sunny."],
    )
    with serve(app(thinker=thinker)) as url:
        async with client(url) as c:
            first = await c.responses.create(model="thinker", input="Weather in Oslo?", tools=RESPONSE_TOOLS)
            kinds = [item.type for item in first.output]
            call = next(item for item in first.output if item.type == "function_call")
            answer = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
            sent_back: Any = [
                {"role": "user", "content": "Weather in Oslo?"},
                *(item.model_dump(exclude_none=True) for item in first.output),
                answer,
            ]
            second = await c.responses.create(model="thinker", input=sent_back, tools=RESPONSE_TOOLS)
            references: Any = [
                {"role": "user", "content": "Weather in Oslo?"},
                *({"type": "item_reference", "id": item.id} for item in first.output),
                answer,
            ]
            third = await c.responses.create(model="thinker", input=references, tools=RESPONSE_TOOLS)
            with pytest.raises(openai.BadRequestError, match="no such item"):
                await c.responses.create(model="thinker", input=[{"type": "item_reference", "id": "fc_nope_0"}])
    assert kinds == ["reasoning", "function_call"]
    assert second.output_text == "Sunny in Oslo." and third.output_text == "Still sunny."
    for response in (first, second, third):
        assert response.usage is not None and response.usage.output_tokens > 0
    for request in thinker.requests[1:]:  # the same conversation, from items or from references
        assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
        assert request.messages[1].tool_calls == [{"call_id": "c1", "name": "weather", "args": {"city": "Oslo"}}]


async def test_responses_failed_and_bad_input() -> None:
    broken = Scripted(["part", Error(code="overloaded", message="the model is overloaded", source="provider")])
    with serve(app(broken=broken)) as url:
        async with client(url) as c:
            stream = await c.responses.create(model="broken", input="hi", stream=True)
            events = [e async for e in stream]
            with pytest.raises(openai.BadRequestError, match="not supported"):
                await c.responses.create(model="broken", input=[{"type": "image_generation_call", "id": "x"}])
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and events[-1].response.error.code == "overloaded"
    assert events[-1].response.output[0].content[0].text == "part"  # the partial answer is kept


def test_responses_delta_frames_match_the_generic_encoding() -> None:
    """The text-delta fast path writes exactly what the generic event writer would."""
    from tokenwire.events import Done, Start, TextDelta
    from tokenwire.wire.openai_responses import ResponseEvents

    enc = ResponseEvents("resp_x", model="m", created_at=0)
    frames = [f for e in [Start(model="m"), *(TextDelta(t) for t in ['a"', "é\n", "c"]), Done()] for f in enc.feed(e)]
    deltas = [f for f in frames if f.startswith(b"event: response.output_text.delta\n")]
    assert len(deltas) == 3
    for n, (frame, text) in enumerate(zip(deltas, ['a"', "é\n", "c"], strict=True)):
        body = json.loads(frame.split(b"data: ", 1)[1])
        assert list(body) == [
            "type",
            "sequence_number",
            "item_id",
            "output_index",
            "content_index",
            "delta",
            "logprobs",
        ]
        assert body == {
            "type": "response.output_text.delta",
            "sequence_number": 4 + n,
            "item_id": "msg_x_0",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        }
    seqs = [json.loads(f.split(b"data: ", 1)[1])["sequence_number"] for f in frames]
    assert seqs == list(range(len(frames)))


def test_the_first_chunk_names_the_role_with_null_content_before_a_tool_call() -> None:
    """As OpenAI streams it: no empty text before a tool call (the AI SDK would render an empty
    text part for ""), and text answers start with their first text."""
    from tokenwire.events import Done, Start, TextDelta

    def deltas(events: list[Any]) -> list[dict[str, Any]]:
        enc = ChatCompletionChunks("c", model="m", created=0)
        frames = [f for e in events for f in enc.feed(e)]
        return [json.loads(f[6:])["choices"][0]["delta"] for f in frames if f.startswith(b"data: {")]

    call = deltas([Start(model="m"), ToolCall(call_id="c1", name="weather", args={}), Done(finish_reason="tool_calls")])
    assert call[0]["role"] == "assistant" and call[0]["content"] is None and call[0]["tool_calls"][0]["id"] == "c1"
    text = deltas([Start(model="m"), TextDelta("Hi"), Done()])
    assert text == [{"role": "assistant", "content": "Hi"}, {}]
    assert deltas([Start(model="m"), Done()])[0] == {"role": "assistant", "content": ""}  # an empty answer


async def test_an_item_reference_resolves_only_the_callers_own_responses() -> None:
    other_key = "openai-compat-key-2"
    thinker = Scripted.turns(["Mine."], ["never"])
    service_app = create_app(providers={"m": thinker}, api_keys=[KEY, other_key], log=MemoryLog())
    with serve(service_app) as url:
        async with client(url) as mine, client(url, key=other_key) as theirs:
            first = await mine.responses.create(model="m", input="hi")
            reference: Any = [{"type": "item_reference", "id": first.output[0].id}]
            with pytest.raises(openai.BadRequestError, match="no such item"):
                await theirs.responses.create(model="m", input=reference)  # another key's answer: unknown
            too_many: Any = [{"type": "item_reference", "id": f"msg_{i:032x}_0"} for i in range(17)]
            with pytest.raises(openai.BadRequestError, match="at most 16 responses"):
                await mine.responses.create(model="m", input=too_many)
