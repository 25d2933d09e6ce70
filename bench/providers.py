"""CPU per chunk: provider streams through the SDKs, tokenwire, LiteLLM, LangChain and a floor.

The same recorded 20,000-chunk streams (one token per chunk) are served from memory by an httpx
transport that hands over one SSE event per read, like a network would. For each path the
process CPU time of reading the whole stream is divided by the chunk count, in one run:

Chat Completions: (a) iterating the openai SDK's stream, (b) tokenwire ``OpenAIChat`` with 3
observers (a transcript, a counter, a text buffer), (c) LiteLLM's streaming wrapper, (d)
LangChain's ``ChatOpenAI.astream``, (e) a floor: httpx + line split + ``msgspec`` decode.
Responses and Anthropic: the SDK's stream against tokenwire's adapter and a floor.

    python bench/providers.py [--chunks N]

Needs the bench extra: ``pip install -e '.[bench]'`` (LiteLLM and LangChain), or ``--no-peers``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

import anthropic
import httpx
import httpx2
import msgspec
import openai

import tokenwire
from tokenwire.providers import Anthropic, OpenAIChat, OpenAIResponses
from tokenwire.testing import Transcript


def chat_events(n: int) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    usage = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": n + 10},
    }
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": f" t{i}"}) for i in range(n)),
        chunk({}, "stop"),
        b"data: " + json.dumps(usage).encode() + b"\n\n",
        b"data: [DONE]\n\n",
    ]


def ev(body: dict[str, Any]) -> bytes:
    """A named SSE event (Responses and Anthropic streams name each event after its type)."""
    return f"event: {body['type']}\ndata: {json.dumps(body)}\n\n".encode()


ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [],
    "model": "claude-x",
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}


def responses_events(n: int) -> list[bytes]:
    resp = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-x",
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}
    done = {
        **resp,
        "status": "completed",
        "usage": {
            "input_tokens": 10,
            "output_tokens": n,
            "total_tokens": n + 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    return [
        ev({"type": "response.created", "sequence_number": 0, "response": resp}),
        ev({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item}),
        *(
            ev(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": i + 2,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": f" t{i}",
                    "logprobs": [],
                }
            )
            for i in range(n)
        ),
        ev({"type": "response.completed", "sequence_number": n + 2, "response": done}),
    ]


def anthropic_events(n: int) -> list[bytes]:
    return [
        ev({"type": "message_start", "message": ANTHROPIC_MESSAGE}),
        ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        *(
            ev({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" t{i}"}})
            for i in range(n)
        ),
        ev({"type": "content_block_stop", "index": 0}),
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            }
        ),
        ev({"type": "message_stop"}),
    ]


def transport(events: list[bytes], module: Any = httpx) -> Any:
    class Stream(module.AsyncByteStream):  # type: ignore[misc, name-defined]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for e in events:
                yield e

    return module.MockTransport(
        lambda request: module.Response(200, headers={"content-type": "text/event-stream"}, stream=Stream())
    )


def observers() -> list[Any]:
    count = [0]
    text: list[str] = []

    def counter(event: Any) -> None:
        count[0] += 1

    def ui(event: Any) -> None:
        if event.type == "text.delta":
            text.append(event.text)

    return [Transcript(), counter, ui]


async def measure(n: int, run: Callable[[], Awaitable[int]]) -> float:
    gc.collect()
    c0 = time.process_time()
    got = await run()
    elapsed = time.process_time() - c0
    assert got >= n, f"only {got} of {n} chunks arrived"
    return elapsed / n * 1e6


MESSAGES = [{"role": "user", "content": "hi"}]


class FloorDelta(msgspec.Struct):
    content: str | None = None


class FloorChoice(msgspec.Struct):
    delta: FloorDelta


class FloorChunk(msgspec.Struct):
    choices: list[FloorChoice]


class FloorEventDelta(msgspec.Struct):
    text: str | None = None


class FloorEvent(msgspec.Struct):
    """Enough of a Responses or Anthropic event to find its text."""

    type: str
    delta: FloorEventDelta | str | None = None


async def event_floor(events: list[bytes], module: Any = httpx) -> int:
    """httpx + line split + msgspec: the least work that reads each event's text."""
    decode = msgspec.json.Decoder(FloorEvent).decode
    n_text = 0
    async with (
        module.AsyncClient(transport=transport(events, module)) as client,
        client.stream("POST", "http://api.test/v1") as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                ev = decode(line[6:])
                if ev.delta is not None and (ev.delta if isinstance(ev.delta, str) else ev.delta.text):
                    n_text += 1
    return n_text


async def chat_paths(n: int, peers: bool = True) -> dict[str, float]:
    events = chat_events(n)

    def oai() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk", base_url="http://api.test/v1", http_client=httpx.AsyncClient(transport=transport(events))
        )

    async def sdk() -> int:
        stream = await oai().chat.completions.create(model="gpt-x", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        return sum([1 async for c in stream if c.choices and c.choices[0].delta.content])

    async def tw() -> int:
        response = await tokenwire.generate(OpenAIChat(oai(), model="gpt-x"), "hi", observers=observers())
        return response.stats.output_tokens if response.stats else 0

    async def lite() -> int:
        import litellm

        stream = await litellm.acompletion(
            model="openai/gpt-x", messages=MESSAGES, stream=True, client=oai(), api_key="sk"
        )
        return sum([1 async for c in stream if c.choices and c.choices[0].delta.content])

    async def langchain() -> int:
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(
            model="gpt-x",
            api_key="sk",
            base_url="http://api.test/v1",  # type: ignore[arg-type]
            http_async_client=httpx.AsyncClient(transport=transport(events)),
        )
        return sum([1 async for c in llm.astream("hi") if c.content])

    decode = msgspec.json.Decoder(FloorChunk).decode

    async def floor() -> int:
        n_text = 0
        async with (
            httpx.AsyncClient(transport=transport(events)) as client,
            client.stream("POST", "http://api.test/v1") as r,
        ):
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = decode(line[6:])
                    if chunk.choices and chunk.choices[0].delta.content:
                        n_text += 1
        return n_text

    results = {
        "openai SDK stream": await measure(n, sdk),
        "tokenwire OpenAIChat + 3 observers": await measure(n, tw),
    }
    if peers:
        results["LiteLLM acompletion(stream=True)"] = await measure(n, lite)
        results["LangChain ChatOpenAI.astream"] = await measure(n, langchain)
    results["floor: httpx + msgspec"] = await measure(n, floor)
    return results


async def responses_paths(n: int) -> dict[str, float]:
    events = responses_events(n)

    def oai() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk", base_url="http://api.test/v1", http_client=httpx.AsyncClient(transport=transport(events))
        )

    async def sdk() -> int:
        stream = await oai().responses.create(model="gpt-x", input="hi", stream=True)
        return sum([1 async for e in stream if e.type == "response.output_text.delta"])

    async def tw() -> int:
        response = await tokenwire.generate(OpenAIResponses(oai(), model="gpt-x"), "hi", observers=observers())
        return len(response.text.split())

    async def floor() -> int:
        return await event_floor(events)

    return {
        "openai SDK responses stream": await measure(n, sdk),
        "tokenwire OpenAIResponses + 3 observers": await measure(n, tw),
        "floor: httpx + msgspec": await measure(n, floor),
    }


async def anthropic_paths(n: int) -> dict[str, float]:
    events = anthropic_events(n)

    def client() -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key="k", base_url="http://api.test", http_client=httpx2.AsyncClient(transport=transport(events, httpx2))
        )

    async def sdk() -> int:
        stream = await client().messages.create(model="claude-x", max_tokens=10, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        return sum([1 async for e in stream if e.type == "content_block_delta"])

    async def sdk_helper() -> int:
        async with client().messages.stream(model="claude-x", max_tokens=10, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            return sum([1 async for _ in stream.text_stream])

    async def tw() -> int:
        response = await tokenwire.generate(Anthropic(client(), model="claude-x"), "hi", observers=observers())
        return len(response.text.split())

    async def floor() -> int:
        return await event_floor(events, httpx2)

    return {
        "anthropic SDK raw event stream": await measure(n, sdk),
        "anthropic SDK messages.stream() helper": await measure(n, sdk_helper),
        "tokenwire Anthropic + 3 observers": await measure(n, tw),
        "floor: httpx2 + msgspec": await measure(n, floor),
    }


def tool_use_events(fragments: int) -> list[bytes]:
    """An Anthropic stream whose only block is a tool call with a long argument, in many fragments."""
    args = json.dumps({"rows": [{"id": i, "label": f"row {i}"} for i in range(fragments // 2)]})
    step = max(len(args) // fragments, 1)
    pieces = [args[i : i + step] for i in range(0, len(args), step)]

    return [
        ev({"type": "message_start", "message": ANTHROPIC_MESSAGE}),
        ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            }
        ),
        *(
            ev({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})
            for p in pieces
        ),
        ev({"type": "content_block_stop", "index": 0}),
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            }
        ),
        ev({"type": "message_stop"}),
    ]


async def partial_args_paths() -> None:
    """Partial tool arguments for a UI after every fragment: SDK helper (re-parses) vs PartialArguments."""
    from tokenwire.wire.partial_json import PartialArguments

    print("\n### Partial tool arguments after every fragment (Anthropic tool_use)\n")
    print("| fragments | SDK messages.stream() ms | tokenwire + PartialArguments ms |\n|---:|---:|---:|")
    for fragments in (1000, 4000):
        events = tool_use_events(fragments)

        def client(events: list[bytes] = events) -> anthropic.AsyncAnthropic:
            return anthropic.AsyncAnthropic(
                api_key="k",
                base_url="http://api.test",
                http_client=httpx2.AsyncClient(transport=transport(events, httpx2)),
            )

        gc.collect()
        c0 = time.process_time()
        async with client().messages.stream(model="claude-x", max_tokens=10, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            async for event in stream:
                if event.type == "input_json":
                    _ = event.snapshot  # what a UI reads after each fragment
        sdk_ms = (time.process_time() - c0) * 1000
        gc.collect()
        c0 = time.process_time()
        tracker = PartialArguments()

        def ui(event: Any, tracker: PartialArguments = tracker) -> None:
            if event.type == "tool_call.delta":
                _ = tracker[event.call_id]  # what a UI reads after each fragment

        await tokenwire.generate(Anthropic(client(), model="claude-x"), "hi", observers=[tracker, ui]).wait()
        tw_ms = (time.process_time() - c0) * 1000
        print(f"| {fragments:,} | {sdk_ms:.0f} | {tw_ms:.0f} |")


def table(title: str, results: dict[str, float], base: str) -> None:
    print(f"\n### {title}\n\n| path | CPU µs/chunk | vs {base} |\n|---|---:|---:|")
    for name, us in results.items():
        print(f"| {name} | {us:.1f} | {us / results[base]:.2f}x |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--no-peers", action="store_true", help="skip LiteLLM and LangChain (no bench extra needed)")
    args = parser.parse_args()
    n = args.chunks
    print(f"# {n:,} chunks per stream, one SSE event per read, process CPU time")
    chat = await chat_paths(n, peers=not args.no_peers)
    table("Chat Completions", chat, "floor: httpx + msgspec")
    sdk_ratio = chat["openai SDK stream"] / chat["tokenwire OpenAIChat + 3 observers"]
    print(f"\ntokenwire is {sdk_ratio:.1f}x cheaper per chunk than iterating the openai SDK's stream.")
    table("Responses", await responses_paths(n), "floor: httpx + msgspec")
    table("Anthropic Messages", await anthropic_paths(n), "floor: httpx2 + msgspec")
    await partial_args_paths()


if __name__ == "__main__":
    asyncio.run(main())
