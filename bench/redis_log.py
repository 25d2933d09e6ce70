"""The Redis Streams event log: append rate, commands per delta, resume and cross-node latency,
on one instance and on a Redis Cluster of three masters (with a replica each).

Starts its own redis-server(s) on free ports (binaries on PATH). Same run, for each backend:

(a) appends per second from one producer: RedisLog's batched lane vs one XADD round trip per
    event (what a naive backend does); Redis commands and round trips per 1,000 deltas;
(b) resume latency: a reader on another "node" (another RedisLog and connection pool) reading a
    finished 1,000-event stream from a random seq to the end, p50/p99;
(c) cross-node delivery latency at 1,000 events/s: producer on node A, reader tailing on node B,
    from the event's ``ts`` to its receipt, p50/p99;
(d) scale-out: ``--procs`` producer processes, each writing ``--streams`` streams at once, as
    fast as they can: appends/s, Redis CPU per append, and the busiest master's share of the
    Redis CPU (the cluster's capacity is bounded by its busiest master: with the load spread
    evenly over three masters on three free cores it is about 1 / that share of one instance's);
(e) fan-out (one instance): one run read by 1,000 SSE readers of ``tokenwire serve --log
    redis://… --workers N`` for N = 1 and 2 (real processes, raw-socket readers in this process):
    live delivery latency p50/p99, server CPU per delivered event, Redis XREADs per second.

    python bench/redis_log.py [--events N] [--fanout READERS] [--procs P] [--streams S]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from rawsse import sse_request
from tokenwire.events import Done, Start, TextDelta, encode
from tokenwire.log.redis import RedisLog
from tokenwire.testing.redis import RedisCluster, free_port, start_redis


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
    """(commands clients sent: the append scripts; XADDs Redis executed inside them), summed
    over every master of a cluster."""
    r: Any = await log.client()
    if log.cluster:
        replies = (await r.info("commandstats", target_nodes=r.PRIMARIES)).values()
    else:
        replies = [await r.info("commandstats")]

    def calls(name: str) -> int:
        return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for info in replies)

    return calls("evalsha") + calls("eval"), calls("xadd")


async def append_rate(log: RedisLog, n: int) -> tuple[float, int, int]:
    """Appends/s, client commands and XADDs executed for ``n`` deltas (plus start and done)."""
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
    after = await commands(log)
    # the script counters also hold the first call's NOSCRIPT retry
    return (n + 2) / elapsed, after[0] - before[0], after[1] - before[1]


async def produce(url: str, streams: int, events: int, start_at: float) -> dict[str, float]:
    """One producer process of the scale-out run: ``streams`` writers at once, ``events`` each."""
    log = RedisLog(url, prefix="scale")
    await log.client()
    ids = [f"p{os.getpid()}-{i}" for i in range(streams)]
    writers = [log.open(sid) for sid in ids]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    for w, sid in zip(writers, ids, strict=True):
        w.append(Start(model="m", stream_id=sid, seq=0))
    for i in range(1, events + 1):
        for w, sid in zip(writers, ids, strict=True):
            w.append(TextDelta("tok", stream_id=sid, seq=i))
        if i % 64 == 0:
            await asyncio.sleep(0)
    for w, sid in zip(writers, ids, strict=True):
        w.append(Done(stream_id=sid, seq=events + 1))
    await asyncio.gather(*(w.flush() for w in writers))
    elapsed = time.perf_counter() - t0
    await log.aclose()
    return {"events": streams * (events + 2), "elapsed": elapsed}


def scale_out(url: str, redis_pids: list[int], procs: int, streams: int, events: int) -> tuple[float, float, float]:
    """(appends/s over all producer processes, Redis CPU µs per append, busiest master's share)."""
    start_at = time.time() + 3.0  # every process connected before the first append
    cmd = [sys.executable, __file__, "--produce", url, "--streams", str(streams), "--events", str(events)]
    cpu0 = [proc_cpu_s(pid) for pid in redis_pids]
    children = [
        subprocess.Popen([*cmd, "--start-at", str(start_at)], stdout=subprocess.PIPE, text=True) for _ in range(procs)
    ]
    results = [json.loads(c.communicate()[0]) for c in children]
    cpu = [proc_cpu_s(pid) - c0 for pid, c0 in zip(redis_pids, cpu0, strict=True)]
    total = sum(r["events"] for r in results)
    rate = total / max(r["elapsed"] for r in results)
    return rate, sum(cpu) / total * 1e6, max(cpu) / max(sum(cpu), 1e-9)


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


async def measure(
    name: str, url: str, redis_pids: list[int], args: argparse.Namespace, *, scale_only: bool = False
) -> None:
    if scale_only:
        print(f"\n### {name}\n\n| measure | value |\n|---|---:|")
        await scale(url, redis_pids, args)
        return
    a, b = RedisLog(url, prefix="bench"), RedisLog(url, prefix="bench")
    gc.collect()
    gc.freeze()  # as `tokenwire serve` does after start-up: full collections skip the start-up heap
    rate, sent, xadds = await append_rate(a, args.events)
    naive = await naive_rate(a, min(args.events, 20_000))
    print(f"\n### {name}: {args.events:,} deltas from one producer, loopback, 2 cores shared\n")
    print("| measure | value |\n|---|---:|")
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
    await scale(url, redis_pids, args)


async def scale(url: str, redis_pids: list[int], args: argparse.Namespace) -> None:
    scaled, cpu_us, share = await asyncio.to_thread(
        scale_out, url, redis_pids, args.procs, args.streams, args.events // max(args.streams, 1)
    )
    print(f"| scale-out: {args.procs} processes x {args.streams} streams, appends/s | {scaled:,.0f} |")
    print(f"| scale-out: Redis CPU µs per append (all masters) | {cpu_us:.2f} |")
    print(f"| scale-out: busiest master's share of the Redis CPU | {share:.0%} |")


async def main(args: argparse.Namespace) -> None:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    proc = await asyncio.to_thread(start_redis, port)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        await measure("one instance", url, [proc.pid], args)
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
    if args.no_cluster:
        return
    with tempfile.TemporaryDirectory() as workdir:
        for replicas in (1, 0):
            os.makedirs(f"{workdir}/r{replicas}")
            cluster = await asyncio.to_thread(RedisCluster, f"{workdir}/r{replicas}", replicas=replicas)
            try:
                masters = [cluster.procs[p].pid for p in cluster.ports[:3]]  # created as the first three
                name = f"cluster of 3 masters (+{3 * replicas} replicas)"
                await measure(name, cluster.url, masters, args, scale_only=replicas == 0)
            finally:
                cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fanout", type=int, default=1000, help="SSE readers of one run (0: skip)")
    parser.add_argument("--words", type=int, default=200, help="deltas of the fan-out run (50 per second)")
    parser.add_argument("--procs", type=int, default=2, help="producer processes of the scale-out run")
    parser.add_argument("--streams", type=int, default=96, help="streams per producer process")
    parser.add_argument("--no-cluster", action="store_true", help="one instance only")
    parser.add_argument("--produce", help=argparse.SUPPRESS)  # a scale-out producer process: its Redis URL
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.produce:
        print(json.dumps(asyncio.run(produce(parsed.produce, parsed.streams, parsed.events, parsed.start_at))))
    else:
        asyncio.run(main(parsed))
