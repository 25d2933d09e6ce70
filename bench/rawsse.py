"""The raw HTTP request the benchmarks' SSE readers send (no client library in the way): the
stream token in the Authorization header, as the server requires (no credential in a URL); and
waiting for a benchmark's server process to answer."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import httpx


def sse_request(path: str) -> bytes:
    """``GET path`` for an event stream; a ``?token=`` in ``path`` goes into ``Authorization: Bearer``."""
    base, _, token = path.partition("?token=")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {base} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n{auth}\r\n".encode()


def answering(proc: subprocess.Popen[bytes], port: int, name: str, within_s: float = 30.0) -> subprocess.Popen[bytes]:
    """``proc`` once its server answers HTTP on ``port`` (killed, and an error, if it never does)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} server did not start")


async def coalesced(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    """A plain server's response body: every frame queued by the time it writes, joined into one
    write; None ends it (the baseline's own coalescing)."""
    while True:
        frames = [await queue.get()]
        while not queue.empty():
            frames.append(queue.get_nowait())
        yield b"".join(f for f in frames if f is not None)
        if frames[-1] is None:
            return
