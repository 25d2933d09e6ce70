"""Several users on the embedded model at once: continuous batching, queueing, admission, cancel.

The real model (e2e). Generations are short (a dozen tokens) so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import tokenwire
from tokenwire.core.request import Message, Request
from tokenwire.errors import OverCapacity
from tokenwire.events import Event
from tokenwire.log import MemoryLog
from tokenwire.providers import LlamaCpp
from tokenwire.server import create_app
from wire import serve

pytestmark = pytest.mark.e2e  # the real embedded model


@pytest.fixture(scope="module")
def shared() -> Iterator[LlamaCpp]:
    model = LlamaCpp.default(parallel=2, max_queue=1)
    model.load()  # the model and the batching context, before any request
    yield model
    model.close()


def ask(i: int, max_tokens: int = 12) -> Request:
    return Request([Message("user", f"Tell me about the number {i}.")], max_tokens=max_tokens, seed=i, temperature=0.7)


async def test_answers_are_generated_together_and_a_third_waits_its_turn(shared: LlamaCpp) -> None:
    order: list[tuple[int, str]] = []  # (run, event type) in the order they arrived

    async def run(i: int) -> list[Event]:
        events = []
        async with tokenwire.stream(shared, ask(i)) as s:
            async for e in s:
                events.append(e)
                order.append((i, e.type))
        return events

    results = await asyncio.gather(*(run(i) for i in range(3)))
    for events in results:
        assert events[0].type == "start" and events[-1].type == "done"
        assert any(e.type == "text.delta" for e in events) and any(e.type == "usage" for e in events)
    queued = [[e for e in events if e.type == "step"] for events in results]
    assert sum(1 for steps in queued if steps) == 1  # two slots: exactly one run waited
    steps = next(steps for steps in queued if steps)
    assert [(s.name, s.status, s.detail) for s in steps] == [  # type: ignore[attr-defined]
        ("queued", "started", {"position": 1}),
        ("queued", "finished", None),
    ]
    # Fair sharing: both running answers produced text before either of them finished.
    first_done = min(order.index((i, "done")) for i in (0, 1))
    assert all(order.index((i, "text.delta")) < first_done for i in (0, 1))


async def test_a_full_queue_is_refused_before_anything_starts_and_the_server_says_429(shared: LlamaCpp) -> None:
    handles = [tokenwire.generate(shared, ask(i, max_tokens=48)) for i in range(3)]  # two run, one waits
    await asyncio.sleep(0.05)
    with pytest.raises(OverCapacity, match="retry shortly"):
        shared.admit()
    app = create_app(providers={"llama": shared}, api_keys=["k-123456"], log=MemoryLog())
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/v1/runs", json={"prompt": "hi"}, headers={"Authorization": "Bearer k-123456"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    terminals = await asyncio.gather(*(h.wait() for h in handles))
    assert [t.type for t in terminals] == ["done", "done", "done"]
    shared.admit()  # room again


async def test_cancelling_one_answer_leaves_the_others_running(shared: LlamaCpp) -> None:
    keep = tokenwire.generate(shared, ask(7, max_tokens=16))
    drop = tokenwire.generate(shared, ask(8, max_tokens=400))
    seen: list[Any] = []
    async for e in drop.events():
        seen.append(e)
        if e.type == "text.delta":
            drop.cancel("user")
    kept = await keep.wait()
    assert seen[-1].type == "done" and seen[-1].finish_reason == "cancelled"
    assert kept.type == "done" and kept.finish_reason in ("stop", "length")
    assert keep.result().text
