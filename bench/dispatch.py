"""Per-event overhead of the stream engine: inline observers and async iteration.

1,000,000 scripted text deltas through ``tokenwire.generate`` with 1, 3 and 10 inline observers,
against a bare ``async for`` loop over the same generator calling the same callbacks, in the same
run; and the same deltas read with ``async for`` from ``tokenwire.stream()`` (the iterator's cursor
on the log) against a bare ``async for`` over the generator. Prints events/s and the overhead per
event in µs (tokenwire minus bare loop). Targets: <= 0.6 µs per event over the bare loop with 3
inline observers, <= 1.0 µs for async iteration.

    python bench/dispatch.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import time
from collections.abc import AsyncIterator
from typing import Any

import tokenwire
from tokenwire.core.request import Request


class Counter:
    """A minimal observer: counts deltas and remembers the terminal event."""

    def __init__(self) -> None:
        self.n = 0
        self.terminal: Any = None

    def on_delta(self, event: Any) -> None:
        self.n += 1

    def on_done(self, event: Any) -> None:
        self.terminal = event


class Deltas:
    """A provider yielding N one-token deltas as fast as possible."""

    model = "bench"

    def __init__(self, n: int):
        self.n = n

    async def stream(self, request: Request) -> AsyncIterator[str]:
        for _ in range(self.n):
            yield "tok"


async def bare(n: int, observers: list[Counter]) -> float:
    callbacks = [o.on_delta for o in observers]
    t0 = time.perf_counter()
    async for part in Deltas(n).stream(Request([])):
        for cb in callbacks:
            cb(part)
    return time.perf_counter() - t0


async def engine(n: int, observers: list[Counter]) -> float:
    t0 = time.perf_counter()
    handle = tokenwire.generate(Deltas(n), "bench", observers=observers)
    await handle.wait()
    elapsed = time.perf_counter() - t0
    assert all(o.n == n for o in observers), "every observer must see every delta"
    return elapsed


async def bare_iteration(n: int, observers: list[Counter]) -> float:
    t0 = time.perf_counter()
    count = 0
    async for _ in Deltas(n).stream(Request([])):
        count += 1
    return time.perf_counter() - t0


async def engine_iteration(n: int, observers: list[Counter]) -> float:
    t0 = time.perf_counter()
    count = 0
    async with tokenwire.stream(Deltas(n), "bench") as s:
        async for _event in s:
            count += 1
    elapsed = time.perf_counter() - t0
    assert count == n + 2, "the iterator must see every event"
    return elapsed


def best(fn: Any, n: int, k: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        observers = [Counter() for _ in range(k)]
        gc.collect()
        times.append(asyncio.run(fn(n, observers)))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.events
    print(f"# {n:,} deltas, best of {args.repeat}; Python {platform.python_version()} on {platform.machine()}")
    print("| observers | bare loop ev/s | tokenwire ev/s | bare µs/ev | tokenwire µs/ev | overhead µs/ev |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in (1, 3, 10):
        tb = best(bare, n, k, args.repeat)
        te = best(engine, n, k, args.repeat)
        print(
            f"| {k} | {n / tb:,.0f} | {n / te:,.0f} | {tb / n * 1e6:.2f} | {te / n * 1e6:.2f} | {(te - tb) / n * 1e6:.2f} |"
        )
    tb = best(bare_iteration, n, 0, args.repeat)
    te = best(engine_iteration, n, 0, args.repeat)
    print(
        f"| async for | {n / tb:,.0f} | {n / te:,.0f} | {tb / n * 1e6:.2f} | {te / n * 1e6:.2f} | {(te - tb) / n * 1e6:.2f} |"
    )


if __name__ == "__main__":
    main()
