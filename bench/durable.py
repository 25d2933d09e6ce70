"""Durable runs: how fast another node carries a killed producer's run on, what a suspended run
costs, and what the durable state adds to the log.

Starts its own redis-server on a free port (binary on PATH). Same run:

(a) takeover: ``tokenwire serve --provider scripted`` nodes on the shared log; a run produced on
    one is read through another; the producer is SIGKILLed mid-answer; time from the kill to the
    first event the new producer made (its ``ts`` is after the kill), p50/p99 over the trials
    (goal: lease 2 s + 1 s); every answer checked whole and gapless;
(b) a suspended run (waiting for an approval) in one process on the Redis log: bytes in Redis
    per run (every key it has), asyncio tasks and Python heap held per run after suspension;
(c) log bytes per run: the durable state (definition, lease, due entry) against the run's events
    (a 200-token answer), in Redis' own accounting (``MEMORY USAGE``).

    python bench/durable.py [--trials N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import httpx
import msgspec

from tokenwire.errors import RunSuspended
from tokenwire.events import ToolCall, decode
from tokenwire.log.redis import RedisLog
from tokenwire.providers import Scripted
from tokenwire.server import RunBody, RunService
from tokenwire.testing.redis import free_port, start_redis
from tokenwire.tools import tool

KEY = "bench-key-123456"


class Node:
    def __init__(self, redis_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(self.port), "--provider", "scripted"]
        cmd += ["--log", redis_url, "--api-key", KEY, "--log-level", "warning"]
        env = {**os.environ, "TOKENWIRE_SECRET": "cd" * 32}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("node did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def takeover(redis_url: str, trials: int) -> list[float]:
    """Kill the producer mid-answer, ``trials`` times; seconds from the kill to the new producer's first event."""
    nodes = [Node(redis_url) for _ in range(3)]
    latencies: list[float] = []
    prompt = " ".join(f"w{i}" for i in range(150))
    try:
        for _ in range(trials):
            producer, reader = nodes[0], nodes[1]
            r = httpx.post(
                f"{producer.url}/v1/runs", json={"prompt": prompt}, headers={"Authorization": f"Bearer {KEY}"}
            )
            info = r.json()
            headers = {"Authorization": f"Bearer {info['read_token']}"}
            seen, killed_wall, killed_at, first_new = [], 0.0, 0.0, None
            with httpx.stream(
                "GET", f"{reader.url}/v1/streams/{info['stream_id']}/events", headers=headers, timeout=60
            ) as s:
                for line in s.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = decode(line[6:])
                    seen.append(event)
                    if len(seen) == 10:
                        killed_wall, killed_at = time.time(), time.monotonic()
                        producer.proc.send_signal(signal.SIGKILL)
                    elif killed_at and first_new is None and event.ts > killed_wall:
                        first_new = time.monotonic() - killed_at
                    if event.type in ("done", "error"):
                        break
            text = "".join(e.text for e in seen if e.type == "text.delta")  # type: ignore[union-attr]
            assert seen[-1].type == "done", seen[-1]
            assert text == f"You said: {prompt}", text
            assert [e.seq for e in seen] == list(range(len(seen)))
            assert first_new is not None
            latencies.append(first_new)
            producer.proc.wait()
            nodes = [*nodes[1:], Node(redis_url)]  # a new node replaces the killed one
    finally:
        for n in nodes:
            n.stop()
    return latencies


async def suspended(redis_url: str, runs: int) -> dict[str, float]:
    """``runs`` runs suspended for an approval: what each holds in Redis, in tasks and in this heap."""

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        return "sent"

    class Payer:  # every run's first turn asks to wire money
        model = "payer"

        async def stream(self, request: Any) -> Any:
            yield ToolCall(call_id="c1", name="wire_money", args={"amount": 5})

    model = Payer()
    log = RedisLog(redis_url, prefix=f"b{time.monotonic_ns()}")
    service = RunService(providers={"m": model}, tools=[wire_money], api_keys=[KEY], log=log)
    owner = service.authenticate(KEY)
    warm = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with contextlib.suppress(RunSuspended):
        await warm.handle.wait()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ids = []
    for _ in range(runs):
        run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
        try:
            await run.handle.wait()
        except RunSuspended:
            ids.append(run.stream_id)
        del run
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tasks = len(asyncio.all_tasks()) - tasks_before
    r: Any = await log.client()
    per_run = []
    for sid in ids:
        total = 0
        for key in (log.key(sid), log.lease_key(sid), log.ownership.run_key(sid)):
            total += await r.memory_usage(key) or 0
        per_run.append(total)
    zset = 0
    for shard in range(log.keys.shards):
        zset += await r.memory_usage(log.keys.due_key(shard)) or 0
    await service.shutdown(1.0)
    await log.aclose()
    return {
        "suspended": len(ids),
        "redis_bytes": statistics.mean(per_run) + zset / max(len(ids), 1),
        "tasks": tasks / max(len(ids), 1),
        "heap_bytes": heap / max(len(ids), 1),
    }


async def log_bytes(redis_url: str) -> tuple[int, int]:
    """A 200-token answer: bytes of its events in Redis, and bytes the durable state adds."""
    model = Scripted([f"t{i} " for i in range(200)])
    log = RedisLog(redis_url, prefix=f"l{time.monotonic_ns()}")
    service = RunService(providers={"m": model}, api_keys=[KEY], log=log)
    run = await service.start(
        RunBody(prompt="Tell me a story about a lighthouse keeper."), owner=service.authenticate(KEY)
    )
    await run.handle.wait()
    r: Any = await log.client()
    events = await r.memory_usage(log.key(run.stream_id)) or 0
    record = await r.memory_usage(log.ownership.run_key(run.stream_id)) or 0
    await service.shutdown(1.0)
    await log.aclose()
    return events, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    proc = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        lat = sorted(takeover(url, args.trials))
        sus = asyncio.run(suspended(url, args.runs))
        events, record = asyncio.run(log_bytes(url))
    finally:
        proc.terminate()
        proc.wait()
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    print(f"\n(a) takeover, {len(lat)} kills (lease 2 s)\n")
    print("| kill → first event of the new producer | p50 | p99 | max |\n|---|---|---|---|")
    print(f"| tokenwire serve x3, Redis log | {statistics.median(lat):.2f} s | {p99:.2f} s | {lat[-1]:.2f} s |")
    print(f"\n(b) {sus['suspended']:.0f} runs suspended for an approval\n")
    print("| per suspended run | Redis bytes | asyncio tasks | Python heap |\n|---|---|---|---|")
    print(f"| waiting for approval | {sus['redis_bytes']:.0f} | {sus['tasks']:.2f} | {sus['heap_bytes']:.0f} B |")
    print("\n(c) log bytes of a 200-token run\n")
    print("| events | durable state (definition, TTL'd with the stream) | added |\n|---|---|---|")
    print(f"| {events} B | {record} B | {100 * record / max(events, 1):.1f} % |")
    print(msgspec.json.encode({"takeover_s": lat, **sus, "events_bytes": events, "record_bytes": record}).decode())


if __name__ == "__main__":
    main()
