"""The same runs over SSE, WebSocket and gRPC, in one run: one stream's events/s, fan-out of one
run to N subscribers, and bytes per event on the wire.

The server is one real process (the app on uvicorn with the gRPC service beside it, as
``tokenwire serve --grpc-port`` runs it); this process is the load client: raw sockets for SSE
(no client library in the way), ``websockets`` for WebSocket (acks every 128 events), ``grpc.aio``
for gRPC (the generated stub, messages decoded). Every reader reads the same log.

(a) one stream: a 20,000-delta run read to the end by one subscriber per transport;
(b) fan-out: one run paced at 50 events/s (200 deltas) read by N subscribers per transport at
    once: p50/p99 latency from an event's ``ts`` to its receipt, and the server's CPU per
    delivered event;
(c) bytes per event: what each transport carries per text delta (SSE frame; WebSocket message;
    gRPC message with its 5-byte length prefix), without TCP/TLS/HTTP-2 framing.

    python bench/transports.py [--subscribers 1000] [--events 20000]
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

import grpc
import httpx
import msgspec
import websockets

from rawsse import sse_request
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.grpc import tokenwire_pb2_grpc as pb_grpc

KEY = "bench-key-123456"


class _Stamp(msgspec.Struct):
    ts: float
    type: str


_decode = msgspec.json.Decoder(_Stamp).decode


def serve(port: int, grpc_port: int, events: int) -> None:
    import uvicorn

    from tokenwire.log import MemoryLog
    from tokenwire.providers import Scripted
    from tokenwire.server import ServerConfig, create_app

    providers = {
        "burst": Scripted([f"tok{i} " for i in range(events)]),
        "paced": Scripted([f"tok{i} " for i in range(200)], interval_s=0.02),
    }
    config = ServerConfig(grpc_port=grpc_port, max_connections=20_000, max_lag_events=1_000_000, abandon_after_s=None)
    app = create_app(providers=providers, api_keys=[KEY], log=MemoryLog(max_events=events + 10), config=config)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384, lifespan="on")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_run(port: int, provider: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"http://127.0.0.1:{port}/v1/runs",
            json={"prompt": "x", "provider": provider},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        info: dict[str, Any] = r.json()
        return info


# -- one reader per transport -------------------------------------------------------------------------


async def read_sse(port: int, info: dict[str, Any], latencies: list[float] | None, sizes: list[int]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    path = f"/v1/streams/{info['stream_id']}/events?token={info['read_token']}"
    writer.write(sse_request(path))
    await writer.drain()
    count, frame = 0, 0
    try:
        while line := await reader.readline():
            frame += len(line)
            if line.startswith(b"data: "):
                stamp = _decode(line[6:])
                count += 1
                if latencies is not None and stamp.type != "start":
                    latencies.append(time.time() - stamp.ts)
                if stamp.type == "text.delta" and len(sizes) < 100:
                    sizes.append(frame + 1)  # the frame's lines and its blank line
                if stamp.type in ("done", "error"):
                    break
            elif line == b"\n":
                frame = 0
    finally:
        writer.close()
    return count


async def read_ws(port: int, info: dict[str, Any], latencies: list[float] | None, sizes: list[int]) -> int:
    count = 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "stream_id": info["stream_id"], "token": info["read_token"]}))
        async for message in ws:
            stamp = _decode(message)
            count += 1
            if latencies is not None and stamp.type != "start":
                latencies.append(time.time() - stamp.ts)
            if stamp.type == "text.delta" and len(sizes) < 100:
                sizes.append(len(message))
            if count % 128 == 0:
                seq = json.loads(message)["seq"]
                await ws.send(json.dumps({"op": "ack", "stream_id": info["stream_id"], "seq": seq}))
            if stamp.type in ("done", "error"):
                break
    return count


async def read_grpc(stub: Any, info: dict[str, Any], latencies: list[float] | None, sizes: list[int]) -> int:
    count = 0
    call = stub.Subscribe(pb.SubscribeRequest(stream_id=info["stream_id"], token=info["read_token"]))
    async for event in call:
        count += 1
        kind = event.WhichOneof("kind")
        if latencies is not None and kind != "start":
            latencies.append(time.time() - event.ts)
        if kind == "text_delta" and len(sizes) < 100:
            sizes.append(event.ByteSize() + 5)  # gRPC's length-prefixed message
        if kind in ("done", "error"):
            break
    return count


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0


def start_server(events: int) -> tuple[subprocess.Popen[bytes], int, int]:
    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(grpc_port), str(events)])
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5)
            return proc, port, grpc_port
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


async def main(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, grpc_port: int) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = pb_grpc.TokenwireStub(channel)  # type: ignore[no-untyped-call]
    readers = {
        "SSE": lambda info, lat, sizes: read_sse(port, info, lat, sizes),
        "WebSocket": lambda info, lat, sizes: read_ws(port, info, lat, sizes),
        "gRPC": lambda info, lat, sizes: read_grpc(stub, info, lat, sizes),
    }
    print(f"# one stream of {args.events:,} deltas, one subscriber; then one run at 50 ev/s to {args.subscribers:,}")
    print(
        "| transport | one stream ev/s | bytes per delta | fan-out p50 ms | fan-out p99 ms | server CPU µs per delivered event |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, read in readers.items():
        info = await create_run(port, "burst")
        await asyncio.sleep(0.5)  # the burst run is in the log: measure reading, not producing
        sizes: list[int] = []
        t0 = time.perf_counter()
        n = await read(info, None, sizes)
        rate = n / (time.perf_counter() - t0)
        latencies: list[float] = []
        info = await create_run(port, "paced")
        before = cpu_s(proc.pid)
        counts = await asyncio.gather(*(read(info, latencies, []) for _ in range(args.subscribers)))
        cpu = cpu_s(proc.pid) - before
        delivered = sum(counts)
        print(
            f"| {name} | {rate:,.0f} | {statistics.mean(sizes):.0f} | {pct(latencies, 50):.1f} | "
            f"{pct(latencies, 99):.1f} | {cpu / max(delivered, 1) * 1e6:.1f} |"
        )
    await channel.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--subscribers", type=int, default=1000)
        parser.add_argument("--events", type=int, default=20_000)
        args = parser.parse_args()
        proc, port, grpc_port = start_server(args.events)
        try:
            asyncio.run(main(args, proc, port, grpc_port))
        finally:
            proc.terminate()
            proc.wait(30)
