"""Follow a run tree: a run's events and those of every run below it, on one iterator.

A parent's stream marks each child run with ``step child started`` (its ``stream_id``, written
once the child is in the log) and ``step child finished``; :func:`follow_tree` reads the root
and, as each mark arrives, the child it names, and so on down. Each stream's events come in
order and each event names its stream (``event.stream_id``); streams interleave as they are
read. ``cursors`` is the resume state: the next seq of every stream seen so far, kept up to date
while iterating, so after a dropped connection the same dict carries on with nothing lost and
nothing twice.

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
...     cursors = {}
...     seen = [(e.stream_id, e.type) async for e in follow_tree(log, "root", cursors)]
...     return sorted(seen), cursors
>>> asyncio.run(demo())  # doctest: +NORMALIZE_WHITESPACE
([('kid', 'done'), ('kid', 'start'), ('root', 'done'), ('root', 'start'), ('root', 'step')],
 {'root': 3, 'kid': 2})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping, Sequence

from tokenwire.events import Event, Step
from tokenwire.log.base import EventLog

__all__ = ["child_started", "follow_tree"]

_END = object()


def child_started(event: Event) -> str | None:
    """The stream id of the child run ``event`` marks as started in its parent, or None."""
    if event.__class__ is not Step or event.name != "child" or event.status != "started":
        return None
    detail = event.detail
    sid = detail.get("stream_id") if isinstance(detail, dict) else None
    return sid if isinstance(sid, str) and sid else None


async def follow_tree(
    log: EventLog,
    stream_id: str,
    cursors: MutableMapping[str, int] | None = None,
    *,
    follow: bool = True,
    max_streams: int = 1024,
) -> AsyncIterator[Event]:
    """Every event of run ``stream_id`` and of the runs below it (see the module docstring).

    ``cursors`` maps stream ids to the next seq to read (absent: from 0) and is updated as
    events are yielded. With ``follow`` the iterator ends once every stream of the tree ended;
    without it, at the current end of each. ``max_streams`` bounds the streams followed (a
    hostile or runaway tree); children past it are not read. Errors of a stream's read
    (:class:`~tokenwire.errors.SeqEvicted` …) end the iteration with that error.
    """
    pos = cursors if cursors is not None else {}
    pos.setdefault(stream_id, 0)
    queue: asyncio.Queue[tuple[str, Sequence[Event] | BaseException | object]] = asyncio.Queue(256)
    readers: dict[str, asyncio.Task[None]] = {}

    async def read(sid: str) -> None:
        batches = log.batches(sid, pos.get(sid, 0), follow=follow)
        try:
            async for batch in batches:
                await queue.put((sid, batch))
            await queue.put((sid, _END))
        except Exception as exc:
            await queue.put((sid, exc))
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()

    def open_reader(sid: str) -> None:
        if sid not in readers and len(readers) < max_streams:
            pos.setdefault(sid, 0)
            readers[sid] = asyncio.get_running_loop().create_task(read(sid), name=f"tokenwire-tree-{sid}")

    for sid in list(pos):  # resuming: every stream seen before, each from its own position
        open_reader(sid)
    live = len(readers)
    try:
        while live:
            sid, item = await queue.get()
            if item is _END:
                live -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            for event in item:  # type: ignore[attr-defined]
                if event.seq < pos[sid]:
                    continue  # a resumed reader's overlap
                pos[sid] = event.seq + 1
                child = child_started(event)
                if child is not None and child not in readers:
                    open_reader(child)
                    live += child in readers
                yield event
    finally:
        for task in readers.values():
            task.cancel()
        for task in readers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
