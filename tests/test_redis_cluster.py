"""The Redis log on a Redis Cluster of the test's own (three masters, three replicas), where a
master dies mid-stream: its replica is promoted, and producers and readers go on by themselves.

(The rest of the Redis suite, tests/test_redis_log.py and tests/test_durable_nodes.py, runs on one
instance and on a cluster both.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import tokenwire
from tokenwire.events import Event
from tokenwire.log.redis import RedisLog
from tokenwire.providers import Scripted
from tokenwire.testing import Transcript
from wire import RedisCluster, wait_for


@pytest.fixture(autouse=True)
def _once(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("--log-backend") == "redis":
        pytest.skip("these tests start their own cluster: the memory-backend run covers them")


async def _collect(log: RedisLog, sid: str) -> list[Event]:
    return [e async for e in log.read(sid, 0)]


async def test_a_master_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGKILL the master holding a live stream: the producer buffers and appends what the
    promoted replica lacks again, readers on two other nodes wait and go on; each sees every
    event exactly once, in order, and so does the log."""
    cluster = await asyncio.to_thread(RedisCluster, str(tmp_path))
    prefix = "failover"
    producer = RedisLog(cluster.url, prefix=prefix, unwritable_s=60.0)
    a, b = RedisLog(cluster.url, prefix=prefix, unwritable_s=60.0), RedisLog(cluster.url, prefix=prefix)
    b.unwritable_s = 60.0
    try:
        local = Transcript()
        words = Scripted([f"w{i} " for i in range(600)], interval_s=0.01)
        handle = tokenwire.generate(words, "hi", log=producer, observers=[local])
        await handle.ready()
        sid = handle.stream_id
        readers = [asyncio.create_task(_collect(log, sid)) for log in (a, b)]
        await wait_for(lambda: len(local.events) > 150, within=30)
        master = await asyncio.to_thread(cluster.master_of, producer.key(sid))
        await asyncio.to_thread(cluster.kill, master)
        terminal = await asyncio.wait_for(handle.wait(), 90)
        assert (terminal.type, terminal.finish_reason) == ("done", "stop")  # type: ignore[union-attr]
        assert await asyncio.to_thread(cluster.master_of, producer.key(sid)) != master  # a replica took over
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
        for seen in results:
            assert seen == local.events
        assert [e async for e in a.read(sid, 0, follow=False)] == local.events
    finally:
        for log in (producer, a, b):
            await log.aclose()
        await asyncio.to_thread(cluster.stop)
