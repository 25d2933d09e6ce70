"""Fan-out at the limit (tokenwire.server.fanout): many SSE readers of one stream, their live
edge written by one broadcast task straight to their connections. Real uvicorn, real sockets:
each reader's transcript must be the log's, byte for byte decoded, whoever wrote it — the
broadcast, the reader itself, or both in turn (a reader handed back when it is slow or the
batch is large); readers that leave or stall never cost the others an event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tokenwire.server import ServerConfig, create_app
from tokenwire.server.service import RunService
from wire import serve, wait_for

READERS = 24


class Gated:
    """Waits for the test to open its gate (every reader connected), then plays its words with
    a pause between them: a live stream all readers follow from its start. ``then``: more, once
    the ``later`` gate opens."""

    model = "gated"

    def __init__(
        self,
        words: list[Any],
        gate: threading.Event,
        interval_s: float = 0.002,
        then: list[Any] | None = None,
        later: threading.Event | None = None,
    ):
        self.words, self.gate, self.interval_s = words, gate, interval_s
        self.then, self.later = then or [], later

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        await asyncio.to_thread(self.gate.wait)
        for w in self.words:
            await asyncio.sleep(self.interval_s)
            yield w
        if self.later is not None:
            await asyncio.to_thread(self.later.wait)
        for w in self.then:
            await asyncio.sleep(self.interval_s)
            yield w


def app_with(words: list[Any], gate: threading.Event, provider: Any = None, **config: Any) -> tuple[Any, RunService]:
    cfg = ServerConfig(**{"max_connections_per_key": 1000, **config})
    app = create_app(providers={"gated": provider or Gated(words, gate)}, api_keys=None, config=cfg)
    return app, app.state.tokenwire


def dechunked(response: bytes) -> bytes:
    """The body of a raw HTTP/1.1 chunked response (as far as it got)."""
    rest, body = response.split(b"\r\n\r\n", 1)[1], b""
    while b"\r\n" in rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


def frames(body: bytes) -> list[dict[str, Any]]:
    """The events of an SSE body (pings and the prelude's ``retry:`` left out)."""
    out = []
    for block in body.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


async def read(
    http: httpx.AsyncClient,
    run: Stream,
    *,
    started: asyncio.Event,
    stop_after: int | None = None,
    mark: bytes = b"event: start",
) -> bytes:
    """One reader's raw body (httpx undoes the chunks: a malformed chunk fails here); ``started``
    is set once it has read ``mark``; it leaves after ``stop_after`` text deltas when given."""
    body = b""
    async with http.stream("GET", run.url, headers=run.auth) as r:
        assert r.status_code == 200, (await r.aread())[:300]
        async for part in r.aiter_raw():
            body += part
            if mark in body:
                started.set()  # by default the first event: counted as a reader of the stream
            if stop_after is not None and body.count(b"event: text.delta") >= stop_after:
                break
    return body


async def connected(
    http: httpx.AsyncClient, run: Stream, n: int, stop_after: Callable[[int], int | None] = lambda i: None
) -> list[asyncio.Task[bytes]]:
    """``n`` readers of ``run`` (the ``i``-th leaving after ``stop_after(i)`` deltas), returned
    once each has read its first event: each counts as a reader of the stream."""
    started = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(read(http, run, started=s, stop_after=stop_after(i))) for i, s in enumerate(started)]
    await asyncio.gather(*(s.wait() for s in started))
    return tasks


class Stream:
    """A run's events URL and the header that reads it."""

    def __init__(self, base: str, info: dict[str, Any]):
        self.url = f"{base}/v1/streams/{info['stream_id']}/events"
        self.path = self.url.removeprefix(base)
        self.auth = {"Authorization": f"Bearer {info['read_token']}"}
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)

    def raw_request(self, version: str) -> bytes:
        return (
            f"GET {self.path} HTTP/{version}\r\nHost: x\r\nAuthorization: {self.auth['Authorization']}\r\n\r\n".encode()
        )


async def create(http: httpx.AsyncClient, base: str) -> Stream:
    return Stream(base, (await http.post(f"{base}/v1/runs", json={"prompt": "x", "provider": "gated"})).json())


async def replay(run: Stream) -> list[dict[str, Any]]:
    """The ended stream read again from seq 0 by one reader alone (the oracle: no broadcast)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(run.url, headers=run.auth)
    return frames(r.content)


def limits() -> httpx.Limits:
    return httpx.Limits(max_connections=READERS * 2)


async def test_every_reader_of_a_broadcast_stream_gets_the_log_exactly() -> None:
    gate = threading.Event()
    words = [f"w{i} " for i in range(300)]
    app, service = app_with(words, gate)
    with serve(app) as base:
        async with httpx.AsyncClient(limits=limits(), timeout=30) as http:
            run = await create(http, base)
            readers = await connected(http, run, READERS)
            gate.set()
            bodies = await asyncio.gather(*readers)
            truth = await replay(run)
        await wait_for(lambda: not service.fanout.groups)  # the broadcast ended with its stream
    assert truth[-1]["type"] == "done" and [e["seq"] for e in truth] == list(range(len(truth)))
    for body in bodies:
        assert frames(body) == truth
    # The broadcast wrote most of it: each reader wrote its own events only until it reached the live edge.
    assert service.stats.broadcast_events >= READERS * len(truth) // 2


async def test_readers_that_leave_and_one_that_stops_reading_cost_the_others_nothing() -> None:
    gate = threading.Event()
    words = [f"w{i} " + "x" * 1500 for i in range(400)]  # 600 KB: more than a stalled socket holds
    app, service = app_with(words, gate, send_buffer=16_384, max_lag_events=64, write_timeout_s=2.0)
    with serve(app) as base:
        async with httpx.AsyncClient(limits=limits(), timeout=30) as http:
            run = await create(http, base)
            leaving = READERS // 3
            readers = await connected(http, run, READERS, lambda i: 5 + i if i < leaving else None)
            # One reader that keeps up for a while (the broadcast writes to it), then stops reading
            # (its connection fills: handed back to its own writes, which lag and are cut).
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (run.host, run.port))
            stalled, stalled_out = await asyncio.open_connection(sock=sock)
            stalled_out.write(run.raw_request("1.1"))
            stalled_raw = b""
            gate.set()
            while stalled_raw.count(b"event: text.delta") < 20:
                stalled_raw += await stalled.read(1 << 16)
            bodies = await asyncio.gather(*readers)  # while one reader stalls
            await wait_for(lambda: not service.fanout.groups, within=30)
            with contextlib.suppress(OSError):  # reset: the server cut it (it lagged, or its write made no progress)
                while part := await asyncio.wait_for(stalled.read(1 << 16), 30):
                    stalled_raw += part
            stalled_out.close()
            truth = await replay(run)
    for i, body in enumerate(bodies):
        got = frames(body)
        if i < leaving:
            assert got == truth[: len(got)] and len(got) < len(truth)  # a prefix: it left
        else:
            assert got == truth
    # The stalled reader, handed back to its own writes, got a gapless prefix (or all of it once it read again).
    stalled_frames = frames(dechunked(stalled_raw))
    assert stalled_frames and stalled_frames == truth[: len(stalled_frames)]
    assert service.stats.broadcast_events > 0


async def test_a_late_reader_replays_without_transient_data_then_joins_the_broadcast() -> None:
    """Transient ``data`` reaches the readers there when it is appended, never a replay: a reader
    that joins a broadcast stream late gets the first half without its transient events (its
    replay), then the second half with them (live, whoever writes it)."""
    from tokenwire.events import Data

    def half(tag: str) -> list[Any]:
        return [x for i in range(40) for x in (f"{tag}{i} ", Data(name="tick", data=i, transient=True))]

    gate, later = threading.Event(), threading.Event()
    app, service = app_with([], gate, provider=Gated(half("a"), gate, then=half("b"), later=later))
    with serve(app) as base:
        async with httpx.AsyncClient(limits=limits(), timeout=30) as http:
            run = await create(http, base)
            # Three readers: one fewer than a broadcast needs, so the late one starts it, when the
            # last event it replayed is a transient one it must not be written.
            readers = await connected(http, run, 3)
            gate.set()
            while (await http.get(run.url.removesuffix("/events"), headers=run.auth)).json()["next_seq"] < 81:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the first half is in the log: start, 40 deltas, 40 data
            replayed = asyncio.Event()  # the late reader has the first half, all there is yet
            late = asyncio.create_task(read(http, run, started=replayed, mark=b'"text":"a39 "'))
            await replayed.wait()
            later.set()
            bodies = await asyncio.gather(*readers)
            late_body = await late
    first = frames(bodies[0])
    data_seqs = [e["seq"] for e in first if e["type"] == "data"]
    assert len(data_seqs) == 80  # the readers there from the start got every transient event
    assert all(frames(b) == first for b in bodies) and service.stats.broadcast_events > 0
    split = next(e["seq"] for e in first if e.get("text") == "b0 ")
    assert frames(late_body) == [e for e in first if e["type"] != "data" or e["seq"] > split]


async def test_an_http_1_0_reader_beside_a_broadcast_gets_its_own_unchunked_body() -> None:
    """HTTP/1.0 has no chunks: the broadcast must never write one to it."""
    gate = threading.Event()
    words = [f"w{i} " for i in range(100)]
    app, service = app_with(words, gate)
    with serve(app) as base:
        async with httpx.AsyncClient(limits=limits(), timeout=30) as http:
            run = await create(http, base)
            readers = await connected(http, run, 8)
            reader, writer = await asyncio.open_connection(run.host, run.port)
            writer.write(run.raw_request("1.0"))
            await reader.readuntil(b"\r\n\r\n")
            gate.set()
            old = await reader.read()  # HTTP/1.0: the body ends with the connection
            writer.close()
            await asyncio.gather(*readers)
            truth = await replay(run)
    assert frames(old) == truth and b"\r\n" not in old  # no chunk framing anywhere in it
    assert service.stats.broadcast_events > 0


class Recorder(asyncio.Transport):
    """A transport that records what is written to it; ``backlog`` unsent bytes make it slow,
    as does each write from the ``slow_after``-th on."""

    def __init__(self, backlog: int = 0, slow_after: int | None = None) -> None:
        super().__init__()
        self.written = b""
        self.backlog = backlog
        self.closing = False
        self.writes = 0
        self.sizes: list[int] = []
        self.slow_after = slow_after

    def write(self, data: Any) -> None:
        self.written += bytes(data)
        self.writes += 1
        self.sizes.append(len(data))
        if self.slow_after is not None and self.writes >= self.slow_after:
            self.backlog = len(data)

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closing


class NoReading:
    """The little of a RunService a broadcast uses, with a log that never yields: the test
    writes its batches itself."""

    def __init__(self) -> None:
        from tokenwire.telemetry.server import ServerStats
        from tokenwire.wire import FrameCache

        self.frames, self.stats = FrameCache(), ServerStats()
        self.config = ServerConfig()

    @contextlib.contextmanager
    def reading(self, *args: Any, **kwargs: Any) -> Any:
        async def never() -> AsyncIterator[list[Any]]:
            await asyncio.Event().wait()
            yield []

        yield never()


async def test_a_broadcast_writes_each_member_from_its_own_next_seq_and_hands_back_the_slow() -> None:
    """Sans-I/O: batches written by hand to members that joined at, behind and inside a batch,
    one slow, one closing; then a keep-alive and the terminal."""
    from tokenwire.events import Done, TextDelta
    from tokenwire.server.fanout import END, Broadcast, Fanout, Member, chunk

    def delta(seq: int) -> TextDelta:
        return TextDelta(text=f"t{seq}", stream_id="s", seq=seq, ts=0.0)

    def seqs(raw: bytes) -> list[int]:
        body = dechunked(b"\r\n\r\n" + raw + b"0\r\n\r\n")
        return [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]

    service: Any = NoReading()
    group = Broadcast(Fanout(service), "s", 10)
    loop = asyncio.get_running_loop()
    at, inside, past, slow, closing = (Recorder() for _ in range(5))
    joined = (("at", at, 10), ("inside", inside, 12), ("past", past, 14), ("slow", slow, 12), ("closing", closing, 11))
    made = {name: Member(t, n, loop.create_future()) for name, t, n in joined}
    group.members = list(made.values())
    slow.backlog, closing.closing = 100, True
    assert group._write([delta(10), delta(11), delta(12), delta(13)], service.frames.frames, service.stats)
    assert seqs(at.written) == [10, 11, 12, 13] and seqs(inside.written) == [12, 13] and past.written == b""
    assert made["slow"].resume.result() == 12 and made["closing"].resume.result() == 11  # handed back, nothing lost
    assert slow.written == closing.written == b""
    assert group._write([], service.frames.frames, service.stats)  # a keep-alive to everyone left
    assert all(t.written.endswith(chunk(b": ping\n")) for t in (at, inside, past))
    done = Done(finish_reason="stop", stream_id="s", seq=14, ts=0.0)
    assert not group._write([done], service.frames.frames, service.stats)
    assert seqs(at.written) == [10, 11, 12, 13, 14] and seqs(past.written) == [14]
    assert all(made[n].resume.result() == END for n in ("at", "inside", "past"))
    assert service.stats.broadcast_events == 4 + 2 + 3  # each event counted once per reader written
    group.task.cancel()
    await asyncio.wait([group.task])


async def test_a_large_batch_goes_out_in_bounded_writes_each_to_who_took_the_last() -> None:
    """Sans-I/O: five 40 KB deltas are three writes of about 64 KiB; a member whose connection
    fills after the first is handed back from the first event it did not get; one that joined
    inside the second write gets the rest of it, then the third."""
    from tokenwire.events import TextDelta
    from tokenwire.server.fanout import WRITE_BYTES, Broadcast, Fanout, Member

    service: Any = NoReading()
    group = Broadcast(Fanout(service), "s", 0)
    loop = asyncio.get_running_loop()
    fast, filling, inside = Recorder(), Recorder(slow_after=1), Recorder()
    made = [Member(fast, 0, loop.create_future()), Member(filling, 0, loop.create_future())]
    made.append(Member(inside, 3, loop.create_future()))
    group.members = list(made)
    batch = [TextDelta(text=str(i) * 40_000, stream_id="s", seq=i, ts=0.0) for i in range(5)]
    assert group._write(batch, service.frames.frames, service.stats)

    def seqs(raw: bytes) -> list[int]:
        body = dechunked(b"\r\n\r\n" + raw + b"0\r\n\r\n")
        return [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]

    assert seqs(fast.written) == [0, 1, 2, 3, 4] and fast.writes == 3
    assert max(fast.sizes) < WRITE_BYTES + 41_000  # about WRITE_BYTES each: the last frame may pass it
    assert seqs(filling.written) == [0, 1] and made[1].resume.result() == 2  # nothing lost, nothing twice
    assert seqs(inside.written) == [3, 4] and inside.writes == 2
    assert group.members == [made[0], made[2]] and group.next_seq == 5
    assert service.stats.broadcast_events == 5 + 2 + 2
    group.task.cancel()
    await asyncio.wait([group.task])
