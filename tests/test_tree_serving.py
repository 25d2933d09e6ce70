"""A run tree over the native SSE API (``?tree=1``): one connection carries the run and every
child run below it; the Python client and an independent parser (httpx-sse) resume it after
drops from the tree cursor in ``Last-Event-ID``; cancelling the root ends every stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

import tokenwire
from test_trees import Delegates, calls
from tokenwire.client import Client
from tokenwire.events import TERMINAL_TYPES, Event, Start, Step
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from wire import FlakyTransport, serve

KEY = "test-key"
WORDS = [f"w{i} " for i in range(12)]


def tree_app(**config: Any) -> Any:
    """``lead`` asks two ``research`` sub-agents in parallel; each asks a ``leaf`` one, which
    streams slowly: a three-level tree that is live while it is read. ``stuck`` asks two
    sub-agents that never finish."""
    leaf = tokenwire.sub_agent(Scripted(WORDS, interval_s=0.01), name="leaf", description="Leaf.")
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["found ", "it"])
    research = tokenwire.sub_agent(middle, name="research", description="Research.", tools=[leaf])
    lead = Delegates(calls(("r1", "research", {"task": "a"}), ("r2", "research", {"task": "b"})), ["merged"])
    stuck = tokenwire.sub_agent(Scripted(["thinking", Stall()]), name="stuck", description="Never ends.")
    stuck_lead = Delegates(calls(("s1", "stuck", {"task": "a"}), ("s2", "stuck", {"task": "b"})), ["never"])
    return create_app(
        providers={"lead": lead, "stuck": stuck_lead},
        default_provider="lead",
        tools=[research, stuck],
        api_keys=[KEY],
        config=ServerConfig(ping_s=0.05, shutdown_grace_s=0.2, **config),
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(tree_app()) as url:
        yield url


def by_stream(events: list[Event]) -> dict[str, list[Event]]:
    streams: dict[str, list[Event]] = {}
    for e in events:
        streams.setdefault(e.stream_id, []).append(e)
    return streams


def assert_whole_tree(events: list[Event], root: str) -> dict[str, list[Event]]:
    """Five streams (the root, two research runs, a leaf under each), each whole: seqs from 0
    with no gap or repeat, one terminal at its end; children name their parent; a child's end
    comes before its parent's mark of it."""
    streams = by_stream(events)
    assert len(streams) == 5 and next(iter(streams)) == root
    for sid, evs in streams.items():
        assert [e.seq for e in evs] == list(range(len(evs))), sid
        assert [e.__class__ in TERMINAL_TYPES for e in evs].count(True) == 1 and evs[-1].type == "done"
    depth = {root: 0}
    for sid, evs in streams.items():
        start = evs[0]
        assert isinstance(start, Start)
        if sid != root:
            assert start.parent is not None and start.parent.stream_id in depth
            depth[sid] = start.parent.depth
    assert sorted(depth.values()) == [0, 1, 1, 2, 2]
    at = {(e.stream_id, e.seq): i for i, e in enumerate(events)}
    for i, e in enumerate(events):
        if isinstance(e, Step) and e.name == "child" and e.status == "finished":
            child = e.detail["stream_id"]
            assert at[(child, len(streams[child]) - 1)] < i
    return streams


async def test_the_python_client_reads_a_whole_tree_across_drops(base_url: str) -> None:
    flaky = FlakyTransport(after_chunks=5)
    async with Client(base_url, api_key=KEY, http_client=httpx.AsyncClient(transport=flaky), max_backoff_s=0.05) as c:
        info = await c.create_run({"prompt": "go", "tools": ["research"]})
        events = [e async for e in c.subscribe(info.stream_id, info.read_token, tree=True)]
    assert flaky.drops >= 3
    streams = assert_whole_tree(events, info.stream_id)
    assert "".join(e.text for e in streams[info.stream_id] if e.type == "text.delta") == "merged"
    leaves = [
        evs for evs in streams.values() if isinstance(evs[0], Start) and evs[0].parent and evs[0].parent.depth == 2
    ]
    assert all("".join(e.text for e in evs if e.type == "text.delta") == "".join(WORDS) for evs in leaves)


async def test_last_event_id_resumes_every_stream_of_the_tree(base_url: str) -> None:
    """With an independent SSE parser: each frame's id is the tree cursor after it; a new
    connection with any of them gets exactly the rest of the tree."""
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"{base_url}/v1/runs",
            json={"prompt": "go", "tools": ["research"]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        info = made.json()
        auth = {"Authorization": f"Bearer {info['read_token']}"}
        url = f"{info['events_url']}?tree=1"

        async def read(last: str | None, stop_after: int | None = None) -> list[tuple[str, Event]]:
            got: list[tuple[str, Event]] = []
            headers = {**auth, **({"Last-Event-ID": last} if last else {})}
            async with aconnect_sse(http, "GET", url, headers=headers) as source:
                async for sse in source.aiter_sse():
                    got.append((sse.id, tokenwire.events.decode(sse.data)))
                    if len(got) == stop_after:
                        break
            return got

        first = await read(None, stop_after=9)
        second = await read(first[-1][0], stop_after=17)
        rest = await read(second[-1][0])
        everything = await read(None)
    events = [e for _, e in first + second + rest]
    assert_whole_tree(events, info["stream_id"])
    assert sorted((e.stream_id, e.seq) for e in events) == sorted((e.stream_id, e.seq) for _, e in everything)
    assert rest[-1][0].startswith(f"{len(by_stream(events)[info['stream_id']])}e@{info['stream_id']}")


async def test_a_cursor_naming_a_stream_outside_the_tree_reads_nothing_of_it(base_url: str) -> None:
    """The root's read token authorises its tree only: a cursor that adds another run's stream
    (here a second, unrelated run) is refused on every transport, before anything is read."""
    from tokenwire.client import WebSocketClient

    async with Client(base_url, api_key=KEY) as c:
        mine = await c.create_run({"prompt": "go", "tools": ["research"]})
        victim = await c.create_run({"prompt": "secret", "tools": ["research"]})
        forged = f"0@{mine.stream_id},0@{victim.stream_id}"
        async with httpx.AsyncClient() as http:
            r = await http.get(
                f"{base_url}/v1/streams/{mine.stream_id}/events",
                params={"tree": 1},
                headers={"Authorization": f"Bearer {mine.read_token}", "Last-Event-ID": forged},
            )
        assert r.status_code == 422 and "not a run below" in r.json()["error"]["message"]
        async with WebSocketClient(base_url.replace("http://", "ws://") + "/v1/ws", api_key=KEY) as ws:
            await ws.send("subscribe", stream_id=mine.stream_id, token=mine.read_token, tree=True, cursor=forged)
            reply = await ws.reply()
            assert (
                reply["op"] == "error" and reply["code"] == "invalid_request" and "not a run below" in reply["message"]
            )
        for run in (mine, victim):
            await c.cancel(run.stream_id, run.token)


@pytest.mark.parametrize("last", ["not a cursor", "3@someone-else"])
async def test_a_cursor_that_is_not_this_trees_is_refused(base_url: str, last: str) -> None:
    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["research"]})
        async with httpx.AsyncClient() as http:
            r = await http.get(
                f"{base_url}/v1/streams/{info.stream_id}/events",
                params={"tree": 1},
                headers={"Authorization": f"Bearer {info.read_token}", "Last-Event-ID": last},
            )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        await c.cancel(info.stream_id, info.token)


async def test_cancelling_the_root_ends_every_stream_of_the_tree_once(base_url: str) -> None:
    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["stuck"], "provider": "stuck"})
        events: list[Event] = []
        thinking: set[str] = set()
        async for e in c.subscribe(info.stream_id, info.read_token, tree=True):
            events.append(e)
            if e.type == "text.delta" and e.stream_id != info.stream_id:
                thinking.add(e.stream_id)
                if len(thinking) == 2:  # both children are under way, and will never end by themselves
                    await c.cancel(info.stream_id, info.token)
    streams = by_stream(events)
    assert len(streams) == 3
    for sid, evs in streams.items():
        assert [e.seq for e in evs] == list(range(len(evs))), sid
        ends = [e for e in evs if e.__class__ in TERMINAL_TYPES]
        assert len(ends) == 1 and ends[0] is evs[-1] and ends[0].finish_reason == "cancelled"


async def test_a_websocket_tree_subscription_resumes_from_its_cursor_on_a_new_socket(base_url: str) -> None:
    """Over the WebSocket: the tree on one subscription with a small ack window (credit counted
    over the whole tree), cut off mid-tree, resumed with the same cursor on another socket:
    every stream whole, nothing twice."""
    from tokenwire.client import WebSocketClient
    from tokenwire.log import TreeCursor

    ws_url = base_url.replace("http://", "ws://") + "/v1/ws"
    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["research"]})
    cursor = TreeCursor(info.stream_id)
    events: list[Event] = []
    async with WebSocketClient(ws_url, api_key=KEY, window=4) as ws:
        async for e in ws.subscribe(info.stream_id, info.read_token, cursor=cursor):
            events.append(e)
            if len(events) == 15:
                break  # mid-tree: both leaves are still streaming
    assert not cursor.ended
    async with WebSocketClient(ws_url, api_key=KEY, window=4) as ws:
        events += [e async for e in ws.subscribe(info.stream_id, info.read_token, cursor=cursor)]
    assert cursor.ended
    assert_whole_tree(events, info.stream_id)


async def test_a_websocket_tree_subscription_refuses_another_tree_s_cursor(base_url: str) -> None:
    from tokenwire.client import WebSocketClient

    ws_url = base_url.replace("http://", "ws://") + "/v1/ws"
    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["research"]})
        async with WebSocketClient(ws_url, api_key=KEY) as ws:
            await ws.send("subscribe", stream_id=info.stream_id, token=info.read_token, tree=True, cursor="0@other")
            reply = await ws.reply()
            assert reply["op"] == "error" and reply["code"] == "bad_message" and "another tree" in reply["message"]
            await ws.send("subscribe", stream_id=info.stream_id, token=info.read_token, tree=True, cursor="x@")
            reply = await ws.reply()
            assert reply["op"] == "error" and reply["code"] == "invalid_request"
        await c.cancel(info.stream_id, info.token)


async def test_a_grpc_tree_subscription_resumes_from_its_cursor_on_a_new_channel() -> None:
    from tokenwire.grpc.client import GrpcClient
    from tokenwire.log import TreeCursor

    app = tree_app(grpc_port=0)
    with serve(app, lifespan="on") as url:
        target = f"127.0.0.1:{app.state.tokenwire.grpc.port}"
        async with Client(url, api_key=KEY) as c:
            info = await c.create_run({"prompt": "go", "tools": ["research"]})
        cursor = TreeCursor(info.stream_id)
        events: list[Event] = []
        async with GrpcClient(target, api_key=KEY) as g:
            async for e in g.subscribe(info.stream_id, info.read_token, cursor=cursor):
                events.append(e)
                if len(events) == 15:
                    break  # mid-tree
        async with GrpcClient(target, api_key=KEY) as g:
            events += [e async for e in g.subscribe(info.stream_id, info.read_token, cursor=cursor)]
    assert cursor.ended
    assert_whole_tree(events, info.stream_id)


async def test_one_websocket_reads_a_stream_once_alone_or_in_a_tree(base_url: str) -> None:
    """Events are routed by stream id: a child already read in a tree on this socket cannot be
    subscribed to alone there (nor the tree twice); a clear Conflict, and the tree reads on."""
    from tokenwire.client import WebSocketClient
    from tokenwire.errors import Conflict

    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["stuck"], "provider": "stuck"})
        async with WebSocketClient(base_url.replace("http://", "ws://") + "/v1/ws", api_key=KEY) as ws:
            tree = ws.subscribe(info.stream_id, info.read_token, tree=True)
            child = None
            async for e in tree:
                if e.type == "start" and e.parent is not None:
                    child = e.stream_id
                    break
            assert child is not None
            for again in (ws.subscribe(child, info.read_token), ws.subscribe(info.stream_id, info.read_token)):
                with pytest.raises(Conflict, match="already read on this socket"):
                    await anext(again)
            await c.cancel(info.stream_id, info.token)
            rest = [e async for e in tree]
    assert rest[-1].type == "done" and rest[-1].finish_reason == "cancelled"


async def test_a_snapshot_join_of_a_tree_gives_the_run_folded_and_its_running_children_whole(base_url: str) -> None:
    """``?tree=1&snapshot=1``: the root as one snapshot event, then the root's tail and every child
    still running at the join from its start (here two sub-agents that never end, until the root
    is cancelled); at the end the snapshot equals the root's whole log folded, each child whole."""
    from tokenwire.core.snapshot import Snapshot

    async with Client(base_url, api_key=KEY) as c:
        info = await c.create_run({"prompt": "go", "tools": ["stuck"], "provider": "stuck"})
        running: set[str] = set()
        async for e in c.subscribe(info.stream_id, info.read_token, tree=True):
            if e.type == "text.delta" and e.stream_id != info.stream_id:
                running.add(e.stream_id)
                if len(running) == 2:
                    break  # both sub-agents are under way (and stay so): join now
        state = Snapshot()
        joined: list[Event] = []
        cancelled = False
        async for e in c.subscribe(info.stream_id, info.read_token, tree=True, snapshot=state):
            joined.append(e)
            if not cancelled and {x.stream_id for x in joined if x.type == "text.delta"} == running:
                await c.cancel(info.stream_id, info.token)  # both read from their start: end the tree
                cancelled = True
        root = [e async for e in c.subscribe(info.stream_id, info.read_token)]
    assert state == Snapshot.of(root) and state.finished
    streams = by_stream(joined)
    assert set(streams) - {info.stream_id} == running
    for sid in running:
        evs = streams[sid]
        assert [e.seq for e in evs] == list(range(len(evs))) and evs[-1].__class__ in TERMINAL_TYPES, sid
    tail = streams[info.stream_id]  # the root after the snapshot only: its start was in the snapshot
    assert tail[0].seq > 0 and [e.seq for e in tail] == list(range(tail[0].seq, tail[-1].seq + 1))
