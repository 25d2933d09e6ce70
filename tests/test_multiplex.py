"""Many streams on one connection (``POST /v1/events``, the WebSocket's ``subscribe`` with
``streams`` or ``mine``): cut and resumed from one cursor with nothing lost or twice; every run of
an API key, new ones included, and never another key's; streams take turns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokenwire.client import Client, GrpcClient, WebSocketClient
from tokenwire.errors import ClientError
from tokenwire.events import TERMINAL_TYPES, Done, Event, Start, TextDelta
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.log import OWNED, MemoryLog, TreeCursor, read_tree
from tokenwire.log.redis import RedisLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from wire import FlakyTransport, free_port, serve, start_redis, wait_for

KEY, OTHER = "key-a", "key-b"
WORDS = [f"w{i} " for i in range(20)]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    """The app over HTTP and gRPC: (http url, grpc target)."""
    app = create_app(
        providers={"paced": Scripted(WORDS, interval_s=0.004), "stalls": Scripted(["thinking ", Stall()])},
        default_provider="paced",
        api_keys=[KEY, OTHER],
        config=ServerConfig(ping_s=0.05, max_live_runs_per_key=256, grpc_port=0, shutdown_grace_s=0.2),
    )
    with serve(app, lifespan="on") as url:
        yield url, f"127.0.0.1:{app.state.tokenwire.grpc.port}"


@pytest.fixture(scope="module")
def base_url(server: tuple[str, str]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def target(server: tuple[str, str]) -> str:
    return server[1]


def by_stream(events: list[Event]) -> dict[str, list[Event]]:
    streams: dict[str, list[Event]] = {}
    for e in events:
        streams.setdefault(e.stream_id, []).append(e)
    return streams


async def assert_each_whole(base_url: str, streams: dict[str, list[Event]], tokens: dict[str, str]) -> None:
    """Every stream as delivered equals the stream read alone (the oracle): in order, from 0, no
    gap, nothing twice, one terminal at its end."""
    async with Client(base_url) as c:
        for sid, token in tokens.items():
            alone = [(e.seq, e.type) async for e in c.subscribe(sid, token)]
            assert [(e.seq, e.type) for e in streams[sid]] == alone, sid
            assert [t for _, t in alone].count("done") + [t for _, t in alone].count("error") == 1


async def start_runs(base_url: str, n: int, *, key: str = KEY, provider: str = "paced") -> dict[str, tuple[str, str]]:
    """``n`` runs: stream id -> (read token, cancel token)."""
    async with Client(base_url, api_key=key) as c:
        runs = [await c.create_run({"prompt": "go", "provider": provider}) for _ in range(n)]
    return {r.stream_id: (r.read_token, r.token) for r in runs}


async def test_a_hundred_streams_on_one_sse_connection_cut_and_resumed(base_url: str) -> None:
    runs = await start_runs(base_url, 100)
    reads = {sid: read for sid, (read, _) in runs.items()}
    flaky = FlakyTransport(after_chunks=12)
    http = httpx.AsyncClient(transport=flaky)
    async with Client(base_url, http_client=http, max_backoff_s=0.02) as c:
        events = [e async for e in c.subscribe_many(reads)]
    assert flaky.drops >= 3
    streams = by_stream(events)
    assert set(streams) == set(runs)
    await assert_each_whole(base_url, streams, reads)
    assert "".join(e.text for e in streams[next(iter(runs))] if isinstance(e, TextDelta)) == "".join(WORDS)


def connections(transport: str, base_url: str, target: str) -> Any:
    """A new client connection of ``transport`` (a context manager with ``subscribe_many``)."""
    if transport == "websocket":
        return WebSocketClient(base_url.replace("http://", "ws://") + "/v1/ws")
    return GrpcClient(target)


@pytest.mark.parametrize("transport", ["websocket", "grpc"])
async def test_a_hundred_streams_on_one_connection_resumed_on_new_ones(
    base_url: str, target: str, transport: str
) -> None:
    """One WebSocket (one gRPC call) for 100 streams, closed mid-way three times; a new one
    resumes every stream from the cursor."""
    runs = await start_runs(base_url, 100)
    reads = {sid: read for sid, (read, _) in runs.items()}
    cursor = TreeCursor(next(iter(reads)), roots=reads)
    events: list[Event] = []
    for cut in (500, 1000, 1500, None):  # three connections closed mid-way, then one to the end
        async with (
            connections(transport, base_url, target) as client,
            contextlib.aclosing(client.subscribe_many(reads, cursor=cursor)) as it,
        ):
            async for e in it:
                events.append(e)
                if len(events) == cut:
                    break
    assert cursor.ended and len(events) > 1500
    await assert_each_whole(base_url, by_stream(events), reads)


async def test_a_grpc_session_subscribes_to_many_and_unsubscribes(base_url: str, target: str) -> None:
    [(sid, (read, cancel))] = (await start_runs(base_url, 1, provider="stalls")).items()
    requests: asyncio.Queue[pb.SessionRequest] = asyncio.Queue()

    async def outgoing() -> Any:
        while True:
            yield await requests.get()

    async with GrpcClient(target, api_key=KEY) as g:
        call = g.stub.Session(outgoing(), metadata=(("authorization", f"Bearer {KEY}"),))
        refs = [pb.StreamRef(stream_id=sid, token=read)]
        await requests.put(pb.SessionRequest(subscribe=pb.SessionSubscribe(request=pb.SubscribeRequest(streams=refs))))
        started = await call.read()
        assert started.accepted.op == "subscribe" and started.accepted.cursor == f"0@{sid}"
        first = await call.read()
        assert first.event.stream_id == sid and first.event.WhichOneof("kind") == "start"
        await requests.put(pb.SessionRequest(unsubscribe=pb.Unsubscribe(stream_id=sid)))
        while (reply := await call.read()).WhichOneof("reply") == "event":
            pass  # events sent before the unsubscribe
        assert reply.accepted.op == "unsubscribe" and reply.accepted.status == "unsubscribed"
        call.cancel()
    async with Client(base_url) as c:
        await c.cancel(sid, cancel)


async def test_a_socket_adds_and_drops_streams_while_it_reads(base_url: str) -> None:
    """Beside a multiplexed subscription, single streams come and go on the same socket; an
    unsubscribed stream gets nothing more."""
    first, second = await start_runs(base_url, 1, provider="stalls"), await start_runs(base_url, 1)
    [(sid1, (read1, cancel1))], [(sid2, (read2, _))] = first.items(), second.items()
    url = base_url.replace("http://", "ws://") + "/v1/ws"
    async with WebSocketClient(url, api_key=KEY) as ws:
        many = ws.subscribe_many({sid1: read1})
        assert (await anext(many)).type == "start"
        alone = [e async for e in ws.subscribe(sid2, read2)]  # added, read to its end
        assert alone[-1].type == "done" and [e.seq for e in alone] == list(range(len(alone)))
        await ws.unsubscribe(sid1)
        assert (await ws.reply()) == {"op": "unsubscribe", "stream_id": sid1, "status": "unsubscribed"}
        await ws.send("ack", stream_id=sid1, seq=0)
        async with Client(base_url) as c:
            await c.cancel(sid1, cancel1)
        await ws.send("unsubscribe", stream_id=sid1)  # gone: said so, the socket lives on
        assert (await ws.reply())["code"] == "not_found"
        await many.aclose()


@pytest.mark.parametrize("transport", ["sse", "websocket", "grpc"])
async def test_follow_my_runs_sees_new_runs_and_never_another_keys(base_url: str, target: str, transport: str) -> None:
    """Every run of the key, those started after the subscription included (each announced by a
    mark of ``~runs``), each whole, across drops; another key's runs never appear."""
    got: list[Event] = []
    mine: dict[str, tuple[str, str]] = {}
    theirs: dict[str, tuple[str, str]] = {}

    async def follow() -> None:
        if transport == "sse":
            flaky = FlakyTransport(after_chunks=4)
            client = Client(base_url, api_key=KEY, http_client=httpx.AsyncClient(transport=flaky), max_backoff_s=0.02)
            async with client as c, contextlib.aclosing(c.subscribe_many(mine=True)) as it:
                async for e in it:
                    got.append(e)
        elif transport == "websocket":
            url = base_url.replace("http://", "ws://") + "/v1/ws"
            async with WebSocketClient(url, api_key=KEY) as ws, contextlib.aclosing(ws.subscribe_many(mine=True)) as it:
                async for e in it:
                    got.append(e)
        else:
            async with GrpcClient(target, api_key=KEY) as g, contextlib.aclosing(g.subscribe_many(mine=True)) as it:
                async for e in it:
                    got.append(e)

    task = asyncio.create_task(follow())
    try:
        for _ in range(3):  # stalled until cancelled: live when the subscription starts, whenever that is
            mine |= await start_runs(base_url, 1, provider="stalls")
            theirs |= await start_runs(base_url, 1, key=OTHER, provider="stalls")
        await wait_for(lambda: {e.stream_id for e in got if isinstance(e, Start)} >= set(mine), within=30)
        async with Client(base_url) as c:
            for sid, (_, cancel) in (mine | theirs).items():
                await c.cancel(sid, cancel)
        ended = lambda: {e.stream_id for e in got if e.__class__ in TERMINAL_TYPES}  # noqa: E731
        await wait_for(lambda: ended() >= set(mine), within=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    streams = by_stream(got)
    assert set(streams) - {OWNED} == set(mine)
    for sid in mine:
        evs = streams[sid]
        assert [e.seq for e in evs] == list(range(len(evs))) and evs[-1].type == "done"
    marks = [e.detail["stream_id"] for e in streams.get(OWNED, [])]
    assert len(marks) == len(set(marks)) and set(marks) <= set(mine)


async def test_a_subscription_reads_only_what_its_caller_may(base_url: str) -> None:
    [(theirs, (their_read, their_cancel))] = (await start_runs(base_url, 1, key=OTHER, provider="stalls")).items()
    [(ours, (_, our_cancel))] = (await start_runs(base_url, 1, provider="stalls")).items()

    async def post(body: dict[str, Any], *, key: str | None = KEY, last: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if last:
            headers["Last-Event-ID"] = last
        async with httpx.AsyncClient() as http:
            return await http.post(f"{base_url}/v1/events", json=body, headers=headers)

    cases = [
        ({"mine": True}, {"key": None}, 401),  # mine needs the key
        ({"streams": [{"stream_id": theirs}]}, {}, 422),  # another key's run, no token
        ({"streams": [{"stream_id": ours}]}, {"last": f"0@{ours},0@{theirs}"}, 422),  # a cursor adding it
        ({"mine": True}, {"last": f"0@~runs,0@{theirs}"}, 422),  # as if it were the key's own
        ({"streams": [{"stream_id": ours}]}, {"last": f"0@{theirs}"}, 422),  # a cursor of another subscription
        ({"streams": [{"stream_id": theirs, "token": "forged"}]}, {}, 401),
        ({"streams": []}, {}, 422),
        ({"streams": [{"stream_id": ours, "from": 3}]}, {}, 422),  # unknown field
    ]
    for body, how, status in cases:
        r = await post(body, **how)
        assert r.status_code == status, (body, how, r.text)
    # With its token, another key's run is readable (the token is the grant), beside the key's own.
    async with Client(base_url, api_key=KEY) as c:
        it = c.subscribe_many({theirs: their_read, ours: None})
        seen: set[str] = set()
        while len(seen) < 2:  # each stalls after its first events
            seen.add((await anext(it)).stream_id)
        await it.aclose()
        await c.cancel(theirs, their_cancel)
        await c.cancel(ours, our_cancel)
    assert seen == {theirs, ours}
    url = base_url.replace("http://", "ws://") + "/v1/ws"
    async with WebSocketClient(url, api_key=KEY) as ws:
        await ws.send("subscribe", mine=True, cursor=f"0@~runs,0@{theirs}")
        reply = await ws.reply()
        assert reply["code"] == "invalid_request" and "not a run below" in reply["message"]
    with pytest.raises(ClientError):
        async with WebSocketClient(url) as ws:
            async for _ in ws.subscribe_many(mine=True):
                pass


async def test_a_stream_with_a_backlog_takes_turns_with_a_quiet_one() -> None:
    """20,000 events waiting on one stream do not hold back a quiet stream's few: they are
    delivered a share at a time, with the quiet stream's between."""
    log = MemoryLog(max_events=30_000)
    busy, quiet = log.open("busy"), log.open("quiet")
    busy.append(Start(model="m", stream_id="busy", seq=0))
    for i in range(1, 20_000):
        busy.append(TextDelta("x", stream_id="busy", seq=i))
    busy.append(Done(stream_id="busy", seq=20_000))
    quiet.append(Start(model="m", stream_id="quiet", seq=0))
    quiet.append(Done(stream_id="quiet", seq=1))
    order = [e.stream_id async for batch in read_tree(log, TreeCursor("busy", roots=["quiet"])) for e in batch]
    assert len(order) == 20_003 and order.index("quiet") + 1 == order.index("quiet", order.index("quiet") + 1)
    assert order.index("quiet") <= 2 * 256


def test_a_multiplexed_cursor_keeps_its_ended_streams_and_takes_the_servers_start() -> None:
    cursor = TreeCursor("a", roots=["b", "c"])
    list(cursor.feed("b", [Start(model="m", stream_id="b", seq=0), Done(stream_id="b", seq=1)]))
    assert cursor.token() == "0@a,2e@b,0@c" and not cursor.ended and cursor.finished("b")
    kid = {"stream_id": "kid"}
    from tokenwire.events import Step

    list(cursor.feed("c", [Step(name="child", status="started", detail=kid, stream_id="c", seq=0)]))
    list(cursor.feed("kid", [Start(model="m", stream_id="kid", seq=0), Done(stream_id="kid", seq=1)]))
    assert "kid" not in cursor.token()  # a child found below a root: gone from the token once ended
    follower = TreeCursor(OWNED, roots=["b"])
    follower.restore("7@~runs,3@r1")  # the server's start: runs going on now, the next run's position
    assert follower.positions == {OWNED: 7, "r1": 3} and follower.roots == {OWNED, "b"}


def test_a_cursor_of_an_owners_runs_keeps_only_the_runs_going_on() -> None:
    """A reader of every run of a key reads any number of runs over time, at most
    ``max_streams`` at once: an ended run leaves the cursor, and what a resume from before its
    end sends again of it is dropped, not refused."""
    from tokenwire.events import Step

    cursor = TreeCursor(OWNED, max_streams=3)
    delivered: list[Event] = []
    for n in range(10):
        sid = f"r{n}"
        mark = Step(name="child", status="started", detail={"stream_id": sid}, stream_id=OWNED, seq=n)
        delivered += cursor.receive(mark)
        delivered += cursor.receive(Start(model="m", stream_id=sid, seq=0))
        delivered += cursor.receive(Done(stream_id=sid, seq=1))
        assert set(cursor.positions) == {OWNED}
    assert len(delivered) == 30 and cursor.token() == "10@~runs"
    assert list(cursor.receive(Done(stream_id="r9", seq=1))) == []  # sent again after a resume


@pytest.fixture
def logs(tmp_path: Any) -> Iterator[list[Any]]:
    port = free_port()
    proc = start_redis(port, str(tmp_path))
    try:
        yield [MemoryLog(), RedisLog(f"redis://127.0.0.1:{port}/0", prefix="idx", index_poll_s=0.01)]
    finally:
        proc.kill()
        proc.wait()


async def test_the_owner_index_lists_runs_in_order_and_wakes_a_reader(logs: list[Any], monkeypatch: Any) -> None:
    import tokenwire.log.ownership as ownership
    import tokenwire.log.redis_runs as redis_runs

    monkeypatch.setattr(ownership, "MAX_INDEXED", 5)
    monkeypatch.setattr(redis_runs, "MAX_INDEXED", 5)
    for log in logs:
        own = log.ownership
        assert await own.latest_runs("a", 3) == (0, [])
        assert await own.runs_of("a", 0, wait_s=0.01) == []
        waiting = asyncio.create_task(own.runs_of("a", 0, wait_s=30))
        await asyncio.sleep(0)
        await own.index_run("a", "r0")
        assert await waiting == [(0, "r0")]
        for i in range(1, 8):
            await own.index_run("a", f"r{i}")
        await own.index_run("b", "x0")
        assert await own.runs_of("a", 0, wait_s=0) == [(i, f"r{i}") for i in range(3, 8)]  # the newest five
        assert await own.runs_of("a", 6, wait_s=0) == [(6, "r6"), (7, "r7")]
        assert await own.latest_runs("a", 2) == (8, ["r6", "r7"])
        assert await own.runs_of("b", 0, wait_s=0) == [(0, "x0")]
        await log.aclose()


async def test_a_run_followed_only_through_mine_is_not_abandoned() -> None:
    """The server cancels a run nobody reads for ``abandon_after_s``: a run read only as one of
    the key's runs is read."""
    app = create_app(
        providers={"stalls": Scripted(["thinking ", Stall()])},
        api_keys=[KEY],
        config=ServerConfig(abandon_after_s=1.5, ping_s=0.05),
    )
    got: list[Event] = []
    with serve(app) as url:
        async with Client(url, api_key=KEY) as c:

            async def follow() -> None:
                async with contextlib.aclosing(c.subscribe_many(mine=True)) as it:
                    async for e in it:
                        got.append(e)

            task = asyncio.create_task(follow())
            try:
                run = await c.create_run("go")
                await wait_for(lambda: any(e.stream_id == run.stream_id for e in got), within=10)
                await asyncio.sleep(4.5)  # three times abandon_after_s, read only through "mine"
                assert not any(e.stream_id == run.stream_id and e.type in ("done", "error") for e in got)
                await c.cancel(run.stream_id, run.token)
                await wait_for(lambda: any(e.stream_id == run.stream_id and e.type == "done" for e in got), within=10)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    ends = [e for e in got if e.stream_id == run.stream_id and e.type == "done"]
    assert len(ends) == 1 and ends[0].finish_reason == "cancelled" and ends[0].reason != "abandoned"


async def test_a_server_without_api_keys_reads_many_streams_by_their_tokens_only() -> None:
    """With --no-auth every caller is the same owner: ``mine`` and a stream without its token
    would hand anyone every run; the tokens stay the grant."""
    app = create_app(providers={"paced": Scripted(WORDS[:3])}, api_keys=None)
    with serve(app) as url:
        async with Client(url) as c:
            run = await c.create_run("go")
            async with httpx.AsyncClient() as http:
                for body in ({"mine": True}, {"streams": [{"stream_id": run.stream_id}]}):
                    r = await http.post(f"{url}/v1/events", json=body)
                    assert r.status_code == 422 and "token" in r.json()["error"]["message"], body
            events = [e async for e in c.subscribe_many({run.stream_id: run.read_token})]
    assert [e.type for e in events][-1] == "done"


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the responses whose body is still open."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.open = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.open += 1
        outer = self

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for chunk in response.stream:  # type: ignore[attr-defined]
                    yield chunk

            async def aclose(self) -> None:
                outer.open -= 1
                await response.aclose()

        return httpx.Response(response.status_code, headers=response.headers, stream=Body(), request=request)


async def test_closing_a_subscription_closes_its_connection_at_once(base_url: str) -> None:
    """A client's iterator closed early (``aclose``, or leaving ``aclosing``) closes its HTTP
    response then, not when the collector finds the inner generator: the server stops writing to
    a reader that left (left open, hundreds of them loaded the server in the chaos checks)."""
    [(sid, (read, cancel))] = (await start_runs(base_url, 1, provider="stalls")).items()
    counting = CountingTransport()
    async with Client(base_url, api_key=KEY, http_client=httpx.AsyncClient(transport=counting)) as c:
        for events in (c.subscribe(sid, read), c.subscribe_many({sid: read}), c.subscribe_many(mine=True)):
            await anext(events)
            assert counting.open == 1
            await events.aclose()
            assert counting.open == 0
        await c.cancel(sid, cancel)
