"""The Redis Streams event log against a redis-server this test suite starts on a free port.

Two RedisLog objects stand for two nodes sharing one Redis; what one appends, the other reads,
resumes and tails exactly as a MemoryLog reader would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tokenwire
from tokenwire.client import Client, SyncClient
from tokenwire.events import Done, Event, Start, TextDelta, ToolCall
from tokenwire.log.redis import RedisLog
from tokenwire.log.redis_writer import APPEND_SCRIPT
from tokenwire.providers import Delay, Scripted
from tokenwire.server import create_app
from tokenwire.testing import Transcript, assert_transcript
from wire import free_port, redis_server, serve, start_redis, wait_for, wait_http


@pytest.fixture(autouse=True)
def _once(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("--log-backend") == "redis":
        pytest.skip("these tests start their own Redis servers: the memory-backend run covers them")


@pytest.fixture(scope="module", params=["one", "cluster", "valkey-cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every test here on one Redis instance, again on a Redis Cluster (3 masters, 3 replicas),
    and on a Valkey cluster."""
    with redis_server(request.param, str(tmp_path_factory.mktemp("redis"))) as url:
        yield url


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[RedisLog, RedisLog]]:
    prefix = f"t{time.monotonic_ns()}"
    a, b = RedisLog(redis_url, prefix=prefix), RedisLog(redis_url, prefix=prefix)
    yield a, b
    await a.aclose()
    await b.aclose()


def events(sid: str, n: int) -> list[Event]:
    deltas = [TextDelta(f"t{i}", stream_id=sid, seq=i) for i in range(1, n + 1)]
    return [Start(model="m", stream_id=sid, seq=0), *deltas]


async def test_what_one_node_appends_another_reads_resumes_and_tails(nodes: tuple[RedisLog, RedisLog]) -> None:
    a, b = nodes
    writer = a.open("s")
    for e in events("s", 5):
        writer.append(e)
    await writer.flush()
    assert [e.seq async for e in b.read("s", 0, follow=False)] == [0, 1, 2, 3, 4, 5]
    assert [e.seq async for e in b.read("s", 3, follow=False)] == [3, 4, 5]  # resume
    tail = asyncio.create_task(_collect(b, "s", 4))
    await asyncio.sleep(0.05)
    writer.append(TextDelta("late", stream_id="s", seq=6))
    writer.append(Done(stream_id="s", seq=7))
    await writer.flush()
    got = await asyncio.wait_for(tail, 5)
    assert [(e.type, e.seq) for e in got] == [("text.delta", 4), ("text.delta", 5), ("text.delta", 6), ("done", 7)]
    info = await b.info("s")
    assert (info.first_seq, info.next_seq, info.finished) == (0, 8, True)
    assert 0 < await (await b.client()).ttl(b.key("s")) <= b.ttl_s  # retention after the terminal


async def test_transient_data_reaches_a_live_reader_on_another_node_and_no_replay(
    nodes: tuple[RedisLog, RedisLog],
) -> None:
    from tokenwire.events import Data

    a, b = nodes
    writer = a.open("tr")
    writer.append(Start(model="m", stream_id="tr", seq=0))
    await writer.flush()
    live = b.read("tr", 0)
    assert (await anext(live)).type == "start"  # there before the transient event: it reads live
    writer.append(Data(name="progress", data=1, transient=True, stream_id="tr", seq=1))
    writer.append(TextDelta("kept", stream_id="tr", seq=2))
    writer.append(Done(stream_id="tr", seq=3))
    await writer.flush()
    assert [e.type async for e in live] == ["data", "text.delta", "done"]
    assert [e.seq async for e in b.read("tr", 0, follow=False)] == [0, 2, 3]  # a replay leaves it out
    assert [e.seq async for e in b.read("tr", 1, follow=False)] == [2, 3]  # so does a resume
    started_it = [e.seq for batch in [x async for x in b.batches("tr", 0, follow=False, live_from=0)] for e in batch]
    assert started_it == [0, 1, 2, 3]  # the reader that started the run was there from its start


async def _collect(log: RedisLog, sid: str, from_seq: int) -> list[Event]:
    return [e async for e in log.read(sid, from_seq)]


async def test_due_times_are_on_redis_clock_whatever_each_node_clock_says(redis_url: str) -> None:
    """Three nodes: one clock an hour ahead, one an hour behind (injected), one right. What
    each writes (a producer's lease, a suspension until an approval expires) is due when the
    right clock says so: a node ahead no longer delays the takeover of its runs by its skew, and
    one behind no longer has them taken over at once."""
    prefix = f"t{time.monotonic_ns()}"
    ahead = RedisLog(redis_url, prefix=prefix, clock=lambda: time.time() + 3600)
    behind = RedisLog(redis_url, prefix=prefix, clock=lambda: time.time() - 3600)
    right = RedisLog(redis_url, prefix=prefix)
    try:
        assert await ahead.ownership.claim("fast", "tok-a")  # lease_s (2 s) from now, on its clock
        assert await behind.ownership.claim("slow", "tok-b")
        assert await ahead.ownership.claim("held", "tok-c")
        assert await ahead.ownership.suspend("held", "tok-c", until=ahead.clock() + 30)
        now = time.time()
        assert await right.ownership.due(now) == []  # nothing lapsed yet (the one behind neither)
        assert sorted(await right.ownership.due(now + 10)) == ["fast", "slow"]  # both lapsed by then
        assert sorted(await right.ownership.due(now + 40)) == ["fast", "held", "slow"]
        assert sorted(await ahead.ownership.due(ahead.clock() + 10)) == ["fast", "slow"]  # each node agrees
    finally:
        for log in (ahead, behind, right):
            await log.aclose()


async def test_a_retried_append_does_not_duplicate(nodes: tuple[RedisLog, RedisLog]) -> None:
    a, _ = nodes
    writer = a.open("dup")
    for e in events("dup", 3):
        writer.append(e)
    await writer.flush()
    batch = [(e.seq, tokenwire.events.encode(e)) for e in events("dup", 3)]
    await a.write(a.key("dup"), batch, terminal=False, token=writer.token)  # again, as a retry would send them
    assert await (await a.client()).xlen(a.key("dup")) == 4


async def test_unknown_stream_and_evicted_seq(nodes: tuple[RedisLog, RedisLog], redis_url: str) -> None:
    a, _ = nodes
    with pytest.raises(tokenwire.errors.StreamNotFound):
        await a.info("nope")
    small = RedisLog(redis_url, prefix=a.prefix + "x", max_events=10)
    writer = small.open("s")
    for e in events("s", 400):
        writer.append(e)
    await writer.flush()
    info = await small.info("s")
    assert (info.first_seq, info.next_seq) == (391, 401)  # exactly the last max_events, as in memory
    with pytest.raises(tokenwire.errors.SeqEvicted) as evicted:
        [e async for e in small.read("s", 0, follow=False)]
    assert evicted.value.first_available == 391
    assert [e.seq async for e in small.read("s", 391, follow=False)] == list(range(391, 401))
    await small.aclose()


async def test_readers_in_one_process_share_one_tail(nodes: tuple[RedisLog, RedisLog], redis_url: str) -> None:
    """A hundred readers of a live stream on one node: one XREAD per batch for all of them, and a
    bounded number of connections (a reader no longer holds a blocking connection of its own)."""
    a, _ = nodes
    b = RedisLog(redis_url + "?client_name=fanout-b", prefix=a.prefix)  # its connections are named
    xreads = 0
    tail = await b.tail_client()
    real_xread = tail.xread

    async def counting_xread(*args: Any, **kwargs: Any) -> Any:
        nonlocal xreads
        xreads += 1
        return await real_xread(*args, **kwargs)

    tail.xread = counting_xread
    writer = a.open("fan")
    writer.append(Start(model="m", stream_id="fan", seq=0))
    await writer.flush()
    readers = [asyncio.create_task(_collect(b, "fan", 0)) for _ in range(100)]
    await asyncio.sleep(0.2)
    before = xreads
    for i in range(1, 21):  # twenty batches
        writer.append(TextDelta(f"t{i}", stream_id="fan", seq=i))
        await writer.flush()
        await asyncio.sleep(0.01)
    writer.append(Done(stream_id="fan", seq=21))
    await writer.flush()
    results = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert all([e.seq for e in r] == list(range(22)) for r in results)
    assert xreads - before <= 2 * 21, f"{xreads - before} XREADs for 21 batches and 100 readers"  # not 100 per batch
    mine = [c for c in await (await a.client()).client_list() if c.get("name") == "fanout-b"]
    assert 1 <= len(mine) <= b.max_connections + 2  # the pool, the tail's one (and the control channel's)
    await b.aclose()


async def test_a_reader_behind_the_shared_window_catches_up_from_redis(redis_url: str) -> None:
    prefix = f"w{time.monotonic_ns()}"
    a, b = RedisLog(redis_url, prefix=prefix), RedisLog(redis_url, prefix=prefix, read_batch=4)  # window 16
    writer = a.open("s")
    writer.append(Start(model="m", stream_id="s", seq=0))
    await writer.flush()
    first = asyncio.create_task(_collect(b, "s", 0))  # keeps the tail alive, reading as it goes
    await asyncio.sleep(0.1)
    for i in range(1, 60):
        writer.append(TextDelta(f"t{i}", stream_id="s", seq=i))
    await writer.flush()
    await asyncio.sleep(0.1)
    late = asyncio.create_task(_collect(b, "s", 2))  # far behind the 16-event window
    writer.append(Done(stream_id="s", seq=60))
    await writer.flush()
    got_first, got_late = await asyncio.wait_for(asyncio.gather(first, late), 10)
    assert [e.seq for e in got_first] == list(range(61))
    assert [e.seq for e in got_late] == list(range(2, 61))
    await a.aclose()
    await b.aclose()


async def test_a_reader_too_far_behind_the_tail_is_told_to_resume(nodes: tuple[RedisLog, RedisLog]) -> None:
    a, b = nodes
    writer = a.open("lag")
    for e in events("lag", 2):
        writer.append(e)
    await writer.flush()
    batches = b.batches("lag", 0, max_lag=10)
    assert [e.seq for e in await anext(batches)] == [0, 1, 2]  # history
    waiting = asyncio.create_task(anext(batches))  # now on the shared tail, waiting
    await asyncio.sleep(0.1)
    writer.append(TextDelta("t3", stream_id="lag", seq=3))
    await writer.flush()
    assert [e.seq for e in await asyncio.wait_for(waiting, 5)] == [3]
    for i in range(4, 41):  # the reader is away while 37 more events arrive
        writer.append(TextDelta(f"t{i}", stream_id="lag", seq=i))
    await writer.flush()
    tail = b._tails["lag"]
    await wait_for(lambda: tail.next_seq == 41)  # the shared tail has read them
    with pytest.raises(tokenwire.errors.ObserverOverflow, match="resume from seq 4"):
        await anext(batches)
    await batches.aclose()


async def test_deltas_are_batched_structural_events_written_at_once(nodes: tuple[RedisLog, RedisLog]) -> None:
    a, b = nodes
    writes: list[int] = []
    original = a.write

    async def counting(key: str, batch: list[tuple[int, bytes]], *, terminal: bool, token: str) -> bool:
        writes.append(len(batch))
        return await original(key, batch, terminal=terminal, token=token)

    a.write = counting  # type: ignore[method-assign]
    observed: list[tuple[float, int]] = []
    a.append_observer = lambda seconds, n: observed.append((seconds, n))  # the server's latency metric
    items = [ToolCall(call_id="c", name="t", args={}), *[f"w{i} " for i in range(1000)]]
    transcript = Transcript()
    await tokenwire.generate(Scripted(items), "hi", log=a, observers=[transcript]).wait()
    assert [n for _, n in observed] == writes and all(s >= 0 for s, _ in observed)
    sid = transcript.events[0].stream_id
    remote = [e async for e in b.read(sid, 0, follow=False)]
    assert remote == transcript.events  # the same events, in the same order, as the local readers saw
    assert sum(writes) == 1003 and len(writes) < 20, writes  # about a batch per max_batch, not 1,003 writes


async def test_an_engine_run_on_redis_reads_the_same_as_on_memory(nodes: tuple[RedisLog, RedisLog]) -> None:
    a, b = nodes
    script = ["Hel", Delay(0.02), "lo", ToolCall(call_id="c1", name="t", args={"x": 1})]
    local = Transcript()
    handle = tokenwire.generate(Scripted(script), "hi", log=a, observers=[local])
    live = asyncio.create_task(_collect_when_ready(b, handle.stream_id))
    await handle.wait()
    remote = await asyncio.wait_for(live, 5)
    assert remote == local.events
    done = {"type": "done", "finish_reason": "tool_calls"}
    assert_transcript(remote, ["start", "text.delta", "text.delta", "tool_call", done])


async def _collect_when_ready(log: RedisLog, sid: str) -> list[Event]:
    for _ in range(200):
        try:
            return [e async for e in log.read(sid, 0)]
        except tokenwire.errors.StreamNotFound:
            await asyncio.sleep(0.005)
    raise AssertionError("stream never appeared")


async def test_a_run_created_on_one_node_is_read_and_resumed_on_another(redis_url: str) -> None:
    prefix = f"srv{time.monotonic_ns()}"
    secret = b"s" * 32
    words = [f"w{i} " for i in range(20)]

    def node() -> object:
        return create_app(
            providers={"p": Scripted(words, interval_s=0.005)},
            api_keys=["node-key-123456"],
            secret=secret,
            log=RedisLog(redis_url, prefix=prefix),
        )

    with serve(node()) as url_a, serve(node()) as url_b:
        async with httpx.AsyncClient() as http:
            auth = {"Authorization": "Bearer node-key-123456"}
            r = await http.post(f"{url_a}/v1/runs", json={"prompt": "x"}, headers=auth)
            info = r.json()
            on_b = info["events_url"].replace(url_a, url_b)
            await asyncio.sleep(0.3)
            async with Client(url_b) as client:
                got = [e async for e in client.subscribe(info["stream_id"], info["read_token"])]
                resumed = [e async for e in client.subscribe(info["stream_id"], info["read_token"], from_seq=15)]
            r = await http.get(
                on_b, params={"from_seq": "-1"}, headers={"Authorization": f"Bearer {info['read_token']}"}
            )
            assert r.status_code == 422
            # A ticket is single-use across the nodes that share the log: used on B, refused on A.
            read = {"Authorization": f"Bearer {info['read_token']}"}
            ticket = (await http.post(f"{url_a}/v1/tickets", headers=read)).json()["ticket"]
            assert (await http.get(on_b, params={"ticket": ticket})).status_code == 200
            again = await http.get(info["events_url"], params={"ticket": ticket})
            assert again.status_code == 401 and "already used" in again.json()["error"]["message"]
    assert [e.seq for e in got] == list(range(22)) and got[-1].type == "done"
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "".join(words)
    assert [e.seq for e in resumed] == list(range(15, 22))


async def test_a_run_read_on_another_node_is_not_abandoned_and_is_once_nobody_reads(redis_url: str) -> None:
    from tokenwire.providers import Stall
    from tokenwire.server import ServerConfig

    prefix, secret = f"ab{time.monotonic_ns()}", b"s" * 32

    def node() -> Any:
        return create_app(
            providers={"endless": Scripted(["a", Stall()])},
            api_keys=["node-key-123456"],
            secret=secret,
            log=RedisLog(redis_url, prefix=prefix),
            config=ServerConfig(abandon_after_s=0.3),
        )

    app_a = node()
    with serve(app_a) as url_a, serve(node()) as url_b:
        async with httpx.AsyncClient() as http, Client(url_b) as on_b:
            r = await http.post(
                f"{url_a}/v1/runs", json={"prompt": "x"}, headers={"Authorization": "Bearer node-key-123456"}
            )
            info = r.json()
            run = app_a.state.tokenwire.runs.get(info["stream_id"])
            seen: list[str] = []

            async def read_on_b() -> None:
                async for e in on_b.subscribe(info["stream_id"], info["read_token"]):
                    seen.append(e.type)

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(read_on_b(), 1.5)  # five grace periods, read on node B only
            assert seen == ["start", "text.delta"] and not run.finished  # A saw B's reader
            await wait_for(lambda: run.finished)  # nobody reads any more: abandoned on A
            assert run.handle.terminal.reason == "abandoned"


# -- real tokenwire serve processes sharing one Redis -------------------------------------------------


class Node:
    """A real ``tokenwire serve`` process on a free port, on the shared Redis log."""

    def __init__(self, redis_url: str, prefix: str, secret: str, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TOKENWIRE_SECRET": secret}
        cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(self.port), "--provider", "scripted"]
        cmd += ["--log", redis_url, "--api-key", NODE_KEY, "--log-level", "warning", "--shutdown-grace", "0.2"]
        cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/", self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


NODE_KEY = "cluster-key-123456"


@pytest.fixture
def cluster(redis_url: str) -> Iterator[tuple[Node, Node]]:
    prefix, secret = f"c{time.monotonic_ns()}", os.urandom(32).hex()
    a = Node(redis_url, prefix, secret)
    try:
        b = Node(redis_url, prefix, secret)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def long_prompt(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


def test_a_run_on_node_a_is_cancelled_from_node_b(cluster: tuple[Node, Node]) -> None:
    a, b = cluster
    with SyncClient(a.url, api_key=NODE_KEY) as on_a, SyncClient(b.url, api_key=NODE_KEY) as on_b:
        info = on_a.create_run(long_prompt(500))  # ten seconds of words at 50 words/s
        seen: list[Event] = []
        for event in on_b.subscribe(info.stream_id, info.read_token):
            seen.append(event)
            if len(seen) == 5:
                on_b.cancel(info.stream_id, info.token)  # B does not produce it: forwarded to A
    assert seen[-1].type == "done" and seen[-1].finish_reason == "cancelled"  # type: ignore[union-attr]
    assert [e.seq for e in seen] == list(range(len(seen))) and len(seen) < 100


async def test_a_background_response_dropped_on_node_a_resumes_and_is_cancelled_on_node_b(
    cluster: tuple[Node, Node],
) -> None:
    """OpenAI's background mode across nodes, with the openai SDK: started on A, the client drops,
    resumes on B after the last sequence_number it saw (nothing lost or twice), B cancels it."""
    import openai

    a, b = cluster
    on_a = openai.AsyncOpenAI(base_url=a.url + "/v1", api_key=NODE_KEY, max_retries=0)
    on_b = openai.AsyncOpenAI(base_url=b.url + "/v1", api_key=NODE_KEY, max_retries=0)
    async with on_a, on_b:
        stream = await on_a.responses.create(model="scripted", input=long_prompt(500), background=True, stream=True)
        seen = []
        async for event in stream:
            seen.append(event)
            if len(seen) == 8:
                break
        await stream.close()
        response_id = seen[0].response.id
        resumed = []
        async for event in await on_b.responses.retrieve(response_id, stream=True, starting_after=7):
            resumed.append(event)
            if len(resumed) == 5:
                cancelled = await on_b.responses.cancel(response_id)  # A produces it: forwarded there
        assert cancelled.status == "cancelled"
    numbers = [e.sequence_number for e in seen + resumed]
    assert numbers == list(range(len(numbers)))
    assert resumed[-1].type == "response.completed" and resumed[-1].response.status == "cancelled"


async def test_a_killed_producer_that_no_node_takes_over_ends_with_producer_lost(redis_url: str) -> None:
    """One node, killed mid-answer: no node is left to carry the run on (tests/test_durable_nodes.py
    has the takeover), so its readers end it with producer_lost once the lease and the takeover
    bound have passed."""
    a = Node(redis_url, f"p{time.monotonic_ns()}", os.urandom(32).hex())
    log = RedisLog(redis_url, takeover_s=1.0)
    try:
        async with Client(a.url, api_key=NODE_KEY) as on_a:
            info = await on_a.create_run(long_prompt(2000))
        seen: list[Event] = []
        async for event in log.read(info.stream_id):
            seen.append(event)
            if len(seen) == 10:
                a.proc.send_signal(signal.SIGKILL)  # no shutdown, no terminal, no lease release
    finally:
        a.stop()
        await log.aclose()
    terminal = seen[-1]
    assert terminal.type == "error" and terminal.code == "producer_lost" and terminal.source == "transport"  # type: ignore[union-attr]
    assert terminal.retryable  # type: ignore[union-attr]
    assert [e.seq for e in seen] == list(range(len(seen)))  # everything persisted, then the terminal, once


def test_workers_share_one_port_and_every_run(redis_url: str) -> None:
    node = Node(redis_url, "w", os.urandom(32).hex(), workers=2)
    try:
        children = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()
        assert len(children) == 2, children  # two worker processes behind the one port
        runs = []
        for i in range(12):  # a new connection each time: each lands on either worker
            with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
                auth = {"Authorization": f"Bearer {NODE_KEY}"}
                r = http.post(f"{node.url}/v1/runs", json={"prompt": f"run {i}"}, headers=auth)
                assert r.status_code == 201
                runs.append(r.json())
        for info in runs:  # read through a new connection too: often not the worker that produces it
            with SyncClient(node.url) as client:
                events = list(client.subscribe(info["stream_id"], info["read_token"]))
            assert events[-1].type == "done" and [e.seq for e in events] == list(range(len(events)))
    finally:
        node.stop()
    assert node.proc.returncode == 0  # SIGTERM reached the workers and they drained


# -- Redis going away --------------------------------------------------------------------------------


class OwnRedis:
    """A redis-server of this test only, that the test can kill and start again on the same port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_redis(self.port, str(self.workdir))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


async def test_a_redis_restart_loses_nothing_the_writer_still_holds(tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path)
    log = RedisLog(redis.url, prefix="outage")
    try:
        local = Transcript()
        words = Scripted([f"w{i} " for i in range(150)], interval_s=0.01)
        handle = tokenwire.generate(words, "hi", log=log, observers=[local])
        await asyncio.sleep(0.3)
        redis.kill()  # Redis restarts empty (no persistence here): what was written before is gone
        await asyncio.sleep(0.5)
        await asyncio.to_thread(redis.start)
        terminal = await asyncio.wait_for(handle.wait(), 20)
        assert terminal.type == "done" and terminal.finish_reason == "stop"
        stored = [tokenwire.events.decode(fields[b"e"]) async for fields in _entries(log, handle.stream_id)]
        # Redis came back empty: the writer appended what it had lost again from its ring, then the
        # buffered tail; the log holds the whole stream once, in order.
        assert stored == local.events
        assert [e.seq for e in stored] == list(range(len(stored)))
        assert [e async for e in log.read(handle.stream_id, 0, follow=False)] == local.events
    finally:
        await log.aclose()
        redis.kill()


async def _entries(log: RedisLog, sid: str) -> AsyncIterator[dict[bytes, bytes]]:
    for _, fields in await (await log.client()).xrange(log.key(sid)):
        yield fields


async def test_a_log_that_stays_unwritable_ends_the_stream_with_a_clear_error(tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path)
    log = RedisLog(redis.url, prefix="down", unwritable_s=0.5)
    try:
        local = Transcript()
        words = Scripted([f"w{i} " for i in range(500)], interval_s=0.01)
        handle = tokenwire.generate(words, "hi", log=log, observers=[local])
        await asyncio.sleep(0.2)
        redis.kill()
        terminal = await asyncio.wait_for(handle.wait(), 20)
        assert terminal.type == "error" and terminal.code == "log_unavailable"  # type: ignore[union-attr]
        assert terminal.source == "transport" and terminal.retryable  # type: ignore[union-attr]
        assert local.events[-1] == terminal and "unwritable" in terminal.message  # type: ignore[union-attr]
    finally:
        await log.aclose()


async def test_a_producer_cannot_write_past_a_terminal_another_node_wrote(nodes: tuple[RedisLog, RedisLog]) -> None:
    """A producer cut off from Redis long enough for another node to end its stream with
    producer_lost must not append after that terminal when it can write again: the shared stream
    ends at the producer_lost terminal, and the producer's own stream ends with
    error(log_unavailable) at its next event ("b" is refused; "c" finds the writer closed)."""
    a, b = nodes
    local = Transcript()
    script = Scripted(["a", Delay(0.3), "b", Delay(0.2), "c"])
    handle = tokenwire.generate(script, "hi", log=a, observers=[local])
    await handle.ready()
    await asyncio.sleep(0.1)  # start and "a" are in Redis; the producer waits for its model
    sid = handle.stream_id
    info = await b.info(sid)
    lost = tokenwire.events.Error(
        code="producer_lost",
        message="lease lapsed",
        retryable=True,
        source="transport",
        stream_id=sid,
        seq=info.next_seq,
    )
    # What _producer_lost writes once the lease lapsed: the lease gone and the terminal, atomically
    # here (A's heartbeat would otherwise take the lease back between the two).
    pipe = (await b.client()).pipeline(transaction=True)
    pipe.delete(b.lease_key(sid))
    keys, args = b.append_args(b.key(sid), [(lost.seq, tokenwire.events.encode(lost))], terminal=True, token="")
    pipe.eval(APPEND_SCRIPT, len(keys), *keys, *args)
    assert (await pipe.execute())[1] == 1
    terminal = await asyncio.wait_for(handle.wait(), 10)
    assert (terminal.type, terminal.code) == ("error", "log_unavailable")  # type: ignore[union-attr]
    assert "ended or taken over by another node" in terminal.message  # type: ignore[union-attr]
    shared = [e async for e in b.read(sid, 0, follow=False)]
    assert_transcript(
        shared, ["start", {"type": "text.delta", "text": "a"}, {"type": "error", "code": "producer_lost"}]
    )
    assert (await b.info(sid)).finished
    assert await b.write(
        b.key(sid), [(lost.seq, tokenwire.events.encode(lost))], terminal=True, token=""
    )  # a retry passes


# -- a network partition (network namespaces, where the machine allows them) ------------------------


def _netns_allowed() -> bool:
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    name = f"twprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.mark.skipif(not _netns_allowed(), reason="needs root and ip netns to cut a node off")
def test_a_partitioned_producer_is_taken_over_and_cannot_write_into_the_stream_when_healed(tmp_path: Path) -> None:
    """Node A runs in a network namespace of its own, joined to Redis by a veth pair; the test cuts
    the link mid-stream (packets dropped, not refused: a real partition). Node B takes the run over
    when A's lease lapses and finishes the answer; when the link is back, A's buffered events are
    refused (another token holds the lease, or the stream has its terminal) and A logs why: the
    shared stream is one answer, gapless, every word once, nothing of A's after the cut."""
    ns = f"tw{os.getpid() % 100000}"
    host_if, ns_if, host_ip, ns_ip = f"{ns}h", f"{ns}n", "10.231.0.1", "10.231.0.2"
    _ip("netns", "add", ns)
    redis = a_proc = b = None
    a_log = open(tmp_path / "a.log", "wb")  # noqa: SIM115
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for args in (
            ("addr", "add", f"{ns_ip}/30", "dev", ns_if),
            ("link", "set", ns_if, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", ns, "ip", *args)
        port = free_port()
        redis = start_redis(port, str(tmp_path), bind=f"127.0.0.1 {host_ip}", protected=False)
        prefix, secret = f"p{time.monotonic_ns()}", os.urandom(32).hex()
        a_port = free_port()
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "tokenwire", "serve", "--host", ns_ip]
        cmd += ["--port", str(a_port), "--provider", "scripted", "--log", f"redis://{host_ip}:{port}/0"]
        cmd += ["--api-key", NODE_KEY, "--log-level", "warning"]
        env = {**os.environ, "TOKENWIRE_SECRET": secret}
        a_proc = subprocess.Popen(cmd, env=env, stdout=a_log, stderr=subprocess.STDOUT)
        a_url = f"http://{ns_ip}:{a_port}"
        wait_http(a_url + "/", a_proc)
        b = Node(f"redis://127.0.0.1:{port}/0", prefix, secret)
        prompt = long_prompt(300)
        with SyncClient(a_url, api_key=NODE_KEY) as on_a, SyncClient(b.url, api_key=NODE_KEY) as on_b:
            info = on_a.create_run(prompt)
            seen: list[Event] = []
            cut_at = 0.0
            for event in on_b.subscribe(info.stream_id, info.read_token):
                seen.append(event)
                if len(seen) == 10:
                    _ip("link", "set", host_if, "down")  # the partition
                    cut_at = time.monotonic()
                elif len(seen) == 11:  # cut off, A wrote nothing since: this is B carrying the run on
                    noticed_after = time.monotonic() - cut_at
                    _ip("link", "set", host_if, "up")  # healed: A's writer retries its buffered batch
        deadline = time.monotonic() + 15
        while b"taken over by another node" not in (tmp_path / "a.log").read_bytes():
            assert time.monotonic() < deadline, (tmp_path / "a.log").read_text()
            time.sleep(0.1)
        import redis as redis_py

        from tokenwire.log.redis_keys import KeyLayout

        entries = redis_py.Redis(port=port).xrange(KeyLayout("tokenwire").key(info.stream_id))
    finally:
        for proc in (a_proc, redis):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if b is not None:
            b.stop()
        a_log.close()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    terminal = seen[-1]
    assert (terminal.type, terminal.finish_reason) == ("done", "stop")  # type: ignore[union-attr]
    assert "".join(e.text for e in seen if e.type == "text.delta") == f"You said: {prompt}"  # type: ignore[union-attr]
    assert noticed_after <= 5.0  # lease (2 s) + a supervisor's look (0.5 s), with room for a busy machine
    stored = [tokenwire.events.decode(fields[b"e"]) for _, fields in entries]
    assert stored == seen and [e.seq for e in stored] == list(range(len(stored)))  # nothing of A's after the cut


def test_a_run_the_log_cannot_take_is_a_503_not_a_run_nobody_can_read() -> None:
    """Redis unreachable when a run starts: its start cannot be written, so the run ends at once
    with error(log_unavailable) and the request that asked for it gets 503 + Retry-After (it used
    to get 201 and the id of a stream no node could read)."""
    import httpx

    from tokenwire.server import create_app
    from wire import free_port, serve

    dead = RedisLog(f"redis://127.0.0.1:{free_port()}/0", unwritable_s=0.2)
    app = create_app(providers={"s": Scripted(["a"])}, api_keys=["log-key-123456"], log=dead)
    auth = {"Authorization": "Bearer log-key-123456"}
    with serve(app) as url:
        r = httpx.post(f"{url}/v1/runs", json={"prompt": "x"}, headers=auth, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"
        assert r.headers["retry-after"] == "1"
        chat = {"model": "s", "messages": [{"role": "user", "content": "x"}], "stream": True}
        r = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"
        r = httpx.post(f"{url}/v1/chat/completions", json={**chat, "stream": False}, headers=auth, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"


def test_a_redis_that_never_answers_is_a_503_too_not_a_request_that_hangs() -> None:
    """A partition drops packets instead of refusing them: a listening socket that never answers
    stands in for it. The run's first write and the pool's connect give up after command_timeout_s
    (without it the request waited for TCP, minutes), so the request gets 503 log_unavailable."""
    import socket

    import httpx

    from tokenwire.server import create_app
    from wire import serve

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes each handshake; nobody ever reads or answers
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        log = RedisLog(url, unwritable_s=0.2, command_timeout_s=0.3)
        app = create_app(providers={"s": Scripted(["a"])}, api_keys=["log-key-123456"], log=log)
        with serve(app) as base:
            r = httpx.post(
                f"{base}/v1/runs", json={"prompt": "x"}, headers={"Authorization": "Bearer log-key-123456"}, timeout=60
            )
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"
    finally:
        silent.close()


async def test_a_tree_with_a_child_on_another_node_is_followed_from_either(nodes: tuple[RedisLog, RedisLog]) -> None:
    """A parent produced on node a whose tool starts its child on node b: the child's start names
    the parent, the parent marks it, and a reader on either node follows the whole tree."""
    import tokenwire
    from tokenwire.log import follow_tree

    a, b = nodes

    @tokenwire.tool
    async def elsewhere(task: str) -> str:
        """Runs the task on the other node."""
        return (await tokenwire.generate(Scripted(["from ", "b"], interval_s=0.001), task, log=b)).text

    lead = Scripted.turns([ToolCall(call_id="c", name="elsewhere", args={"task": "t"})], ["merged"])
    root = tokenwire.generate(lead, "go", tools=[elsewhere], log=a)
    assert (await root).text == "merged"
    for reader in (a, b):
        tree: dict[str, list[Event]] = {}
        async for event in follow_tree(reader, root.stream_id):
            tree.setdefault(event.stream_id, []).append(event)
        (child,) = [sid for sid in tree if sid != root.stream_id]
        start = tree[child][0]
        assert start.type == "start" and start.parent is not None and start.parent.stream_id == root.stream_id
        assert "".join(e.text for e in tree[child] if e.type == "text.delta") == "from b"
        assert [e.seq for e in tree[child]] == list(range(len(tree[child]))) and tree[child][-1].type == "done"
        marks = [
            e.detail["outcome"]
            for e in tree[root.stream_id]
            if e.type == "step" and e.status == "finished" and e.name == "child"
        ]
        assert marks == ["done"]
    assert await a.read_elsewhere([]) == set()


# -- failover, retention and expiry ------------------------------------------------------------------


async def test_a_stream_missing_its_last_entries_gets_them_again_from_its_writer(
    nodes: tuple[RedisLog, RedisLog],
) -> None:
    """What a promoted replica looks like to a producer: the master acknowledged entries the replica
    never got. The next append finds the gap; the writer appends the lost events again from its
    ring, and a reader on another node that saw them before the failover sees each once."""
    a, b = nodes
    sid = "gap"
    expected = [*events(sid, 30), Done(stream_id=sid, seq=31)]
    writer = a.open(sid)
    for e in expected[:21]:
        writer.append(e)
    await writer.flush()
    seen: list[Event] = []

    async def read() -> None:
        async for e in b.read(sid, 0):
            seen.append(e)

    reader = asyncio.create_task(read())
    await wait_for(lambda: len(seen) == 21)
    r = await a.client()
    key = a.key(sid)
    kept = await r.xrange(key, max="14-1")  # the replica has the stream up to 14 only
    await r.delete(key)
    for entry_id, fields in kept:
        await r.xadd(key, fields, id=entry_id)
    assert (await a.info(sid)).next_seq == 15
    for e in expected[21:]:
        writer.append(e)
    await writer.flush()
    await asyncio.wait_for(reader, 10)
    assert seen == expected  # each once, in order
    assert [e async for e in b.read(sid, 0, follow=False)] == expected  # and the log has them all again


async def test_a_stream_whose_producer_vanished_expires_with_every_key(redis_url: str) -> None:
    """No terminal is ever written (the producer died, nobody took over): every key of the stream
    goes away ``idle_ttl_s`` after its last write or heartbeat."""
    log = RedisLog(redis_url, prefix=f"x{time.monotonic_ns()}", idle_ttl_s=1.0, lease_s=0.5)
    try:
        sid = "vanished"
        await log.ownership.save_run(sid, b"{}")
        assert await log.ownership.renew(sid, "tok", durable=True)
        batch = [(e.seq, tokenwire.events.encode(e)) for e in events(sid, 5)]
        assert await log.write(log.key(sid), batch, terminal=False, token="tok") == 1
        await log.announce_readers([sid], 1.0)
        r = await log.client()
        keys = [log.key(sid) + suffix for suffix in ("", ":lease", ":run", ":bytes", ":readers")]
        assert [await r.exists(k) for k in keys] == [1] * len(keys)
        assert all(0 < ttl <= 1000 for ttl in [await r.pttl(k) for k in keys])  # each with a bounded life
        deadline = time.monotonic() + 20
        while any([await r.exists(k) for k in keys]):
            assert time.monotonic() < deadline, [await r.pttl(k) for k in keys]
            await asyncio.sleep(0.1)
        with pytest.raises(tokenwire.errors.StreamNotFound):
            await log.info(sid)
    finally:
        await log.aclose()


def _retained(sizes: list[int], max_events: int, max_bytes: int) -> int:
    """The oracle: how many of the newest entries retention keeps (never fewer than one)."""
    kept, total = 0, 0
    for size in reversed(sizes):
        if kept >= 1 and (kept + 1 > max_events or total + size > max_bytes):
            break
        kept, total = kept + 1, total + size
    return kept


async def test_retention_by_events_and_bytes_keeps_the_newest_that_fit(nodes: tuple[RedisLog, RedisLog]) -> None:
    """Differential: after every batch of random sizes, what Redis keeps is the longest suffix
    within ``max_events`` and ``max_bytes`` (the oracle above); a reader from an older seq gets
    SeqEvicted, never a silent gap."""
    import random

    a, _ = nodes
    rng = random.Random(29)
    log = RedisLog(a.url, prefix=a.prefix, max_events=40, max_bytes=3000)
    try:
        sid, seq, sizes = "bytes", 0, []
        r = await log.client()
        for _ in range(25):
            batch = []
            for _ in range(rng.randint(1, 12)):
                e = TextDelta("x" * rng.choice([1, 10, 100, 400, 1500]), stream_id=sid, seq=seq)
                data = tokenwire.events.encode(e)
                batch.append((seq, data))
                sizes.append(len(data))
                seq += 1
            assert await log.write(log.key(sid), batch, terminal=False, token="t") == 1
            kept = _retained(sizes, 40, 3000)
            info = await log.info(sid)
            assert (info.first_seq, info.next_seq) == (seq - kept, seq)
            assert int(await r.get(log.key(sid) + ":bytes")) == sum(sizes[seq - kept :])
        assert info.first_seq > 0
        with pytest.raises(tokenwire.errors.SeqEvicted):
            [e async for e in log.read(sid, info.first_seq - 1, follow=False)]
        assert len([e async for e in log.read(sid, info.first_seq, follow=False)]) == seq - info.first_seq
    finally:
        await log.aclose()


async def test_a_full_redis_ends_the_run_at_once_with_log_unavailable(tmp_path: Path) -> None:
    """Redis at ``maxmemory`` (noeviction): the producer's stream ends with a clear
    ``error(transport, log_unavailable)`` at once, not after the outage bound; nothing hangs."""
    redis = OwnRedis(tmp_path)
    log = RedisLog(redis.url, prefix="full", unwritable_s=60.0, lease_s=0.5)
    other = RedisLog(redis.url, prefix="full", unwritable_s=60.0, lease_s=0.5)
    try:
        r = await log.client()
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", str(used + 2 * 2**20))
        words = Scripted(["w" * 4000 + " " for _ in range(2000)], interval_s=0.001)
        local = Transcript()
        handle = tokenwire.generate(words, "hi", log=log, observers=[local])
        await handle.ready()
        remote = asyncio.create_task(_collect(other, handle.stream_id, 0))  # a reader on another node
        terminal = await asyncio.wait_for(handle.wait(), 30)  # far below unwritable_s
        assert (terminal.type, terminal.code, terminal.source) == ("error", "log_unavailable", "transport")  # type: ignore[union-attr]
        assert "full" in terminal.message and "maxmemory" in terminal.message  # type: ignore[union-attr]
        assert local.events[-1] == terminal and len(local.events) < 2000
        # The remote reader does not hang: once the lease lapses it gets error(producer_lost) if
        # Redis has room for that one small event, else a LogUnavailable saying Redis is full.
        done, _ = await asyncio.wait([remote], timeout=30)
        assert done, "the remote reader hangs"
        if isinstance(remote.exception(), tokenwire.errors.LogUnavailable):
            assert "full" in str(remote.exception())
        else:
            seen = remote.result()
            assert (seen[-1].type, seen[-1].code) == ("error", "producer_lost")  # type: ignore[union-attr]
            assert [e.seq for e in seen] == list(range(len(seen)))
    finally:
        await log.aclose()
        await other.aclose()
        redis.kill()
