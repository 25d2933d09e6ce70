"""Helpers for provider tests: SSE wire fixtures and a loopback HTTP server run by the test."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start_redis(port: int, workdir: str | None = None, bind: str = "127.0.0.1", protected: bool = True) -> Any:
    """Start a redis-server of the test's own (binary on PATH, no persistence) on ``port``; wait for PONG.

    ``protected=False`` lets clients on a non-loopback ``bind`` address in (a test's own veth)."""
    import shutil
    import subprocess

    cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", *bind.split()]
    cmd += ["--save", "", "--appendonly", "no", *(["--dir", workdir] if workdir else [])]
    cmd += [] if protected else ["--protected-mode", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ping = [shutil.which("redis-cli") or "redis-cli", "-p", str(port), "ping"]
    deadline = time.monotonic() + 10
    while subprocess.run(ping, capture_output=True).stdout.strip() != b"PONG":
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc


class RedisCluster:
    """A Redis Cluster of the test's own: ``masters`` masters with one replica each, from the
    redis-server binary on PATH, on free loopback ports (``redis-cli --cluster create``); waits
    until every slot is served. :meth:`kill` kills one node (a master: its replica is promoted
    within about twice ``node_timeout_ms``); :meth:`stop` ends them all."""

    def __init__(self, workdir: str, masters: int = 3, node_timeout_ms: int = 1000):
        import shutil
        import subprocess

        self.ports = [self._free_port() for _ in range(2 * masters)]
        self.procs: dict[int, Any] = {}
        server = shutil.which("redis-server") or "redis-server"
        for port in self.ports:
            cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--dir", workdir]
            cmd += ["--cluster-node-timeout", str(node_timeout_ms)]
            self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for port in self.ports:
                self._wait(port, "ping", b"PONG")
            cli = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create"]
            cli += [f"127.0.0.1:{p}" for p in self.ports] + ["--cluster-replicas", "1", "--cluster-yes"]
            subprocess.run(cli, check=True, capture_output=True, timeout=60)
            for port in self.ports:
                self._wait(port, "cluster info", b"cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _free_port() -> int:
        """A free port whose cluster-bus port (10,000 above it) is free too."""
        while True:
            port = free_port()
            if port > 55_000:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port

    @property
    def url(self) -> str:
        """Any one node's URL: a client finds the others (and that it is a cluster) by itself."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _wait(self, port: int, command: str, expect: bytes, within: float = 30.0) -> None:
        import shutil
        import subprocess

        cli = [shutil.which("redis-cli") or "redis-cli", "-p", str(port), *command.split()]
        deadline = time.monotonic() + within
        while expect not in subprocess.run(cli, capture_output=True).stdout:
            if time.monotonic() > deadline or self.procs[port].poll() is not None:
                raise RuntimeError(f"redis-server :{port} did not reach {expect!r}")
            time.sleep(0.1)

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key`` now."""
        import shutil
        import subprocess

        cli = [shutil.which("redis-cli") or "redis-cli", "-p", str(self.live()[0]), "cluster", "nodes"]
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for line in subprocess.run(cli, capture_output=True, text=True, check=True).stdout.splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def live(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()

    def wait_ok(self, within: float = 30.0) -> None:
        """Until every live node says the cluster is ok again (after a failover)."""
        for port in self.live():
            self._wait(port, "cluster info", b"cluster_state:ok", within)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except Exception:
                proc.kill()


@contextmanager
def redis_server(kind: str, workdir: str) -> Iterator[str]:
    """A Redis of the test's own, ``one`` instance or a ``cluster`` (three masters, three
    replicas); yields its URL (of one node: a client finds the rest by itself)."""
    import shutil

    assert shutil.which("redis-server"), "redis-server is not installed (make test installs it)"
    if kind == "cluster":
        cluster = RedisCluster(workdir)
        try:
            yield cluster.url
        finally:
            cluster.stop()
        return
    port = free_port()
    proc = start_redis(port, workdir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


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
