"""The golden streams in tokenwire.testing: reproduced byte-exactly by the encoders, parsed by the
real openai SDK (strict types), from a transcript with text, reasoning, interleaved parallel tool
calls, tool results, usage and an error."""

from __future__ import annotations

import typing
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent

from tokenwire.testing import golden


def test_the_transcript_file_is_the_built_transcript() -> None:
    assert golden.transcript() == golden._build()
    assert [e.seq for e in golden.transcript()] == list(range(len(golden.transcript())))


@pytest.mark.parametrize("fmt", golden.FORMATS)
def test_the_encoders_write_the_golden_bytes(fmt: str) -> None:
    written = golden.encode_stream(fmt, golden.transcript())
    assert written == golden.stream(fmt), (
        f"regenerate with python -m tokenwire.testing.golden if {fmt} changed on purpose"
    )
    assert b'"seq"' not in written and b"stream_id" not in written  # none of our envelope leaks


def sdk(body: bytes) -> openai.AsyncOpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return openai.AsyncOpenAI(api_key="k", base_url="http://golden.test/v1", http_client=http, max_retries=0)


async def test_the_sdk_reads_the_golden_chat_completions_stream() -> None:
    chunks: list[Any] = []
    stream = await sdk(golden.stream("chat_completions")).chat.completions.create(
        model="golden-model", messages=[{"role": "user", "content": "weather?"}], stream=True
    )
    with pytest.raises(openai.APIError, match="overloaded"):  # the transcript ends with an error
        async for chunk in stream:
            chunks.append(chunk)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Let me check.Paris 17°C, Rome 21°C — "
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        for tc in d.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "args": ""})
            call["id"] = tc.id or call["id"]
            call["args"] += (tc.function.arguments or "") if tc.function else ""
    assert calls == {0: {"id": "call_a", "args": '{"city": "Paris"}'}, 1: {"id": "call_b", "args": '{"city": "Rome"}'}}


async def test_the_sdk_reads_the_golden_responses_stream_with_its_strict_types() -> None:
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], discriminator]
    known = {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}
    assert len(known) > 20 and "response.output_text.delta" in known
    stream = await sdk(golden.stream("responses")).responses.create(model="golden-model", input="weather?", stream=True)
    events = [e async for e in stream]
    assert {e.type for e in events} <= known  # every event is one the SDK has a type for
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.failed" and last.response.error is not None
    kinds = [item.type for item in last.response.output]
    assert kinds == ["reasoning", "message", "function_call", "function_call", "message"]
