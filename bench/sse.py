"""SSE serving: tokenwire against a minimal sse-starlette endpoint, and fan-out.

Servers run in their own processes (uvicorn on loopback); this process is the load client, with
raw asyncio sockets and msgspec so the client costs as little as possible.

(a) one stream: events/s delivered to one subscriber (20,000 events), and the latency from an
    event's ``ts`` to its receipt for a stream paced at 50 events/s — tokenwire vs the same
    events from an sse-starlette ``EventSourceResponse`` (what most hand-written endpoints are);
(b) fan-out: N concurrent subscribers on one stream at 50 events/s: p50/p99 latency and the
    server's RSS per connection.

    python bench/sse.py [--fanout 1000,2000] [--seconds 4]

Needs the bench extra (sse-starlette).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec

N_BURST = 20_000
RATE = 50


class Stamp(msgspec.Struct):
    ts: float = 0.0
    seq: int = 0


_decode = msgspec.json.Decoder(Stamp).decode


# -- servers (child processes) ----------------------------------------------------------------


def tokenwire_app(seconds: float) -> Any:
    from tokenwire.providers import Delay, Scripted
    from tokenwire.server import create_app

    paced = [Delay(3.0), *[f"w{i} " for i in range(int(RATE * seconds))]]
    return create_app(
        providers={
            "burst": Scripted([f"w{i} " for i in range(N_BURST)]),
            "paced": Scripted([f"w{i} " for i in range(int(RATE * seconds))], interval_s=1 / RATE),
            "fanout": Scripted(paced, interval_s=1 / RATE),  # 3 s to connect everyone, then 50 ev/s
        },
        api_keys=None,
    )


def baseline_app(seconds: float) -> Any:
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.routing import Route

    def event(seq: int) -> dict[str, Any]:
        body = {"type": "text.delta", "text": f"w{seq} ", "stream_id": "s", "seq": seq, "ts": time.time()}
        return {"id": str(seq), "event": "text.delta", "data": json.dumps(body)}

    async def burst(request: Any) -> Any:
        async def gen() -> Any:
            for i in range(N_BURST):
                yield event(i)

        return EventSourceResponse(gen())

    async def paced(request: Any) -> Any:
        async def gen() -> Any:
            for i in range(int(RATE * seconds)):
                await asyncio.sleep(1 / RATE)
                yield event(i)

        return EventSourceResponse(gen())

    return Starlette(routes=[Route("/burst", burst), Route("/paced", paced)])


def run_server(kind: str, port: int, seconds: float) -> None:
    import uvicorn

    app = tokenwire_app(seconds) if kind == "tokenwire" else baseline_app(seconds)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384, limit_concurrency=None)


def start(kind: str, port: int, seconds: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), "--seconds", str(seconds)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the load client ----------------------------------------------------------------------------------


async def subscribe(port: int, path: str, latencies: list[float] | None, connected: asyncio.Event | None = None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    if connected is not None:
        connected.set()
    count = 0
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                stamp = _decode(line[6:])
                if latencies is not None:
                    latencies.append(time.time() - stamp.ts)
                count += 1
                if b'"type":"done"' in line or b'"type":"error"' in line:
                    break
            elif line.startswith(b"0\r\n"):
                break  # end of the chunked body
    finally:
        writer.close()
    return count


async def count_frames(port: int, path: str) -> int:
    """Read a whole stream and count its events, with no per-event work on the client side."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    count = 0
    tail = b""
    try:
        while chunk := await reader.read(1 << 16):
            data = tail + chunk
            count += data.count(b"\ndata: ")
            tail = data[-8:]
            if b"\r\n0\r\n\r\n" in data[-16:]:
                break  # the chunked body ended
    finally:
        writer.close()
    return count


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def create_run(port: int, provider: str) -> tuple[str, str]:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://127.0.0.1:{port}/v1/runs", json={"prompt": "x", "provider": provider})
        info = r.json()
    return f"/v1/streams/{info['stream_id']}/events?token={info['token']}", info["stream_id"]


async def one_stream(tw_port: int, base_port: int) -> None:
    rows = []
    for name, port in (("tokenwire", tw_port), ("sse-starlette", base_port)):
        path = (await create_run(port, "burst"))[0] if name == "tokenwire" else "/burst"
        t0 = time.perf_counter()
        n = await count_frames(port, path)
        rate = n / (time.perf_counter() - t0)
        lat: list[float] = []
        path = (await create_run(port, "paced"))[0] if name == "tokenwire" else "/paced"
        await subscribe(port, path, lat)
        rows.append((name, rate, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000))
    print(
        "\n### (a) one stream\n\n| server | events/s (burst) | p50 latency ms (50 ev/s) | p99 latency ms |\n|---|---:|---:|---:|"
    )
    for name, rate, p50, p99 in rows:
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")
    print(f"\nthroughput ratio tokenwire / sse-starlette: {rows[0][1] / rows[1][1]:.1f}x")


async def fanout(port: int, pid: int, subscribers: int) -> None:
    path, _ = await create_run(port, "fanout")
    before = rss_kb(pid)
    latencies: list[float] = []
    connected = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscribe(port, path, latencies, c)) for c in connected]
    await asyncio.gather(*(c.wait() for c in connected))
    await asyncio.sleep(1.0)
    during = rss_kb(pid)
    counts = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [c for c in counts if isinstance(c, int)]
    live = [x for x in latencies if x < 60]
    print(
        f"| {subscribers:,} | {len(ok):,} | {percentile(live, 50) * 1000:.1f} | {percentile(live, 99) * 1000:.1f} | "
        f"{(during - before) / max(subscribers, 1):.1f} |"
    )


async def main(args: argparse.Namespace) -> None:
    tw_port, base_port = 18801, 18802
    tw = start("tokenwire", tw_port, args.seconds)
    base = start("baseline", base_port, args.seconds)
    try:
        print(f"# loopback, separate processes; {os.cpu_count()} cores shared by servers and client")
        await one_stream(tw_port, base_port)
        print(f"\n### (b) fan-out, one stream at {RATE} events/s for {args.seconds:.0f} s\n")
        print(
            "| subscribers | completed | p50 latency ms | p99 latency ms | server RSS KiB/connection |\n|---:|---:|---:|---:|---:|"
        )
        for n in args.fanout:
            await fanout(tw_port, tw.pid, n)
    finally:
        tw.terminate()
        base.terminate()
        tw.wait()
        base.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["tokenwire", "baseline"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fanout", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 2000])
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.seconds)
    else:
        asyncio.run(main(args))
