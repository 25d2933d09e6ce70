"""Many streams on one connection: a subscription to a set of runs, or to every run of an API key.

A browser holds six HTTP/1.1 connections per origin; a dashboard following twenty agents holds
one. A multiplexed subscription is a run tree (:class:`~tokenwire.log.TreeCursor`) with many
roots: each stream it names, read with the runs below it, and, with ``mine``, every run of the
caller's API key, those started later included (:mod:`tokenwire.log.owned`). Its cursor is one
token, the position of every stream at once: an SSE reconnect sends it as ``Last-Event-ID`` and
every stream resumes where it was, nothing lost and nothing twice.

A subscription (:class:`Subscription`, the body of ``POST /v1/events``; the fields of a
WebSocket ``subscribe`` op)::

    {"streams": [{"stream_id": "…", "token": "<read token>", "from_seq": 0}, …],
     "mine": false, "cursor": "<the last id seen>"}

Each stream is authorised as a single one is: its token, or, without one, the caller's API key
when it started the run. ``mine`` needs the API key and never gives another key's runs; a
cursor is the client's, so every stream it names must be a named one, one of the key's runs, or
a run below one of them. Streams are delivered in the order their events are read, a batch at a
time each: a busy stream cannot hold back a quiet one.
"""

from __future__ import annotations

import msgspec

from tokenwire.errors import InvalidRequest, SeqEvicted
from tokenwire.log import OWNED, TreeCursor, check_tree, live_runs
from tokenwire.server.service import RunService

__all__ = ["MAX_STREAMS", "StreamRef", "Subscription", "open_subscription"]

MAX_STREAMS = 1024
"""The most streams one subscription reads at once (those named, the runs found, their children)."""


class StreamRef(msgspec.Struct, forbid_unknown_fields=True):
    """One stream a subscription names."""

    stream_id: str
    token: str | None = None
    """A token with ``read`` on it; None: the caller's API key started the run."""
    from_seq: int = 0
    """Where to start when the cursor does not say (the stream is new to it)."""


class Subscription(msgspec.Struct, forbid_unknown_fields=True):
    """What a multiplexed subscription reads (see the module docstring)."""

    streams: list[StreamRef] = []
    mine: bool = False
    """Every run of the caller's API key: those going now and every one started later."""
    cursor: str | None = None
    """Where to resume: the ``id`` of the last event seen (``Last-Event-ID`` wins over it)."""


async def open_subscription(service: RunService, sub: Subscription, owner: str | None) -> TreeCursor:
    """The cursor to read ``sub`` from, every stream in it authorised for the caller (``owner``:
    its API key's, None without one). Raises :class:`InvalidRequest`, :class:`SeqEvicted`, or
    the errors of :meth:`RunService.authorize`."""
    if not sub.streams and not sub.mine:
        raise InvalidRequest('a subscription names "streams", or "mine": true for every run of the API key')
    if len(sub.streams) > MAX_STREAMS:
        raise InvalidRequest(f"at most {MAX_STREAMS} streams on one subscription, not {len(sub.streams)}")
    if sub.mine and owner is None:
        raise InvalidRequest('"mine" needs the API key (Authorization: Bearer <key>)')
    if service.config.api_keys is None and (sub.mine or any(ref.token is None for ref in sub.streams)):
        # Without API keys every caller is the same owner: only a stream's token grants reading it.
        raise InvalidRequest('this server has no API keys (--no-auth): name each stream with its "token"')
    named = [ref.stream_id for ref in sub.streams]
    if sub.cursor:
        cursor = TreeCursor.parse(sub.cursor, max_streams=MAX_STREAMS)
        first = OWNED if sub.mine else named[0] if named else None
        if cursor.root != first:
            raise InvalidRequest("the cursor is of another subscription: its first stream must be the first one named")
        if sub.mine and owner is not None:
            listed, _ = await service.log.ownership.latest_runs(owner, 0)
            if cursor.positions[OWNED] > listed:  # a list this log no longer has (a memory log restarted)
                cursor.positions[OWNED] = 0
    elif sub.mine:
        assert owner is not None
        cursor = await live_runs(service.log, owner, max_streams=MAX_STREAMS)
    else:
        cursor = TreeCursor(named[0], max_streams=MAX_STREAMS)
    for ref in sub.streams:
        if ref.token is not None:
            info = await service.authorize(ref.stream_id, ref.token, "read")
        else:
            info = await service.log.info(ref.stream_id)  # StreamNotFound first, as with a token
            if owner is None or not await service.durable.owns(ref.stream_id, owner):
                raise InvalidRequest(f"stream {ref.stream_id!r} needs its token: this API key did not start it")
        cursor.add_root(ref.stream_id, ref.from_seq)
        at = cursor.positions[ref.stream_id]
        if at < info.first_seq and not cursor.finished(ref.stream_id):
            raise SeqEvicted(ref.stream_id, at, info.first_seq)

    async def owned(stream_id: str) -> bool:
        return sub.mine and owner is not None and await service.durable.owns(stream_id, owner)

    await check_tree(service.log, cursor, top=owned)  # a cursor names only streams the caller may read
    return cursor
