"""Follow every run of an owner (an API key), new ones included, as one run tree.

The log lists each run under its owner as it starts (:meth:`RunOwnership.index_run
<tokenwire.log.ownership.RunOwnership.index_run>`, on every node of a shared log). To a reader
that list is the root of a tree, :data:`OWNED`: :func:`owned_batches` turns each entry into the
``step child started`` mark a parent writes for a child run (its seq is the run's position in
the list), so :class:`~tokenwire.log.TreeCursor` and :func:`~tokenwire.log.read_tree` follow an
owner's runs (and the runs below them) the way they follow a run's children, and one cursor
token resumes them all. The root never ends: a reader of it follows until it leaves.

>>> import asyncio
>>> from tokenwire.log import MemoryLog, TreeCursor, read_tree
>>> from tokenwire.events import Done, Start
>>> async def demo():
...     log = MemoryLog()
...     for sid in ("r1", "r2"):
...         log.open(sid).append(Start(model="m", stream_id=sid, seq=0))
...         await log.ownership.index_run("key-a", sid)
...     log.open("r3").append(Start(model="m", stream_id="r3", seq=0))
...     await log.ownership.index_run("key-b", "r3")  # another owner's: not seen
...     cursor = TreeCursor(OWNED)
...     seen = []
...     async for batch in read_tree(log, cursor, root_batches=owned_batches(log, "key-a")):
...         seen += [(e.stream_id, e.type) for e in batch]
...         if len(seen) == 4:
...             return sorted(seen), cursor.positions
>>> asyncio.run(demo())  # doctest: +NORMALIZE_WHITESPACE
([('r1', 'start'), ('r2', 'start'), ('~runs', 'step'), ('~runs', 'step')], {'~runs': 2, 'r1': 1, 'r2': 1})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from tokenwire.errors import StreamNotFound
from tokenwire.events import Event, Step
from tokenwire.log.base import EventLog
from tokenwire.log.tree import TreeCursor

__all__ = ["OWNED", "live_runs", "owned_batches", "subscription_cursor"]

OWNED = "~runs"
"""The root of an owner's runs in a :class:`~tokenwire.log.TreeCursor` (not a stream: no run id
has a ``~``). Its events are the marks of the owner's runs, one each, as they start."""

SCAN = 256
"""How many of an owner's newest runs :func:`live_runs` looks at for those still going."""
WAIT_S = 30.0
"""How long one look for new runs waits when no ``idle_s`` is asked for."""


def owned_batches(log: EventLog, owner: str) -> Callable[[int, float | None], AsyncIterator[Sequence[Event]]]:
    """The ``root_batches`` of :func:`~tokenwire.log.read_tree` for ``owner``'s runs: from a
    position, batches of their marks as the runs are listed (an empty batch after ``idle_s``
    without one)."""

    async def batches(from_seq: int, idle_s: float | None) -> AsyncIterator[Sequence[Event]]:
        ownership, at = log.ownership, from_seq
        while True:
            found = await ownership.runs_of(owner, at, wait_s=WAIT_S if idle_s is None else idle_s)
            if found:
                at = found[-1][0] + 1
                yield [
                    Step(name="child", status="started", detail={"stream_id": sid}, stream_id=OWNED, seq=pos)
                    for pos, sid in found
                ]
            elif idle_s is not None:
                yield ()

    return batches


async def live_runs(log: EventLog, owner: str, *, max_streams: int = 1024) -> TreeCursor:
    """A new reader's cursor of ``owner``'s runs: the runs still going among its newest
    :data:`SCAN` (suspended ones too), each from its start, and every run listed after now."""
    listed, newest = await log.ownership.latest_runs(owner, SCAN)
    positions = {OWNED: listed}
    for sid in newest:
        try:
            if not (await log.info(sid)).finished and len(positions) < max_streams:
                positions[sid] = 0
        except StreamNotFound:
            continue  # gone from the log already
    return TreeCursor(OWNED, positions, max_streams=max_streams)


def subscription_cursor(
    streams: Mapping[str, str | None] | None, *, mine: bool, cursor: TreeCursor | None
) -> tuple[dict[str, str | None], TreeCursor]:
    """What a client starts a subscription of many streams with: the streams it names (stream id
    -> read token) and its cursor, the one given or a new one (rooted at :data:`OWNED` with
    ``mine``, else at the first stream named). :class:`ValueError` for a subscription of nothing."""
    named = dict(streams or {})
    if not named and not mine:
        raise ValueError("a subscription of many streams names streams, or asks for mine")
    return named, cursor or TreeCursor(OWNED if mine else next(iter(named)), roots=named)
