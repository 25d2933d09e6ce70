"""SSE serving: tokenwire against a minimal sse-starlette endpoint, and fan-out.

Servers run in their own processes (uvicorn on loopback); this process is the load client, with
raw asyncio sockets and msgspec so the client costs as little as possible.

(a) one stream: events/s delivered to one subscriber (20,000 events) from a provider that never
    awaits ("burst") and from one that yields to the event loop between deltas ("yielding", what
    a real model does), and the latency from an event's ``ts`` to its receipt for a stream paced
    at 50 events/s — tokenwire vs the same events from an sse-starlette ``EventSourceResponse``
    (what most hand-written endpoints are) and from a plain Starlette endpoint whose producer task
    queues frames and whose response joins every queued frame into one write ("coalescing");
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

from rawsse import answering, coalesced, sse_request

N_BURST = 20_000
RATE = 50


class Stamp(msgspec.Struct):
    ts: float = 0.0
    seq: int = 0


_decode = msgspec.json.Decoder(Stamp).decode


# -- servers (child processes) ----------------------------------------------------------------


class Yielding:
    """A provider that yields to the event loop between deltas, as a real model's stream does."""

    model = "yielding"

    def __init__(self, n: int):
        self.n = n

    async def stream(self, request: Any) -> Any:
        for i in range(self.n):
            await asyncio.sleep(0)
            yield f"w{i} "


def tokenwire_app(seconds: float) -> Any:
    from tokenwire.providers import Delay, Scripted
    from tokenwire.server import create_app

    paced = [Delay(3.0), *[f"w{i} " for i in range(int(RATE * seconds))]]
    return create_app(
        providers={
            "burst": Scripted([f"w{i} " for i in range(N_BURST)]),
            "yielding": Yielding(N_BURST),
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

    async def coalescing(request: Any) -> Any:
        """Plain Starlette: a producer task queues frames (yielding between them); the response
        joins every queued frame into one write."""
        from starlette.responses import StreamingResponse

        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def produce() -> None:
            for i in range(N_BURST):
                e = event(i)
                queue.put_nowait(f"id: {e['id']}\nevent: {e['event']}\ndata: {e['data']}\n\n".encode())
                await asyncio.sleep(0)
            queue.put_nowait(None)

        async def body() -> Any:
            task = asyncio.get_running_loop().create_task(produce())
            try:
                while True:
                    frames = [await queue.get()]
                    while not queue.empty():
                        frames.append(queue.get_nowait())
                    done = frames[-1] is None
                    yield b"".join(f for f in frames if f is not None)
                    if done:
                        return
            finally:
                task.cancel()

        return StreamingResponse(body(), media_type="text/event-stream")

    subscribers: list[asyncio.Queue[bytes | None]] = []
    fanout_started: list[bool] = []

    async def broadcast() -> None:
        await asyncio.sleep(3.0)  # as tokenwire's fan-out run: 3 s to connect everyone
        for i in range(int(RATE * seconds)):
            e = event(i)
            frame = f"id: {e['id']}\nevent: {e['event']}\ndata: {e['data']}\n\n".encode()
            for q in subscribers:
                q.put_nowait(frame)
            await asyncio.sleep(1 / RATE)
        done = b'event: done\ndata: {"type":"done","ts":0,"seq":0}\n\n'
        for q in subscribers:
            q.put_nowait(done)
            q.put_nowait(None)

    async def fanout(request: Any) -> Any:
        """Plain Starlette fan-out: one broadcast task, a queue per subscriber, coalesced writes."""
        from starlette.responses import StreamingResponse

        if not fanout_started:
            fanout_started.append(True)
            asyncio.get_running_loop().create_task(broadcast())
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        subscribers.append(queue)

        return StreamingResponse(coalesced(queue), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/burst", burst),
            Route("/paced", paced),
            Route("/coalescing", coalescing),
            Route("/fanout", fanout),
        ]
    )


def run_server(kind: str, port: int, seconds: float) -> None:
    import uvicorn

    app = tokenwire_app(seconds) if kind == "tokenwire" else baseline_app(seconds)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384, limit_concurrency=None)


def start(kind: str, port: int, seconds: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--seconds", str(seconds)]
    return answering(subprocess.Popen(cmd), port, kind)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the load client ----------------------------------------------------------------------------------


async def subscribe(port: int, path: str, latencies: list[float] | None, connected: asyncio.Event | None = None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(sse_request(path))
    await writer.drain()
    if connected is not None:
        connected.set()
    count = 0
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                stamp = _decode(line[6:])
                # ``start`` was appended when the run was created, before anyone connected: history,
                # not a live event's latency.
                if latencies is not None and b'"type":"start"' not in line:
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
    writer.write(sse_request(path))
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
    async def rate(port: int, path: str) -> float:
        t0 = time.perf_counter()
        n = await count_frames(port, path)
        return n / (time.perf_counter() - t0)

    rows = []
    for name, port in (("tokenwire", tw_port), ("sse-starlette", base_port)):
        burst = await rate(port, (await create_run(port, "burst"))[0] if name == "tokenwire" else "/burst")
        lat: list[float] = []
        path = (await create_run(port, "paced"))[0] if name == "tokenwire" else "/paced"
        await subscribe(port, path, lat)
        rows.append((name, burst, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000))
    print(
        "\n### (a) one stream\n\n| server | events/s (burst) | p50 latency ms (50 ev/s) | p99 latency ms |\n|---|---:|---:|---:|"
    )
    for name, r, p50, p99 in rows:
        print(f"| {name} | {r:,.0f} | {p50:.2f} | {p99:.2f} |")
    print(f"\nthroughput ratio tokenwire / sse-starlette: {rows[0][1] / rows[1][1]:.1f}x")
    tw = [await rate(tw_port, (await create_run(tw_port, "yielding"))[0]) for _ in range(3)]
    plain = [await rate(base_port, "/coalescing") for _ in range(3)]
    print("\n| provider yields between deltas | events/s (best of 3) |\n|---|---:|")
    print(f"| tokenwire | {max(tw):,.0f} |\n| plain Starlette, coalescing writes | {max(plain):,.0f} |")
    print(f"\nratio tokenwire / plain coalescing: {max(tw) / max(plain):.2f}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fanout(name: str, port: int, pid: int, subscribers: int) -> None:
    path = (await create_run(port, "fanout"))[0] if name == "tokenwire" else "/fanout"
    before = rss_kb(pid)
    cpu0 = cpu_s(pid)
    latencies: list[float] = []
    connected = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscribe(port, path, latencies, c)) for c in connected]
    await asyncio.gather(*(c.wait() for c in connected))
    await asyncio.sleep(1.0)
    during = rss_kb(pid)
    counts = await asyncio.gather(*tasks, return_exceptions=True)
    cpu = cpu_s(pid) - cpu0
    ok = [c for c in counts if isinstance(c, int)]
    live = [x for x in latencies if x < 60]
    delivered = sum(ok)
    print(
        f"| {name} | {subscribers:,} | {len(ok):,} | {percentile(live, 50) * 1000:.1f} | "
        f"{percentile(live, 99) * 1000:.1f} | {(during - before) / max(subscribers, 1):.1f} | "
        f"{cpu / max(delivered, 1) * 1e6:.2f} |"
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
            "| server | subscribers | completed | p50 latency ms | p99 latency ms | server RSS KiB/connection "
            "| server CPU µs per delivered event |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        for n in args.fanout:
            # Each server process starts fresh for a fan-out: no history from the runs above.
            tw.terminate()
            tw.wait()
            tw = start("tokenwire", tw_port, args.seconds)
            await fanout("tokenwire", tw_port, tw.pid, n)
        # The baseline's broadcast runs once per server process: one fan-out size, started fresh.
        base.terminate()
        base.wait()
        base = start("baseline", base_port, args.seconds)
        await fanout("plain coalescing", base_port, base.pid, args.fanout[0])
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
