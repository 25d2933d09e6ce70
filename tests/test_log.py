"""The in-memory event log: cursor reads, tailing, retention and its errors."""

from __future__ import annotations

import asyncio

import pytest

import tokenwire
from tokenwire.events import Done, Event, Start, TextDelta
from tokenwire.log import MemoryLog


def make(sid: str, n: int) -> list[Event]:
    return [Start(model="m", stream_id=sid, seq=0), *(TextDelta(str(i), stream_id=sid, seq=i) for i in range(1, n + 1))]


async def test_reader_tails_a_live_stream_and_stops_at_the_terminal() -> None:
    log = MemoryLog()
    writer = log.open("s")
    events = make("s", 3)
    writer.append(events[0])

    async def read() -> list[int]:
        return [e.seq async for e in log.read("s")]

    reader = asyncio.create_task(read())
    for e in events[1:]:
        await asyncio.sleep(0.001)
        writer.append(e)
    writer.append(Done(stream_id="s", seq=4))
    assert await asyncio.wait_for(reader, 1) == [0, 1, 2, 3, 4]


async def test_read_from_the_middle_and_without_follow() -> None:
    log = MemoryLog()
    writer = log.open("s")
    for e in make("s", 5):
        writer.append(e)
    assert [e.seq async for e in log.read("s", 3, follow=False)] == [3, 4, 5]
    assert [e.seq async for e in log.read("s", 99, follow=False)] == []


async def test_evicted_seq_raises_a_clear_error() -> None:
    log = MemoryLog(max_events=4)
    writer = log.open("s")
    for e in make("s", 9):
        writer.append(e)
    with pytest.raises(tokenwire.SeqEvicted) as info:
        log.read("s", 2)
    assert info.value.first_available == 6
    assert "oldest retained seq is 6" in str(info.value)
    assert [e.seq async for e in log.read("s", 6, follow=False)] == [6, 7, 8, 9]


async def test_a_reader_that_falls_behind_gets_seq_evicted() -> None:
    log = MemoryLog(max_events=3)
    writer = log.open("s")
    writer.append(Start(model="m", stream_id="s", seq=0))
    reader = log.read("s", 0)
    assert (await anext(reader)).seq == 0
    for e in make("s", 10)[1:]:
        writer.append(e)
    with pytest.raises(tokenwire.SeqEvicted):
        await anext(reader)


async def test_unknown_stream_and_duplicate_ids() -> None:
    log = MemoryLog()
    with pytest.raises(tokenwire.StreamNotFound, match="no stream 'nope'"):
        log.read("nope")
    log.open("s")
    with pytest.raises(ValueError, match="already exists"):
        log.open("s")


async def test_max_streams_evicts_finished_streams_first() -> None:
    log = MemoryLog(max_streams=2)
    a = log.open("a")
    log.open("b")
    a.append(Done(stream_id="a", seq=0))
    log.open("c")
    assert "a" not in log and "b" in log and "c" in log
    log.open("d")  # nothing finished: the oldest goes
    assert "b" not in log and "c" in log and "d" in log


async def test_cancelled_reader_leaves_no_waiter_behind() -> None:
    log = MemoryLog()
    writer = log.open("s")
    writer.append(Start(model="m", stream_id="s", seq=0))

    async def read() -> None:
        async for _ in log.read("s"):
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    writer.append(TextDelta("x", stream_id="s", seq=1))  # must not touch the cancelled waiter
    assert not log._rings["s"]._waiters


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        MemoryLog(max_events=0)
