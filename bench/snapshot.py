"""Joining a long run: a snapshot, then the tail (``?snapshot=1``) vs a full replay from seq 0.

A real server (``create_app`` under uvicorn, in-memory log) holds a background run of
``--events`` one-token deltas that then waits (its turn still open). A reader joins it over SSE:
(a) replaying every event from seq 0, (b) with ``?snapshot=1`` — the first join folds the log
(cold), the next ones fold only what the log gained since (warm). Prints bytes received and the
time until the reader has the run's current state (the last replayed event, or the snapshot).

    python bench/snapshot.py [--events N] [--reps R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tokenwire.log import MemoryLog
from tokenwire.providers import Delay, Scripted
from tokenwire.server import ServerConfig, create_app
from wire import serve

KEY = "bench-snapshot-key"


async def read(
    http: httpx.AsyncClient, path: str, auth: dict[str, str], params: dict[str, str], until: int
) -> tuple[float, int]:
    """Seconds until the reader has seq ``until`` (or the snapshot), and the bytes it got by then."""
    t0 = time.perf_counter()
    size = 0
    async with http.stream("GET", path, params=params, headers=auth) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        head, tail = b"", b""
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            if len(head) < 256:
                head += chunk[:256]
            tail = (tail + chunk)[-64:]
            if head.startswith(b"retry:") and b"event: snapshot" in head[:64] and b"\n\n" in tail:
                return time.perf_counter() - t0, size  # the snapshot event is whole (no blank line inside)
            if b'"seq":%d,' % until in tail:
                return time.perf_counter() - t0, size
    raise RuntimeError("the stream ended before its state arrived")


async def main(args: argparse.Namespace) -> None:
    words = [f"w{i} " for i in range(args.events)] + [Delay(3600.0)]
    app = create_app(
        providers={"long": Scripted(words)},
        api_keys=[KEY],
        log=MemoryLog(max_events=args.events + 16),
        config=ServerConfig(ping_s=5.0),
    )
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            r = await http.post(
                "/v1/runs", json={"prompt": "go", "background": True}, headers={"Authorization": f"Bearer {KEY}"}
            )
            info = r.json()
            path, auth = f"/v1/streams/{info['stream_id']}/events", {"Authorization": f"Bearer {info['read_token']}"}
            last = args.events  # start (0) and the deltas 1..events
            await read(http, path, auth, {"from_seq": str(last)}, last)  # the whole run is in the log
            replay = [await read(http, path, auth, {}, last) for _ in range(args.reps)]
            cold = await read(http, path, auth, {"snapshot": "1"}, last)
            warm = [await read(http, path, auth, {"snapshot": "1"}, last) for _ in range(args.reps)]
            await http.post(
                f"/v1/streams/{info['stream_id']}/cancel", headers={"Authorization": f"Bearer {info['token']}"}
            )
    med = statistics.median
    print(f"# a run of {args.events:,} deltas, its turn open; one SSE reader joins; loopback, 2 cores shared\n")
    print("| join | bytes received | time to the current state, ms |\n|---|---:|---:|")
    print(f"| full replay from seq 0 | {replay[0][1]:,} | {med(t for t, _ in replay) * 1e3:.1f} |")
    print(f"| ?snapshot=1, first join (folds the log) | {cold[1]:,} | {cold[0] * 1e3:.1f} |")
    print(f"| ?snapshot=1, later joins (folds what is new) | {warm[0][1]:,} | {med(t for t, _ in warm) * 1e3:.1f} |")
    print(f"| replay bytes / snapshot bytes | {replay[0][1] / cold[1]:.1f}x | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
