"""Follow a run tree: a run's events and those of every run below it, on one iterator.

:func:`follow_tree` reads the root and, as each ``step child started`` mark arrives, the child it
names, and so on down (:func:`read_tree` is the same a batch at a time, for servers). Each
stream's events come in order and each event names its stream (``event.stream_id``); streams
interleave as they are read, except that a parent's ``child finished`` mark always comes after
that child's terminal event. A :class:`~tokenwire.log.tree.TreeCursor` is the resume state:
after a dropped connection the same cursor (or one :meth:`~tokenwire.log.tree.TreeCursor.parse`
made from its token) carries on with nothing lost and nothing twice; :func:`check_tree` is what
a server asks of a client's cursor first.
>>> import asyncio
>>> from tokenwire.events import Done, Start, Step
>>> from tokenwire.log import MemoryLog
>>> async def demo():
...     log = MemoryLog()
...     root, child = log.open("root"), log.open("kid")
...     root.append(Start(model="m", stream_id="root", seq=0))
...     child.append(Start(model="m", stream_id="kid", seq=0))
...     root.append(Step(name="child", status="started", detail={"stream_id": "kid"}, stream_id="root", seq=1))
...     child.append(Done(stream_id="kid", seq=1))
...     root.append(Done(stream_id="root", seq=2))
...     cursor = TreeCursor("root")
...     seen = [(e.stream_id, e.type) async for e in follow_tree(log, "root", cursor)]
...     return sorted(seen), cursor.token()
>>> asyncio.run(demo())  # doctest: +NORMALIZE_WHITESPACE
([('kid', 'done'), ('kid', 'start'), ('root', 'done'), ('root', 'start'), ('root', 'step')],
 '3e@root')
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence

from tokenwire.errors import InvalidRequest
from tokenwire.events import Event, Start
from tokenwire.log.base import EventLog
from tokenwire.log.tree import TreeCursor

__all__ = ["FAIR_SHARE", "check_tree", "follow_tree", "read_tree"]

_END = object()
FAIR_SHARE = 256
"""The most events of one stream :func:`read_tree` delivers before the other streams' waiting
events get their turn: a stream with a long backlog cannot hold back a quiet one."""


async def _parent_of(log: EventLog, stream_id: str) -> str | None:
    """The stream id of ``stream_id``'s parent run, from its ``start``; None for a root, or a
    stream the log does not have (or no longer has from its start)."""
    first = await log.first(stream_id)
    parent = first.parent if isinstance(first, Start) else None
    return parent.stream_id if parent is not None else None


async def check_tree(
    log: EventLog,
    cursor: TreeCursor,
    *,
    max_depth: int = 64,
    top: Callable[[str], Awaitable[bool]] | None = None,
) -> None:
    """:class:`~tokenwire.errors.InvalidRequest` unless every stream ``cursor`` names is one of
    its roots or a run below one (its ``start`` names a parent that is, up to a root). A cursor
    comes from the client, and a reader reads what it names: the roots' tokens authorise their
    trees only. ``top``: whether a run with no parent is the reader's too (its owner's)."""
    inside = set(cursor.roots)
    for sid in cursor.positions:
        path, at = [], sid
        while at not in inside:
            path.append(at)
            parent = await _parent_of(log, at) if len(path) <= max_depth else None
            if parent is None:
                if len(path) <= max_depth and top is not None and await top(at):
                    break
                raise InvalidRequest(f"the cursor names stream {sid!r}, which is not a run below {cursor.root!r}")
            at = parent
        inside.update(path)


async def read_tree(
    log: EventLog,
    cursor: TreeCursor,
    *,
    follow: bool = True,
    idle_s: float | None = None,
    max_lag: int | None = None,
    live_from: int | None = None,
    root_batches: Callable[[int, float | None], AsyncIterator[Sequence[Event]]] | None = None,
    reading: Callable[[str], contextlib.AbstractContextManager[object]] | None = None,
) -> AsyncGenerator[Iterator[Event], None]:
    """The tree's deliverable events from ``cursor`` on, a batch at a time: each batch is a
    :meth:`TreeCursor.feed` iterator, to be used up before the next one is asked for (the cursor
    moves as its events are taken, so ``cursor.token()`` after an event is where to resume).

    With ``follow`` it ends once every stream of the tree ended; without it, at the current end
    of each. ``idle_s``, ``max_lag`` and ``live_from`` are :meth:`EventLog.batches`'s (the
    roots' readers give the empty batches of an idle tree, at most one per ``idle_s`` however
    many roots). Streams take turns: a batch of more than :data:`FAIR_SHARE` events is delivered
    a share at a time, each behind what the other streams have waiting. A stream's read error
    (:class:`~tokenwire.errors.SeqEvicted` …) ends the iteration with that error. It reads what
    ``cursor`` names: a server checks a client's cursor first (:func:`check_tree`).
    ``root_batches(from_seq, idle_s)``: where the root's batches come from instead of the log (a
    root that is not a stream, such as an owner's runs: :mod:`tokenwire.log.owned`).
    ``reading(stream_id)``: a context each stream's reader holds while it reads (a server counts
    the readers of its runs with it).
    """
    queue: asyncio.Queue[tuple[str, Sequence[Event] | BaseException | object, asyncio.Event | None]]
    queue = asyncio.Queue(256)
    readers: dict[str, asyncio.Task[None]] = {}

    async def read(sid: str, from_seq: int, live: int | None) -> None:
        virtual = root_batches is not None and sid == cursor.root
        with reading(sid) if reading is not None and not virtual else contextlib.nullcontext():
            await pump(sid, from_seq, live, virtual)

    async def pump(sid: str, from_seq: int, live: int | None, virtual: bool) -> None:
        idle = idle_s if sid in cursor.roots else None
        batches: AsyncIterator[Sequence[Event]] | None = None
        try:  # a backend may raise at once (an unknown or evicted stream): that too ends the read
            if root_batches is not None and virtual:
                batches = root_batches(from_seq, idle)
            else:
                batches = log.batches(sid, from_seq, follow=follow, idle_s=idle, max_lag=max_lag, live_from=live)
            async for batch in batches:
                if len(batch) <= FAIR_SHARE:
                    await queue.put((sid, batch, None))
                    continue
                for i in range(0, len(batch), FAIR_SHARE):  # a backlog: one share in the queue at a time
                    taken = asyncio.Event()
                    await queue.put((sid, batch[i : i + FAIR_SHARE], taken))
                    await taken.wait()
            await queue.put((sid, _END, None))
        except Exception as exc:
            await queue.put((sid, exc, None))
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def start_readers() -> int:
        loop = asyncio.get_running_loop()
        for sid in cursor.opening:
            # A child that started while this tree is read is live for it from its first event.
            fresh = cursor.marked_at.get(sid, 0.0) >= began
            reading = read(sid, cursor.positions[sid], 0 if fresh else live_from)
            readers[sid] = loop.create_task(reading, name=f"tokenwire-tree-{sid}")
        opened = len(cursor.opening)
        cursor.opening.clear()
        return opened

    began = time.time()
    clock = asyncio.get_running_loop().time
    pinged = clock()
    cursor.reopen()
    live = start_readers()
    try:
        while live and not cursor.ended:
            sid, item, taken = await queue.get()
            if taken is not None:
                taken.set()  # the stream's next share goes behind what the others queued meanwhile
            if item is _END:
                live -= 1
                readers.pop(sid, None)  # a long-lived tree (an owner's runs) keeps only its live readers
                continue
            if isinstance(item, BaseException):
                raise item
            if not item:  # a root is idle: one empty batch per idle_s for the whole tree
                if idle_s is not None and clock() - pinged >= idle_s / 2:
                    pinged = clock()
                    yield iter(())
                continue
            yield cursor.feed(sid, item)  # type: ignore[arg-type]
            if cursor.opening:
                live += start_readers()
    finally:
        for task in readers.values():
            task.cancel()
        for task in readers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def follow_tree(
    log: EventLog,
    stream_id: str,
    cursor: TreeCursor | None = None,
    *,
    follow: bool = True,
    max_streams: int = 1024,
) -> AsyncIterator[Event]:
    """Every event of run ``stream_id`` and of the runs below it (see the module docstring).

    ``cursor`` is where to start and is moved as events are yielded (a new one: the whole tree
    from the start). With ``follow`` the iterator ends once every stream of the tree ended;
    without it, at the current end of each. ``max_streams`` bounds the streams followed (a
    hostile or runaway tree); children past it are not read.
    """
    if cursor is None:
        cursor = TreeCursor(stream_id, max_streams=max_streams)
    async with contextlib.aclosing(read_tree(log, cursor, follow=follow)) as batches:  # its readers end with it
        async for batch in batches:
            for event in batch:
                yield event
