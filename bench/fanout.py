"""Fan-out at the limit: one stream read by N SSE readers at once, tokenwire against a plain
Starlette server (one broadcast task, a queue per reader, every queued frame joined into one
write), measured in the same run on the same cores.

Each server is a uvicorn process of its own on loopback; this process is the load client (raw
asyncio sockets). One run paced at ``--rate`` events/s for ``--seconds``, after ``--connect-s``
for every reader to connect. Reported per server and reader count:

- completed readers, and the share of the offered events they received (each reader is offered
  every event of the run); the rate they received them at while the run was paced, against the
  offered rate (``--rate`` per reader: a server that falls behind delivers less per second);
- latency from an event's ``ts`` to its receipt, p50/p99, over a sample of readers (at most
  ``--sample`` of them parse every frame; the rest only count frames, so the client's parsing
  does not become what is measured);
- server CPU per delivered event while the run is paced (from the moment every reader is
  connected to the end: connecting is not fan-out);
- server RSS per connection.

    python bench/fanout.py [--readers 1000,10000] [--rate 20] [--seconds 10]
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

from rawsse import answering, coalesced, sse_request


async def on_schedule(args: argparse.Namespace, start_at: float) -> Any:
    """Yields the index of each event at its time, ``--rate`` a second from ``start_at`` (wall
    clock, the same for every stream of a run of the benchmark): on an absolute schedule, as a
    model's tokens arrive, so a server busy writing does not slow what is offered (what is late
    comes at once)."""
    for i in range(int(args.rate * args.seconds)):
        delay = start_at + i / args.rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


class Paced:
    """Plays the schedule whose start (epoch seconds) is the prompt."""

    model = "paced"

    def __init__(self, args: argparse.Namespace):
        self.args = args

    async def stream(self, request: Any) -> Any:
        async for i in on_schedule(self.args, float(request.messages[-1].content)):
            yield f"w{i} "


def tokenwire_app(args: argparse.Namespace) -> Any:
    from tokenwire.server import ServerConfig, create_app

    config = ServerConfig(
        max_connections=100_000,
        max_connections_per_key=100_000,
        max_live_runs=100_000,
        max_live_runs_per_key=100_000,
        max_runs=100_000,
    )
    return create_app(providers={"fanout": Paced(args)}, api_keys=None, config=config)


def plain_app(args: argparse.Namespace) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    readers: list[asyncio.Queue[bytes | None]] = []

    def frame(i: int) -> bytes:
        body = {"type": "text.delta", "text": f"w{i} ", "stream_id": "s", "seq": i, "ts": time.time()}
        return f"id: {i}\nevent: text.delta\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    async def broadcast() -> None:
        async for i in on_schedule(args, start_at[0]):
            data = frame(i)
            for q in readers:
                q.put_nowait(data)
        for q in readers:
            q.put_nowait(b'event: done\ndata: {"type":"done","ts":0}\n\n')
            q.put_nowait(None)

    started: list[asyncio.Task[None]] = []
    start_at: list[float] = []

    async def fanout(request: Any) -> Any:
        if not started:
            start_at.append(float(request.query_params["at"]))
            started.append(asyncio.get_running_loop().create_task(broadcast()))
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        readers.append(queue)
        return StreamingResponse(coalesced(queue), media_type="text/event-stream")

    async def own(request: Any) -> Any:
        """One stream per reader: its own producer task and queue, coalesced writes."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        at = float(request.query_params["at"])

        async def produce() -> None:
            async for i in on_schedule(args, at):
                queue.put_nowait(frame(i))
            queue.put_nowait(b'event: done\ndata: {"type":"done","ts":0}\n\n')
            queue.put_nowait(None)

        async def body() -> Any:
            task = asyncio.get_running_loop().create_task(produce())
            try:
                async for write in coalesced(queue):
                    yield write
            finally:
                task.cancel()

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/fanout", fanout), Route("/own", own)])


def serve(kind: str, port: int, args: argparse.Namespace) -> None:
    import uvicorn

    app = tokenwire_app(args) if kind == "tokenwire" else plain_app(args)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384, limit_concurrency=None)


def start(kind: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    cmd += ["--rate", str(args.rate), "--seconds", str(args.seconds), "--connect-s", str(args.connect_s)]
    cmd += ["--own"] if args.own else []
    return answering(subprocess.Popen(cmd), port, kind)


def proc_figures(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and RSS KiB of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss


class Tally:
    def __init__(self) -> None:
        self.frames = 0
        self.latencies: list[float] = []
        self.arrived: dict[int, int] = {}
        """Text deltas received (all readers) per tenth of a second."""


DELTA = b'"type":"text.delta"'
TS = b',"ts":'


class Reader(asyncio.Protocol):
    """One reader of the stream, as cheap as a client gets in Python (a protocol's callbacks, no
    task per connection): it counts text deltas and, when it is one of the sample, takes the
    latency of each from its ``ts``. Its future is True when the stream's end arrived."""

    def __init__(self, tally: Tally, parse: bool, request: bytes):
        self.tally, self.parse, self.request = tally, parse, request
        self.tail = b""
        self.ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        data = self.tail + data  # the tail is shorter than a match: no match is counted twice
        n = data.count(DELTA)
        if n:
            self.tally.frames += n
            tenth = int(now * 10)
            self.tally.arrived[tenth] = self.tally.arrived.get(tenth, 0) + n
        if self.parse and n:
            at = 0
            while (at := data.find(DELTA, at)) >= 0:
                ts = data.find(TS, at)
                end = data.find(b"}", ts) if ts >= 0 else -1
                if end > 0:
                    self.tally.latencies.append(now - float(data[ts + len(TS) : end].split(b",")[0]))
                at += len(DELTA)
        if b'"type":"done"' in data or b'"type":"error"' in data:
            if not self.ended.done():
                self.ended.set_result(True)
            assert self.transport is not None
            self.transport.close()
        self.tail = data[-(len(DELTA) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(False)


async def read(port: int, path: str, tally: Tally, parse: bool) -> Reader:
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(lambda: Reader(tally, parse, sse_request(path)), "127.0.0.1", port)
    return reader


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def paths(name: str, port: int, n: int, own: bool, start_at: float) -> list[str]:
    """What each of ``n`` readers reads: one run for all, or a run each (``own``), all of them
    paced from ``start_at``."""
    if name != "tokenwire":
        return [f"/own?at={start_at}" if own else f"/fanout?at={start_at}"] * n
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50), timeout=60) as http:

        async def create() -> str:
            body = {"prompt": str(start_at), "provider": "fanout"}
            info = (await http.post(f"http://127.0.0.1:{port}/v1/runs", json=body)).json()
            return f"/v1/streams/{info['stream_id']}/events?token={info['token']}"

        if not own:
            return [await create()] * n
        out: list[str] = []
        for i in range(0, n, 50):
            out += await asyncio.gather(*(create() for _ in range(i, min(n, i + 50))))
        return out


async def fanout(name: str, port: int, pid: int, n: int, args: argparse.Namespace) -> None:
    _, rss0 = proc_figures(pid)
    path = await paths(name, port, n, args.own, time.time() + args.connect_s)
    tally = Tally()
    every = max(1, n // args.sample)
    readers = []
    for i in range(0, n, 200):  # connect in waves: the listen backlog holds the rest
        readers += await asyncio.gather(
            *(read(port, path[j], tally, j % every == 0) for j in range(i, min(n, i + 200)))
        )
    await asyncio.sleep(0.5)  # the last requests answered
    cpu0, rss1 = proc_figures(pid)
    frames0 = tally.frames
    ended = await asyncio.gather(*(r.ended for r in readers))
    cpu1, _ = proc_figures(pid)
    delivered = tally.frames - frames0
    offered_per_reader = int(args.rate * args.seconds)
    share = tally.frames / (offered_per_reader * n) * 100
    # The rate each reader got while the run was paced (its first and last second left out: the
    # ramp), against the offered: a server that cannot keep up falls behind here, whatever its latency.
    first, last = min(tally.arrived), max(tally.arrived)
    steady = range(first + 10, last - 9)
    rate = sum(tally.arrived.get(t, 0) for t in steady) / n / max(len(steady) / 10, 0.1)
    rate_share = rate / args.rate * 100
    print(
        f"| {name} | {n:,} | {sum(e is True for e in ended):,} | {share:.2f} | {rate_share:.1f} | "
        f"{percentile(tally.latencies, 50) * 1000:.1f} | {percentile(tally.latencies, 99) * 1000:.1f} | "
        f"{(cpu1 - cpu0) / max(delivered, 1) * 1e6:.2f} | {(rss1 - rss0) / n:.1f} |",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    print(f"# loopback, separate processes; {os.cpu_count()} cores shared by servers and client")
    what = "a stream per reader" if args.own else "one stream for all readers"
    print(f"# {what}, {args.rate:g} events/s for {args.seconds:g} s, every reader connected first\n")
    print(
        "| server | readers | completed | % of deltas received | % of offered rate | p50 ms | p99 ms "
        "| server CPU µs per delivered event | server RSS KiB per connection |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    port = 18811
    for n in args.readers:
        for kind in args.servers:
            proc = start(kind, port, args)
            try:
                await fanout(kind, port, proc.pid, n, args)
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["tokenwire", "plain"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connect-s", type=float, default=5.0)
    parser.add_argument("--readers", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000])
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["tokenwire", "plain"])
    parser.add_argument("--own", action="store_true", help="a run (a stream) per reader instead of one for all")
    parser.add_argument("--sample", type=int, default=200, help="readers that parse every frame (latency)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args)
    else:
        asyncio.run(main(args))
