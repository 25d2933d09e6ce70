"""What the adapter tests of every framework share: a tool body that never ends (to cancel a
run mid-tool), reading a served adapter through the OpenAI SDK, and waiting for a run's end."""

from __future__ import annotations

import asyncio
from typing import Any

import openai

import tokenwire
from tokenwire.core.request import Message
from tokenwire.events import Event
from tokenwire.server import RunService, create_app
from tokenwire.testing import Transcript
from wire import serve

KEY = "adapter-key"
CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "6 * 7?"),
    Message("assistant", "", tool_calls=[{"call_id": "c1", "name": "multiply", "args": {"a": 6, "b": 7}}]),
    Message("tool", "42", tool_call_id="c1", name="multiply"),
    Message("assistant", "42."),
]
"""A conversation with every kind of message, as each framework's converter must take it."""


class Forever:
    """A tool body that waits for ever: says when it began, and whether it was cancelled."""

    def __init__(self) -> None:
        self.began, self.cancelled = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> int:
        self.began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return 0


async def cancel_mid_tool(provider: Any, forever: Forever) -> None:
    """Cancel a run while the framework runs ``forever``: the framework's tool is cancelled, and
    the stream ends with exactly one terminal, ``done(cancelled)``."""
    t = Transcript()
    handle = tokenwire.generate(provider, "go", observers=[t])
    await asyncio.wait_for(forever.began.wait(), 30)
    handle.cancel()
    await handle.wait()
    await asyncio.wait_for(forever.cancelled.wait(), 30)
    assert [e.type for e in t.events if e.type in ("done", "error")] == ["done"]
    assert t.events[-1].finish_reason == "cancelled"  # type: ignore[union-attr]


async def served_text(provider: Any, prompt: str) -> str:
    """The answer the OpenAI SDK streams from a server whose one provider is ``provider``."""
    with serve(create_app(providers={"agent": provider}, api_keys=[KEY])) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        stream = await client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": prompt}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
    return text


async def until_ended(service: RunService, stream_id: str) -> list[Event]:
    """A run's log once it has its terminal event (it is carried on in the background)."""
    for _ in range(600):
        events = await service.history(stream_id)
        if events and events[-1].type in ("done", "error"):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {stream_id} did not end: {[e.type for e in events]}")


async def close_mid_tool(provider: Any, forever: Forever) -> None:
    """Close the provider's stream while the framework runs ``forever`` (what the engine does on
    a limit or when the last reader left): the framework's tool is cancelled by the close itself,
    not later by a garbage collection."""
    import contextlib

    from tokenwire.core.request import as_request
    from tokenwire.events import ToolCall

    async with contextlib.aclosing(provider.stream(as_request("go"))) as parts:
        async for part in parts:
            if isinstance(part, ToolCall):
                await asyncio.wait_for(forever.began.wait(), 30)
                break
    assert forever.cancelled.is_set()
