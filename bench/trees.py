"""Run trees: what a child run costs, and what reading a tree on one connection costs.

1. **A child run vs the same work inline.** The same events (``--children`` x ``--deltas`` text
   deltas) produced three ways, on a memory log: one root run streaming all of them (inline);
   one root run whose one tool call starts ``--children`` child runs in parallel, each streaming
   its share (sub-agents); the same tree read with :func:`tokenwire.log.follow_tree` as it runs.
   Prints events/s and µs per event, and the fixed cost of one child run (start, parent link,
   marks, usage roll-up).
2. **A tree subscription vs separate subscriptions.** A finished tree of ``--fanout`` children
   (each ``--deltas`` events) is served as SSE bytes through the server's own bodies: once as
   ``?tree=1`` (:func:`tokenwire.server.streaming.tree_frames`, one connection, a cursor per
   frame) and once as ``--fanout + 1`` separate stream reads
   (:func:`tokenwire.server.streaming.log_frames`). Prints server CPU µs per delivered event.

    python bench/trees.py [--children 8] [--deltas 200] [--fanout 100] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import tokenwire
from tokenwire.events import ToolCall
from tokenwire.log import MemoryLog, TreeCursor, follow_tree
from tokenwire.providers import Scripted
from tokenwire.server import RunService
from tokenwire.server.streaming import log_frames, tree_frames


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def fan_out(children: int, deltas: int) -> tuple[Any, Any]:
    """A lead whose one ``fan`` call starts ``children`` child runs of ``deltas`` deltas each."""

    @tokenwire.tool
    async def fan() -> int:
        """Start the children."""
        runs = [tokenwire.generate(Scripted(words(deltas)), "go") for _ in range(children)]
        return sum([len((await r).text) for r in runs])

    lead = Scripted.turns([ToolCall(call_id="f", name="fan", args={})], ["ok"])
    return lead, fan


def wide(children: int) -> tokenwire.ToolOptions:
    return tokenwire.ToolOptions(max_children=children)


async def inline(children: int, deltas: int) -> tuple[float, int]:
    log = MemoryLog(max_events=children * deltas + 100)
    t0 = time.perf_counter()
    handle = tokenwire.generate(Scripted(words(children * deltas)), "go", log=log)
    await handle
    elapsed = time.perf_counter() - t0
    return elapsed, len([1 async for _ in log.read(handle.stream_id, 0, follow=False)])


async def tree(children: int, deltas: int, *, follow: bool) -> tuple[float, int]:
    log = MemoryLog(max_events=deltas + 100)
    lead, fan = fan_out(children, deltas)
    t0 = time.perf_counter()
    handle = tokenwire.generate(lead, "go", tools=[fan], tool_options=wide(children), log=log)
    count = 0
    if follow:
        async for _ in follow_tree(log, handle.stream_id):
            count += 1
    await handle
    elapsed = time.perf_counter() - t0
    if not follow:
        count = len([1 async for _ in follow_tree(log, handle.stream_id)])
    return elapsed, count


async def served(fanout: int, deltas: int, reps: int) -> tuple[float, float, int]:
    """Server CPU µs per delivered event: one tree subscription vs a subscription per stream."""
    log = MemoryLog(max_events=deltas + 100)
    lead, fan = fan_out(fanout, deltas)
    service = RunService(providers={"lead": lead}, tools=[fan], log=log)
    root = tokenwire.generate(lead, "go", tools=[fan], tool_options=wide(fanout), log=log)
    await root
    streams = sorted({e.stream_id async for e in follow_tree(log, root.stream_id)})
    events = len([1 async for _ in follow_tree(log, root.stream_id)])
    one, many = [], []
    for _ in range(reps):
        t0 = time.process_time()
        size = sum([len(w) async for w in tree_frames(service, TreeCursor(root.stream_id))])
        one.append((time.process_time() - t0) / events * 1e6)
        t0 = time.process_time()
        size2 = 0
        for sid in streams:
            size2 += sum([len(w) async for w in log_frames(service, sid, 0)])
        many.append((time.process_time() - t0) / events * 1e6)
    if not (size and size2 and events > fanout * deltas):
        raise SystemExit(f"the tree was not whole: {events} events, {size} and {size2} bytes")
    await service.shutdown(0)
    return statistics.median(one), statistics.median(many), events


async def main(args: argparse.Namespace) -> None:
    n = args.children * args.deltas
    rows = {"inline": [], "children": [], "children, followed": []}
    for _ in range(args.reps):
        rows["inline"].append(await inline(args.children, args.deltas))
        rows["children"].append(await tree(args.children, args.deltas, follow=False))
        rows["children, followed"].append(await tree(args.children, args.deltas, follow=True))
    print(f"{args.children} children x {args.deltas} deltas ({n} text deltas), median of {args.reps}")
    per: dict[str, float] = {}
    for name, runs in rows.items():
        elapsed = statistics.median(e for e, _ in runs)
        events = runs[0][1]
        per[name] = elapsed
        print(
            f"  {name:<20} {events:>6} events {events / elapsed:>10,.0f} events/s  {elapsed / events * 1e6:6.2f} µs per event"
        )
    extra = (per["children"] - per["inline"]) / args.children * 1e6
    print(f"  one child run's fixed cost: {extra:,.0f} µs (start, parent link, marks, usage roll-up)")
    one, many, events = await served(args.fanout, args.deltas, args.reps)
    print(f"tree of {args.fanout} children, {events} events, served as SSE bytes (server CPU per delivered event)")
    print(f"  one ?tree=1 subscription       {one:6.2f} µs")
    print(f"  {args.fanout + 1} separate subscriptions   {many:6.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=8)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
