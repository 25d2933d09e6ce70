"""The Redis Streams event log: append rate, commands per delta, resume and cross-node latency.

Starts its own redis-server on a free port (binary on PATH). Same run:

(a) appends per second from one producer: RedisLog's batched lane vs one XADD round trip per
    event (what a naive backend does); Redis commands and round trips per 1,000 deltas;
(b) resume latency: a reader on another "node" (another RedisLog and connection pool) reading a
    finished 1,000-event stream from a random seq to the end, p50/p99;
(c) cross-node delivery latency at 1,000 events/s: producer on node A, reader tailing on node B,
    from the event's ``ts`` to its receipt, p50/p99.

    python bench/redis_log.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import time
from typing import Any

from tokenwire.events import Done, Start, TextDelta, encode
from tokenwire.redis_log import RedisLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def commands(log: RedisLog) -> tuple[int, int]:
    """(commands clients sent: the append scripts; XADDs Redis executed inside them)."""
    info: Any = await log.redis.info("commandstats")

    def calls(name: str) -> int:
        return int(info.get(f"cmdstat_{name}", {}).get("calls", 0))

    return calls("evalsha") + calls("eval"), calls("xadd")


async def append_rate(log: RedisLog, n: int) -> tuple[float, int, int]:
    """Appends/s, client commands and XADDs executed for ``n`` deltas (plus start and done)."""
    writes = 0
    original = log._write

    async def counting(key: str, batch: list[tuple[int, bytes]], *, terminal: bool) -> None:
        nonlocal writes
        writes += 1
        await original(key, batch, terminal=terminal)

    log._write = counting  # type: ignore[method-assign]
    before = await commands(log)
    sid = f"rate{random.random()}"
    writer = log.open(sid)
    t0 = time.perf_counter()
    writer.append(Start(model="m", stream_id=sid, seq=0))
    for i in range(1, n + 1):
        writer.append(TextDelta("tok", stream_id=sid, seq=i))
        if i % 256 == 0:
            await asyncio.sleep(0)  # a producer yields now and then (the engine does every 256)
    writer.append(Done(stream_id=sid, seq=n + 1))
    await writer.flush()
    elapsed = time.perf_counter() - t0
    log._write = original  # type: ignore[method-assign]
    after = await commands(log)
    # writes == batches; the script counters also hold the first call's NOSCRIPT retry
    return (n + 2) / elapsed, after[0] - before[0], after[1] - before[1]


async def naive_rate(log: RedisLog, n: int) -> float:
    key = log.key(f"naive{random.random()}")
    r = log.redis
    t0 = time.perf_counter()
    for i in range(n):
        await r.xadd(key, {b"e": encode(TextDelta("tok", stream_id="s", seq=i))}, id=f"{i}-1")
    return n / (time.perf_counter() - t0)


async def resume_latency(a: RedisLog, b: RedisLog, reps: int) -> list[float]:
    sid = f"resume{random.random()}"
    writer = a.open(sid)
    writer.append(Start(model="m", stream_id=sid, seq=0))
    for i in range(1, 1000):
        writer.append(TextDelta("tok", stream_id=sid, seq=i))
    writer.append(Done(stream_id=sid, seq=1000))
    await writer.flush()
    out = []
    for _ in range(reps):
        from_seq = random.randint(0, 999)
        t0 = time.perf_counter()
        n = sum([1 async for _ in b.read(sid, from_seq)])
        out.append(time.perf_counter() - t0)
        assert n == 1001 - from_seq
    return out


async def cross_node(a: RedisLog, b: RedisLog, seconds: float, rate: int) -> list[float]:
    sid = f"x{random.random()}"
    writer = a.open(sid)
    writer.append(Start(model="m", stream_id=sid, seq=0, ts=time.time()))
    await writer.flush()
    latencies: list[float] = []

    async def read() -> None:
        async for event in b.read(sid, 1):
            if isinstance(event, TextDelta):
                latencies.append(time.time() - event.ts)

    reader = asyncio.create_task(read())
    n = int(seconds * rate)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        writer.append(TextDelta("tok", stream_id=sid, seq=i, ts=time.time()))
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
    writer.append(Done(stream_id=sid, seq=n + 1, ts=time.time()))
    await writer.flush()
    await asyncio.wait_for(reader, 10)
    return latencies


async def main(args: argparse.Namespace) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.3)
        url = f"redis://127.0.0.1:{port}/0"
        a, b = RedisLog(url, prefix="bench"), RedisLog(url, prefix="bench")
        rate, sent, xadds = await append_rate(a, args.events)
        naive = await naive_rate(a, min(args.events, 20_000))
        print(f"# {args.events:,} deltas, redis-server {port} on loopback, 2 cores shared")
        print("\n| measure | value |\n|---|---:|")
        print(f"| batched appends/s (one producer) | {rate:,.0f} |")
        print(f"| one XADD round trip per event, appends/s | {naive:,.0f} |")
        print(f"| batched / one per event | {rate / naive:.1f}x |")
        per_k = 1000 / (args.events + 2)
        print(f"| commands (round trips) sent to Redis per 1,000 deltas | {sent * per_k:.1f} |")
        print(f"| XADDs Redis executed per 1,000 deltas (inside those commands) | {xadds * per_k:,.0f} |")
        resume = await resume_latency(a, b, 200)
        p50, p99 = pct(resume, 50) * 1e3, pct(resume, 99) * 1e3
        print(f"| resume from a random seq of 1,000, p50 / p99 ms | {p50:.2f} / {p99:.2f} |")
        lat = await cross_node(a, b, args.seconds, 1000)
        p50, p99 = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
        print(f"| cross-node delivery at 1,000 ev/s, p50 / p99 ms | {p50:.2f} / {p99:.2f} |")
        await a.aclose()
        await b.aclose()
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args()))
