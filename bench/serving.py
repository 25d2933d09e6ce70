"""Serving the embedded model to several users: a real `tokenwire serve` process, real HTTP clients.

For ``--parallel`` 1 (one answer at a time) and 4 (continuous batching, the default), 1, 2, 4 and
8 concurrent requests of up to 128 tokens each (SSE readers over httpx): time to first token
p50/p95, aggregate tokens/s, tokens/s per stream. Then a stray client: it starts an answer, reads
three events and leaves; the time to first token of the next user's request.

    python bench/serving.py [--concurrency 1 2 4 8] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

KEY = "bench-serving-key-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(parallel: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--provider",
        "llama",
        "--model",
        "gemma-3-270m",
        "--port",
        str(port),
    ]
    cmd += ["--api-key", KEY, "--parallel", str(parallel), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # /readyz: the model is loaded before the first request
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("tokenwire serve did not become ready")
        time.sleep(0.1)


async def one(
    http: httpx.AsyncClient, url: str, i: int, tokens: int, leave_after: int | None = None
) -> tuple[float, int, float]:
    """(time to first token, tokens, seconds) of one request read to its end (or left early)."""
    t0 = time.perf_counter()
    body = {"prompt": f"Write a long story about a lighthouse keeper, number {i}.", "max_tokens": tokens, "seed": i}
    r = await http.post(f"{url}/v1/runs", json=body, headers={"Authorization": f"Bearer {KEY}"})
    info = r.json()
    first, count, seen = 0.0, 0, 0
    async with http.stream("GET", info["events_url"], params={"token": info["read_token"]}) as events:
        async for line in events.aiter_lines():
            if not line.startswith("event: "):
                continue
            seen += 1
            kind = line[7:]
            if kind == "text.delta":
                count += 1
                if count == 1:
                    first = time.perf_counter() - t0
            if kind in ("done", "error") or (leave_after is not None and seen >= leave_after):
                break
    return first, count, time.perf_counter() - t0


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def load(url: str, concurrency: int, tokens: int) -> str:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None)) as http:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(http, url, i, tokens) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    ttfts = [r[0] for r in results]
    total = sum(r[1] for r in results)
    per_stream = statistics.mean(r[1] / (r[2] - r[0]) for r in results if r[2] > r[0])
    return (
        f"| {concurrency} | {pct(ttfts, 50) * 1e3:.0f} | {pct(ttfts, 95) * 1e3:.0f} | {total / wall:.1f} | "
        f"{per_stream:.1f} |"
    )


async def stray(url: str) -> float:
    """TTFT of a request made right after another client started an answer and left."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, read=None)) as http:
        await one(http, url, 99, 1024, leave_after=3)  # reads three events, then disconnects
        first, _, _ = await one(http, url, 100, 16)
    return first


async def main(args: argparse.Namespace) -> None:
    print(
        f"# gemma 3 270M Q4_K_M, {os.cpu_count()} cores shared by the server and the clients, "
        f"requests of up to {args.tokens} tokens"
    )
    strays = {}
    for parallel in (1, 4):
        proc, url = start(parallel)
        try:
            print(f"\n### --parallel {parallel}\n")
            print("| concurrent | TTFT p50 ms | TTFT p95 ms | aggregate tokens/s | tokens/s per stream |")
            print("|---:|---:|---:|---:|---:|")
            await load(url, 1, 16)  # warm-up
            for c in args.concurrency:
                print(await load(url, c, args.tokens))
            strays[parallel] = await stray(url)
        finally:
            proc.terminate()
            proc.wait(30)
    print("\n### The next user's time to first token after a client started an answer and left\n")
    print("| --parallel | TTFT s |\n|---:|---:|")
    for parallel, ttft in strays.items():
        print(f"| {parallel} | {ttft:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tokens", type=int, default=128)
    asyncio.run(main(parser.parse_args()))
