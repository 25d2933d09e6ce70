"""Executing tools at `tool_call` time versus after the model's turn ends.

A scripted model streams at a realistic 50 tokens/s: two tool calls early in a long turn (after 5
tokens, then 100 more tokens), then a short second turn. Each tool waits `--tool-s` seconds (an
API call). Compared in the same run:

- tokenwire's agent loop: each tool starts the moment its `tool_call` arrives;
- after-the-turn: the same turn streamed, then both tools run concurrently (asyncio.gather, as
  SDK helpers and most frameworks do), then the second turn.

Prints wall-clock time of both, the gain, and the delay from a `tool_call` event's timestamp to
the tool function starting (target: median <= 1 ms).

    python bench/tools.py [--reps N] [--tool-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import tokenwire
from tokenwire.events import ToolCall
from tokenwire.providers import Scripted

RATE_S = 0.02  # 50 tokens/s


def turn_one() -> list[Any]:
    head = [f"t{i} " for i in range(5)]
    calls = [
        ToolCall(call_id="a", name="fetch", args={"url": "https://a.example"}),
        ToolCall(call_id="b", name="fetch", args={"url": "https://b.example"}),
    ]
    return [*head, *calls, *[f"w{i} " for i in range(100)]]


def turn_two() -> list[Any]:
    return [f"answer{i} " for i in range(10)]


async def with_tokenwire(tool_s: float) -> tuple[float, list[float]]:
    starts: dict[str, float] = {}

    @tokenwire.tool
    async def fetch(url: str) -> str:
        """Fetch a URL."""
        starts[url] = time.time()
        await asyncio.sleep(tool_s)
        return "200 OK"

    model = Scripted.turns(turn_one(), turn_two(), interval_s=RATE_S)
    calls: dict[str, float] = {}
    t0 = time.perf_counter()
    await tokenwire.generate(
        model,
        "go",
        tools=[fetch],
        observers=[lambda e: calls.__setitem__(e.args["url"], e.ts) if e.type == "tool_call" else None],
    ).wait()
    wall = time.perf_counter() - t0
    return wall, [(starts[u] - calls[u]) * 1000 for u in calls]


async def after_turn(tool_s: float) -> float:
    async def fetch(url: str) -> str:
        await asyncio.sleep(tool_s)
        return "200 OK"

    t0 = time.perf_counter()
    first = await tokenwire.generate(Scripted(turn_one(), interval_s=RATE_S), "go")
    await asyncio.gather(*(fetch(c.args["url"]) for c in first.tool_calls))
    await tokenwire.generate(Scripted(turn_two(), interval_s=RATE_S), "go")
    return time.perf_counter() - t0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tool-s", type=float, default=1.0)
    args = parser.parse_args()
    eager, late, delays = [], [], []
    for _ in range(args.reps):
        wall, d = await with_tokenwire(args.tool_s)
        eager.append(wall)
        delays += d
        late.append(await after_turn(args.tool_s))
    e, la = statistics.median(eager), statistics.median(late)
    print(f"# {args.reps} reps, 50 tokens/s, 2 tool calls after 5 of 105 tokens, tools take {args.tool_s} s")
    print("| strategy | median wall s |")
    print("|---|---:|")
    print(f"| after the turn (gather) | {la:.3f} |")
    print(f"| tokenwire, at tool_call time | {e:.3f} |")
    print(f"| gain | {la - e:.3f} s ({(la - e) / la:.0%}) |")
    print(f"\ntool_call event -> tool start: median {statistics.median(delays):.3f} ms, max {max(delays):.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
