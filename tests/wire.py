"""Helpers for provider tests: SSE wire fixtures and a loopback HTTP server run by the test."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

# Re-exported: the suite's modules take every helper from here.
from tokenwire.testing.redis import RedisCluster, free_port, redis_server, start_redis  # noqa: F401


def sse(*payloads: Any, done: bool = True, event_names: bool = False) -> bytes:
    """Encode payloads as an SSE body (``data: <json>`` blocks, ``[DONE]`` at the end)."""
    out = []
    for p in payloads:
        data = p if isinstance(p, str) else json.dumps(p)
        if event_names and isinstance(p, dict):
            out.append(f"event: {p['type']}\ndata: {data}\n\n")
        else:
            out.append(f"data: {data}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """One Chat Completions chunk as the API sends it."""
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    )
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


@contextmanager
def serve(app: Any, lifespan: str = "off") -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL.

    ``lifespan="on"`` runs the app's startup and shutdown (off by default: most tests stop the
    server with nothing running, and the shutdown grace period would only add time)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    """Poll a condition set from another thread (the server's) until it holds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def wait_http(url: str, proc: Any, within: float = 60.0) -> None:
    """Wait until a server process answers HTTP at ``url``; raise (and kill it) if it dies or never does."""
    import httpx

    deadline = time.monotonic() + within
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the server at {url} did not start") from None
            time.sleep(0.05)


class Faults:
    """An OpenAI-compatible loopback server that fails on purpose (a Starlette app).

    Each request follows the next entry of ``plan``, or, when the plan is empty, the fault its last
    message names as ``fault:<kind>:<id>`` (so a server process's provider can be steered per run):
    ``ok``, ``500``, ``429``, ``400``, ``reset`` (connection aborted mid-body), ``malformed`` (an
    unreadable chunk), ``stall`` (silence after the first delta), ``keep_open`` (the body stays open
    after ``[DONE]``), ``truncated`` (the body ends without a finish or ``[DONE]``), ``flaky`` (a 500
    the first time an id is seen, then ``ok``). ``open_bodies`` counts responses still streaming: a
    client that leaks its provider connections leaves it above zero.
    """

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.plan: list[str] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        """Every request's headers, in order (trace-context propagation checks)."""
        self.open_bodies = 0
        self.seen: set[str] = set()
        self.disconnected = threading.Event()  # set from the server's thread
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.handle, methods=["POST"]), Route("/stats", self.stats)]
        )

    async def stats(self, request: Any) -> Any:
        """What a test in another process reads: requests served, responses still streaming."""
        from starlette.responses import JSONResponse

        return JSONResponse({"requests": self.requests, "open_bodies": self.open_bodies})

    def _what(self, body: dict[str, Any]) -> str:
        if self.plan:
            return self.plan.pop(0)
        content = str((body.get("messages") or [{}])[-1].get("content", ""))
        if not content.startswith("fault:"):
            return "ok"
        _, kind, run_id = [*content.split(":", 2), ""][:3]
        if kind == "flaky":
            if run_id in self.seen:
                return "ok"
            self.seen.add(run_id)
            return "500"
        return kind

    async def handle(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        self.requests += 1
        self.headers.append(dict(request.headers))
        what = self._what(await request.json())
        if what == "500":
            # Closed after the error: with hundreds of connections open, uvicorn left some kept-alive
            # connections unanswered after a 500 (the retry on them hung) — a test-double limit.
            return JSONResponse(
                {"error": {"message": "boom", "type": "server_error"}}, status_code=500, headers={"connection": "close"}
            )
        if what == "429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0.2"})
        if what == "400":
            return JSONResponse({"error": {"message": "bad"}}, status_code=400)

        async def body() -> Any:
            self.open_bodies += 1
            try:
                yield sse(chunk({"content": "Hel"}), done=False)
                await asyncio.sleep(0.02)
                if what == "reset":
                    raise RuntimeError("connection reset by the test")  # uvicorn aborts the response mid-body
                if what == "malformed":
                    yield b"data: {oops\n\n"
                    return
                if what == "truncated":
                    yield sse(chunk({"content": "lo"}), done=False)
                    return
                if what == "stall":
                    try:
                        await asyncio.sleep(30)
                    finally:
                        self.disconnected.set()
                yield sse(
                    chunk({"content": "lo"}),
                    chunk({}, finish="stop"),
                    chunk(usage={"prompt_tokens": 1, "completion_tokens": 2}),
                )
                if what == "keep_open":  # the answer is complete ([DONE] sent) but the body stays open
                    try:
                        await asyncio.sleep(30)
                    finally:
                        self.disconnected.set()
            finally:
                self.open_bodies -= 1

        return StreamingResponse(body(), media_type="text/event-stream")


if __name__ == "__main__":  # a fault server in a process of its own: python tests/wire.py PORT
    import sys

    uvicorn.run(Faults().app, host="127.0.0.1", port=int(sys.argv[1]), log_level="critical")


class FlakyTransport(httpx.AsyncBaseTransport):
    """Drops every SSE connection after a few chunks, like a bad network."""

    def __init__(self, after_chunks: int):
        self.inner = httpx.AsyncHTTPTransport()
        self.after = after_chunks
        self.drops = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/events"):
            return response
        outer = self

        class Stream(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                n = 0
                async for chunk in response.stream:  # type: ignore[attr-defined]
                    yield chunk
                    n += 1
                    if n >= outer.after:
                        outer.drops += 1
                        raise httpx.ReadError("connection dropped by the test")

            async def aclose(self) -> None:
                await response.aclose()

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(), request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()
