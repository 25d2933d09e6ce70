"""What an adapter adds per event over iterating the framework's own stream, same run.

For each framework, a test model of its own streams the same answer of N words:

- **framework**: iterating the framework's event stream alone (LangChain's ``astream_events``,
  Pydantic AI's ``run_stream_events``), the cost every user of it pays already;
- **mapping**: the adapter's mapping alone, over the same run's events recorded in a list (its
  own cost, free of the framework's run-to-run noise, which is larger);
- **adapter**: the adapter's ``stream()`` (the framework's stream, mapped to tokenwire parts);
- **tokenwire**: ``tokenwire.generate`` over the adapter (lifecycle, log, one inline observer).

Prints µs per text delta (the framework's own count) for each, best of ``--repeat``; the adapter's own cost is
``adapter - framework``. Goal: ≤ 2 µs per event, and ≤ 5 % of the framework's own per-event cost.

    python bench/adapters.py [--words N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import tokenwire
from tokenwire.adapters import langchain as lc
from tokenwire.adapters import pydantic_ai as pai
from tokenwire.adapters.langchain import LangChain
from tokenwire.adapters.pydantic_ai import PydanticAI
from tokenwire.core.request import as_request

HI = as_request("hi")


def lc_model(words: int) -> GenericFakeChatModel:
    # GenericFakeChatModel splits on whitespace and keeps it: a word and a space per word.
    return GenericFakeChatModel(messages=iter([" ".join(["word"] * words)] * 1_000))


def pai_agent(words: int) -> Agent[None, str]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for _ in range(words):
            yield "word "

    return Agent(FunctionModel(stream_function=stream))


async def mapped(recorded: list[Any], run: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Best seconds of mapping ``recorded`` events with a fresh mapping state, and the text parts."""
    best, count = float("inf"), 0
    for _ in range(repeat):
        state = run()
        t0 = time.perf_counter()
        count = sum(isinstance(p, str) for ev in recorded for p in state.parts(ev))
        best = min(best, time.perf_counter() - t0)
    return best, count


async def timed(run: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    """Best seconds over ``repeat`` runs, and the deltas counted."""
    best, count = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = await run()
        best = min(best, time.perf_counter() - t0)
    return best, count


async def langchain(words: int, repeat: int) -> dict[str, tuple[float, int]]:
    async def framework() -> int:
        n = 0
        async for ev in lc_model(words).astream_events([HumanMessage("hi")], version="v2"):
            n += ev["event"] == "on_chat_model_stream"
        return n

    async def adapter() -> int:
        return sum([isinstance(p, str) async for p in LangChain(lc_model(words)).stream(HI)])

    async def engine() -> int:
        count = [0]
        await tokenwire.generate(
            LangChain(lc_model(words)), "hi", observers=[lambda e: count.__setitem__(0, count[0] + 1)]
        )
        return count[0]

    paths = (("framework", framework), ("adapter", adapter), ("tokenwire", engine))
    rows = {name: await timed(f, repeat) for name, f in paths}
    recorded = [ev async for ev in lc_model(words).astream_events([HumanMessage("hi")], version="v2")]
    rows["mapping"] = await mapped(recorded, lc.Run, repeat)
    return rows


async def pydantic_ai(words: int, repeat: int) -> dict[str, tuple[float, int]]:
    agent = pai_agent(words)

    async def framework() -> int:
        n = 0
        async with agent.run_stream_events("hi") as events:
            async for ev in events:
                n += getattr(ev, "event_kind", "") == "part_delta"
        return n

    async def adapter() -> int:
        return sum([isinstance(p, str) async for p in PydanticAI(agent).stream(HI)])

    async def engine() -> int:
        count = [0]
        await tokenwire.generate(PydanticAI(agent), "hi", observers=[lambda e: count.__setitem__(0, count[0] + 1)])
        return count[0]

    paths = (("framework", framework), ("adapter", adapter), ("tokenwire", engine))
    rows = {name: await timed(f, repeat) for name, f in paths}
    async with agent.run_stream_events("hi") as events:
        recorded = [ev async for ev in events]
    rows["mapping"] = await mapped(recorded, pai.Run, repeat)
    return rows


def report(title: str, rows: dict[str, tuple[float, int]], words: int) -> None:
    deltas = rows["framework"][1]  # the framework's text deltas: the unit every path is divided by
    base = rows["framework"][0] / deltas * 1e6
    print(f"\n{title} ({words} words, deltas seen {[n for _, n in rows.values()]})")
    print("| path | µs per delta | over the framework |")
    print("|---|---:|---:|")
    for name, (seconds, _) in rows.items():
        us = seconds / deltas * 1e6
        if name == "mapping":  # its own cost: all of it is over the framework
            print(f"| {name} | {us:.2f} | +{us:.2f} µs ({us / base:+.1%}) |")
        else:
            print(f"| {name} | {us:.2f} | {us - base:+.2f} µs ({(us - base) / base:+.1%}) |")


async def main(args: Any) -> None:
    report("LangChain astream_events, GenericFakeChatModel", await langchain(args.words, args.repeat), args.words)
    report("Pydantic AI run_stream_events, FunctionModel", await pydantic_ai(args.words, args.repeat), args.words)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
