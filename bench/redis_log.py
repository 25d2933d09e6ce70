"""The Redis Streams event log: append rate, commands per delta, resume and cross-node latency.

Starts its own redis-server on a free port (binary on PATH). Same run:

(a) appends per second from one producer: RedisLog's batched lane vs one XADD round trip per
    event (what a naive backend does); Redis commands and round trips per 1,000 deltas;
(b) resume latency: a reader on another "node" (another RedisLog and connection pool) reading a
    finished 1,000-event stream from a random seq to the end, p50/p99;
(c) cross-node delivery latency at 1,000 events/s: producer on node A, reader tailing on node B,
    from the event's ``ts`` to its receipt, p50/p99;
(d) fan-out: one run read by 1,000 SSE readers of ``tokenwire serve --log redis://… --workers N``
    for N = 1 and 2 (real processes, raw-socket readers in this process): live delivery latency
    p50/p99, server CPU per delivered event, Redis XREADs per second.

    python bench/redis_log.py [--events N] [--fanout READERS]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from rawsse import sse_request
from tokenwire.events import Done, Start, TextDelta, encode
from tokenwire.log.redis import RedisLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children that are still running."""
    total = 0.0
    pids = [pid]
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                pids.append(int(child.name))
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def sse_reader(port: int, path: str, latencies: list[float], connected: asyncio.Event) -> int:
    """A raw-socket SSE reader: counts events, records the latency of those that arrive live."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(sse_request(path))
    await writer.drain()
    connected.set()
    since = time.time()
    count = 0
    decoder = msgspec.json.Decoder(_Stamp)
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                ts = decoder.decode(line[6:]).ts
                if ts > since:  # live, not history read at connect
                    latencies.append(time.time() - ts)
                count += 1
                if b'"type":"done"' in line or b'"type":"error"' in line:
                    break
    finally:
        writer.close()
    return count


class _Stamp(msgspec.Struct):
    ts: float


async def fanout(url: str, redis_port: int, workers: int, readers: int, words: int) -> str:
    """One run of ``words`` deltas at 50/s read by ``readers`` SSE connections over ``workers``."""
    port = free_port()
    key = "bench-key-123456"
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--provider", "scripted", "--port", str(port)]
    cmd += ["--api-key", key, "--log", url, "--workers", str(workers), "--log-level", "warning"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(200):
                try:
                    await http.get(f"http://127.0.0.1:{port}/")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            probe = aioredis_client(redis_port)
            xread0 = await xreads(probe)
            cpu0 = proc_cpu_s(server.pid)
            t0 = time.perf_counter()
            r = await http.post(
                f"http://127.0.0.1:{port}/v1/runs",
                json={"prompt": " ".join(["w"] * words)},
                headers={"Authorization": f"Bearer {key}"},
            )
            info = r.json()
        path = f"/v1/streams/{info['stream_id']}/events?token={info['read_token']}"
        latencies: list[float] = []
        connected = [asyncio.Event() for _ in range(readers)]
        tasks = [asyncio.create_task(sse_reader(port, path, latencies, c)) for c in connected]
        counts = await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - t0
        cpu = proc_cpu_s(server.pid) - cpu0
        xread_rate = (await xreads(probe) - xread0) / elapsed
        await probe.aclose()
    finally:
        server.terminate()
        server.wait(30)
    ok = [c for c in counts if isinstance(c, int)]
    delivered = sum(ok)
    return (
        f"| {workers} | {readers:,} | {len(ok):,} | {pct(latencies, 50) * 1e3:.1f} | {pct(latencies, 99) * 1e3:.1f} | "
        f"{cpu / max(delivered, 1) * 1e6:.1f} | {xread_rate:.0f} |"
    )


def aioredis_client(port: int) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis(port=port)


async def xreads(client: Any) -> int:
    info = await client.info("commandstats")
    return int(info.get("cmdstat_xread", {}).get("calls", 0))


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def commands(log: RedisLog) -> tuple[int, int]:
    """(commands clients sent: the append scripts; XADDs Redis executed inside them)."""
    info: Any = await (await log.client()).info("commandstats")

    def calls(name: str) -> int:
        return int(info.get(f"cmdstat_{name}", {}).get("calls", 0))

    return calls("evalsha") + calls("eval"), calls("xadd")


async def append_rate(log: RedisLog, n: int) -> tuple[float, int, int]:
    """Appends/s, client commands and XADDs executed for ``n`` deltas (plus start and done)."""
    writes = 0
    original = log._write

    async def counting(key: str, batch: list[tuple[int, bytes]], *, terminal: bool) -> bool:
        nonlocal writes
        writes += 1
        return await original(key, batch, terminal=terminal)

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
    r = await log.client()
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
        gc.collect()
        gc.freeze()  # as `tokenwire serve` does after start-up: full collections skip the start-up heap
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
        if args.fanout:
            print(f"\n### fan-out: one run (50 ev/s, {args.words} deltas) to {args.fanout:,} SSE readers\n")
            print(
                "| workers | readers | completed | live p50 ms | live p99 ms | server CPU µs per delivered event "
                "| Redis XREAD/s |\n|---:|---:|---:|---:|---:|---:|---:|"
            )
            for workers in (1, 2):
                print(await fanout(url, port, workers, args.fanout, args.words))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fanout", type=int, default=1000, help="SSE readers of one run (0: skip)")
    parser.add_argument("--words", type=int, default=200, help="deltas of the fan-out run (50 per second)")
    asyncio.run(main(parser.parse_args()))
