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
    with pytest.raises(tokenwire.errors.SeqEvicted) as info:
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
    with pytest.raises(tokenwire.errors.SeqEvicted):
        await anext(reader)


async def test_unknown_stream_and_duplicate_ids() -> None:
    log = MemoryLog()
    with pytest.raises(tokenwire.errors.StreamNotFound, match="no stream 'nope'"):
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


# -- cursors, channels and close semantics --------------------------------------------------------


async def test_appending_after_the_terminal_raises_instead_of_queueing() -> None:
    writer = MemoryLog().open("s")
    writer.append(Start(model="m", stream_id="s", seq=0))
    writer.append(Done(stream_id="s", seq=1))
    with pytest.raises(tokenwire.errors.StreamClosed, match="already ended"):
        writer.append(TextDelta("late", stream_id="s", seq=2))


async def test_a_full_block_cursor_holds_the_producer_until_read_or_closed() -> None:
    writer = MemoryLog().open("s")
    cursor = writer.cursor(0, maxsize=2, overflow="block")
    events = make("s", 4)
    assert writer.append(events[0]) is None
    assert writer.append(events[1]) is None
    wait = writer.append(events[2])  # three unread, two allowed: the producer must wait
    assert wait is not None
    task = asyncio.ensure_future(wait)
    await asyncio.sleep(0)
    assert not task.done()
    assert [e.seq for e in await cursor.next_batch()] == [0, 1, 2]  # reading frees the producer
    await asyncio.wait_for(task, 1)
    assert writer.append(events[3]) is None
    more = make("s", 5)
    assert writer.append(more[4]) is None
    r = writer.append(more[5])  # unread 3, 4, 5: full again
    assert r is not None
    task = asyncio.ensure_future(r)
    cursor.close()  # detaching frees it too
    await asyncio.wait_for(task, 1)
    assert await cursor.next_batch() == []


async def test_drop_oldest_and_coalesce_cursors_never_hold_the_producer() -> None:
    writer = MemoryLog().open("s")
    drop = writer.cursor(0, maxsize=2, overflow="drop_oldest")
    merge = writer.cursor(0, maxsize=2, overflow="coalesce")
    for e in make("s", 6):
        assert writer.append(e) is None
    writer.append(Done(stream_id="s", seq=7))
    assert [e.seq for e in await drop.next_batch()] == [6, 7]
    assert drop.dropped == 6
    merged = await merge.next_batch()
    assert [e.type for e in merged] == ["start", "text.delta", "done"]
    assert merged[1].text == "123456" and merged[1].seq == 6  # type: ignore[union-attr]


async def test_breaking_out_of_an_iterator_detaches_its_cursor_at_once() -> None:
    """A reader that leaves never holds the producer until a limit fires."""
    from tokenwire.providers import Scripted

    items = [str(i) for i in range(100)]
    it = tokenwire.EventIterator(maxsize=1)
    handle = tokenwire.generate(Scripted(items), "hi", observers=[it])
    async for event in it:
        if event.type == "text.delta":
            break
    # The producer ran to the end on its own: nobody holds it any more.
    terminal = await asyncio.wait_for(handle.wait(), 5)
    assert terminal.type == "done" and handle.result().text == "".join(items)


async def test_a_dropped_iterator_detaches_its_cursor() -> None:
    import gc

    from tokenwire.providers import Scripted

    observers = [tokenwire.EventIterator(maxsize=1)]
    handle = tokenwire.generate(Scripted([str(i) for i in range(50)]), "hi", observers=observers)
    observers.clear()
    gc.collect()  # the iterator was never referenced: its cursor goes with it
    terminal = await asyncio.wait_for(handle.wait(), 5)
    assert terminal.type == "done"
