"""Server memory: bytes per retained event, and the cost of a live run nobody reads.

In process, with tracemalloc (Python allocations; what the server keeps, not the kernel's socket
buffers): runs are started on the server object behind ``create_app`` exactly as ``POST /v1/runs``
starts them.

(a) retained event: one finished run of N one-token text deltas, nobody reading it, everything
    the server keeps for it (log, frames, run bookkeeping) divided by N. Target: <= 250 bytes.
(b) live run with no readers: K runs whose provider waits forever (a model still thinking), the
    memory they hold divided by K. Target: <= 40 KB.

    python bench/server_memory.py [--events N] [--runs K]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from typing import Any

from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from tokenwire.server.app import RunBody


async def retained(n: int) -> float:
    server = create_app(providers={"burst": Scripted([f"w{i} " for i in range(n)])}).state.tokenwire
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run = await server.start(RunBody(prompt="x"))
    await run.handle.wait()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


async def live(k: int) -> float:
    config = ServerConfig(max_live_runs_per_key=k + 1, max_runs=4 * k)
    server = create_app(providers={"stall": Scripted([Stall()])}, config=config).state.tokenwire
    # one run first: imports, caches and the provider instance are not a run's cost
    warm = await server.start(RunBody(prompt="x"))
    await asyncio.sleep(0.01)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    runs: list[Any] = [await server.start(RunBody(prompt="x")) for _ in range(k)]
    await asyncio.sleep(0.05)  # every run started and waits for its provider
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for r in [warm, *runs]:
        r.handle.cancel()
        await r.handle.wait()
    return (after - before) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    per_event = asyncio.run(retained(args.events))
    per_run = asyncio.run(live(args.runs))
    print("| measure | bytes | target |\n|---|---:|---:|")
    print(f"| per retained event ({args.events:,} one-token deltas, no reader) | {per_event:,.0f} | 250 |")
    print(f"| per live run with no reader ({args.runs} runs) | {per_run:,.0f} | 40,960 |")


if __name__ == "__main__":
    main()
