"""Many streams on one connection against one connection per stream, in one run: 100 runs paced
at 20 events/s each, read (a) over one ``POST /v1/events`` SSE connection, (b) over one WebSocket
subscription of all of them, (c) over 100 SSE connections, one a stream (the baseline).

Reported per way: delivery p50/p99 (an event's ``ts`` to its receipt, for the events appended
after the reader connected: the backlog before is a replay) and the server's CPU per
delivered event (the server is a process of its own; this one is the load client: raw sockets
for SSE, ``websockets`` for the WebSocket, acking every 128 events). The issue's goal: p99 at most
50 ms on one connection.

    python bench/multiplex.py [--streams 100] [--events 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import websockets

from rawsse import sse_request
from transports import KEY, cpu_s, create_run, free_port, pct

_Stamp = msgspec.defstruct("_Stamp", [("ts", float), ("type", str)])
_decode = msgspec.json.Decoder(_Stamp).decode
TERMINAL = ("done", "error")


def serve(port: int, events: int) -> None:
    import uvicorn

    from tokenwire.providers import Scripted
    from tokenwire.server import ServerConfig, create_app

    providers = {"paced": Scripted([f"tok{i} " for i in range(events)], interval_s=0.05)}
    config = ServerConfig(max_connections=20_000, max_live_runs_per_key=10_000, abandon_after_s=None)
    app = create_app(providers=providers, api_keys=[KEY], config=config)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384, lifespan="on")


def live(stamp: Any, since: float) -> bool:
    """An event appended after the reader connected (the backlog before is a replay, not delivery)."""
    return stamp.type != "start" and stamp.ts >= since


async def read_lines(reader: asyncio.StreamReader, streams: int, latencies: list[float]) -> int:
    """SSE frames' ``data:`` lines (a chunked body: size lines fall between frames) until
    ``streams`` terminal events."""
    count = ended = 0
    since = time.time()
    while ended < streams and (line := await reader.readline()):
        if line.startswith(b"data: {"):
            stamp = _decode(line[6:])
            count += 1
            if live(stamp, since):
                latencies.append(time.time() - stamp.ts)
            ended += stamp.type in TERMINAL
    return count


async def one_sse_connection(port: int, runs: list[dict[str, Any]], latencies: list[float]) -> int:
    body = json.dumps({"streams": [{"stream_id": r["stream_id"], "token": r["read_token"]} for r in runs]}).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        return await read_lines(reader, len(runs), latencies)
    finally:
        writer.close()


async def sse_per_stream(port: int, runs: list[dict[str, Any]], latencies: list[float]) -> int:
    async def one(run: dict[str, Any]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(sse_request(f"/v1/streams/{run['stream_id']}/events?token={run['read_token']}"))
        await writer.drain()
        try:
            return await read_lines(reader, 1, latencies)
        finally:
            writer.close()

    return sum(await asyncio.gather(*(one(r) for r in runs)))


async def one_websocket(port: int, runs: list[dict[str, Any]], latencies: list[float]) -> int:
    count = ended = 0
    streams = [{"stream_id": r["stream_id"], "token": r["read_token"]} for r in runs]
    since = time.time()
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "streams": streams, "window": 1024}))
        root = json.loads(await ws.recv())["stream_id"]
        async for message in ws:
            stamp = _decode(message)
            if live(stamp, since):
                latencies.append(time.time() - stamp.ts)
            count += 1
            ended += stamp.type in TERMINAL
            if count % 128 == 0:
                await ws.send(json.dumps({"op": "ack", "stream_id": root, "seq": count - 1}))
            if ended == len(runs):
                break
    return count


def start_server(events: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(events)])
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5)
            return proc, port
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


async def main(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int) -> None:
    ways = {
        "one SSE connection (POST /v1/events)": one_sse_connection,
        "one WebSocket subscription (streams)": one_websocket,
        f"{args.streams} SSE connections, one a stream": sse_per_stream,
    }
    rate = 20
    print(f"# {args.streams} runs at {rate} events/s each ({args.events} deltas), read live")
    print("| read over | delivered | p50 ms | p99 ms | server CPU µs per delivered event |")
    print("|---|---:|---:|---:|---:|")
    for name, read in ways.items():
        runs = list(await asyncio.gather(*(create_run(port, "paced") for _ in range(args.streams))))
        latencies: list[float] = []
        before = cpu_s(proc.pid)
        delivered = await read(port, runs, latencies)
        cpu = cpu_s(proc.pid) - before
        p50, p99 = pct(latencies, 50), pct(latencies, 99)
        print(f"| {name} | {delivered:,} | {p50:.2f} | {p99:.2f} | {cpu / max(delivered, 1) * 1e6:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    proc, port = start_server(args.events)
    try:
        asyncio.run(main(args, proc, port))
    finally:
        proc.terminate()
        proc.wait(30)
