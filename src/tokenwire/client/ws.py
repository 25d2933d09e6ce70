"""The WebSocket client: runs and subscriptions multiplexed on one socket, acknowledged as they
are read (credit-based flow control), a stream or a whole run tree per subscription.

>>> async def main():                                                           # doctest: +SKIP
...     async with WebSocketClient("ws://127.0.0.1:8000/v1/ws", api_key="k") as ws:
...         async for event in ws.run("Write a haiku"):
...             print(event.type)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec

from tokenwire.client.http import run_body
from tokenwire.core.snapshot import Snapshot
from tokenwire.errors import ClientError, Conflict, ConnectionLost
from tokenwire.events import TERMINAL_TYPES, Event, decode
from tokenwire.log import TreeCursor, child_started, subscription_cursor

__all__ = ["WebSocketClient"]


class WebSocketClient:
    """Async client over the WebSocket transport (``websockets`` library).

    >>> async def main():                                                       # doctest: +SKIP
    ...     async with WebSocketClient("ws://127.0.0.1:8000/v1/ws", api_key="k") as ws:
    ...         async for event in ws.run("Write a haiku"):
    ...             print(event.type)

    Events are acknowledged as they are yielded (credit-based flow control: the server sends at
    most ``window`` unacknowledged events).
    """

    def __init__(self, url: str, *, api_key: str | None = None, window: int = 256):
        self.url = url
        self.api_key = api_key
        self.window = window
        self._ws: Any = None
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
        self._reader: asyncio.Task[None] | None = None
        self._trees: set[str] = set()  # roots of tree subscriptions
        self._cursors: dict[str, TreeCursor] = {}  # a multiplexed subscription's, by its root
        self._route: dict[str, str] = {}  # a tree's child stream -> its root (whose queue gets its events)
        self.last_run: dict[str, Any] | None = None
        """The server's reply to the last ``run``: ``stream_id``, ``token``, ``read_token``."""

    async def __aenter__(self) -> WebSocketClient:
        import websockets

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._ws = await websockets.connect(self.url, additional_headers=headers, max_size=None)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                obj = msgspec.json.decode(text)
                if "op" in obj:
                    if obj["op"] == "subscribe":  # before the events after it: they are routed by it
                        self._started(obj["stream_id"], obj["cursor"])
                    await self._replies.put(obj)  # bounded: an unread reply holds the socket's reader
                else:
                    event = decode(text)
                    root = self._route.get(event.stream_id, event.stream_id)
                    if root in self._trees and (child := child_started(event)) is not None:
                        self._route[child] = root  # the events of a tree's streams go to its one queue
                    q = self._queue(root)
                    if q.full():  # the server ignored the ack window: refuse to buffer without bound
                        q.get_nowait()
                        q.put_nowait(ConnectionLost(f"the server sent more than {q.maxsize - 1} unacknowledged events"))
                        continue
                    q.put_nowait(event)
        finally:
            closed = ConnectionLost(f"the WebSocket closed ({getattr(self._ws, 'close_code', None)})")
            for q in self._queues.values():
                if q.full():
                    q.get_nowait()
                q.put_nowait(closed)
            if self._replies.full():
                self._replies.get_nowait()
            self._replies.put_nowait({"op": "error", "code": "closed", "message": str(closed)})

    def _started(self, root: str, token: str) -> None:
        """A multiplexed subscription starts where the server says (for ``mine``: with the runs
        going on then): its cursor takes that position and its streams are routed to it."""
        cursor = self._cursors.get(root)
        if cursor is None:
            return
        cursor.restore(token)
        for sid in cursor.positions:
            if sid != root:
                self._route[sid] = root

    def _queue(self, stream_id: str) -> asyncio.Queue[Any]:
        q = self._queues.get(stream_id)
        if q is None:
            # The server keeps at most ``window`` events unacknowledged; one more for the terminal.
            q = self._queues[stream_id] = asyncio.Queue(maxsize=self.window + 1)
        return q

    async def send(self, op: str, **fields: Any) -> None:
        await self._ws.send(msgspec.json.encode({"op": op, **fields}).decode())

    async def reply(self) -> dict[str, Any]:
        """The next reply (``op`` message) from the server."""
        return await self._replies.get()

    async def _events(self, stream_id: str) -> AsyncGenerator[Event, None]:
        q = self._queue(stream_id)
        try:
            while True:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.__class__ in TERMINAL_TYPES:
                    return  # nothing follows: no credit to return
                await self.send("ack", stream_id=stream_id, seq=item.seq)
        finally:
            if self._queues.get(stream_id) is q:
                del self._queues[stream_id]  # a long-lived socket keeps nothing per finished stream

    async def run(self, request: str | dict[str, Any], **options: Any) -> AsyncGenerator[Event, None]:
        await self.send("run", window=self.window, **run_body(request, options))
        reply = await self.reply()
        if reply.get("op") != "run":
            raise ClientError(400, str(reply.get("code")), str(reply.get("message")))
        self.last_run = reply
        async with contextlib.aclosing(self._events(reply["stream_id"])) as events:
            async for event in events:
                yield event

    async def subscribe(
        self,
        stream_id: str,
        token: str,
        *,
        from_seq: int = 0,
        tree: bool = False,
        cursor: TreeCursor | None = None,
        snapshot: Snapshot | None = None,
    ) -> AsyncGenerator[Event, None]:
        """A stream's events from ``from_seq`` to its terminal event.

        With an empty ``snapshot`` (``Snapshot()``): join the run now, as
        :meth:`tokenwire.client.Client.subscribe` does: the server's snapshot fills it, the events
        after it are yielded and added to it.

        With ``tree`` (or a ``cursor``): the run's tree instead, the run and every child run below
        it (``event.stream_id`` says whose; each stream in order, a child's end before its
        parent's mark of it), until every stream of the tree ended. ``cursor`` (a
        :class:`~tokenwire.log.TreeCursor`) is where to start and is moved as events are
        yielded: subscribing again with it, on any connection, resumes every stream.

        One socket reads a stream once: a stream already read here, alone or in a tree, is a
        :class:`~tokenwire.errors.Conflict` (events are routed by stream id).
        """
        tree = tree or cursor is not None
        if stream_id in self._trees or stream_id in self._route:
            raise Conflict(f"stream {stream_id!r} is already read on this socket (alone or in a tree)")
        if not tree:
            join = {"snapshot": True} if snapshot is not None and from_seq == 0 else {}
            await self.send(
                "subscribe", stream_id=stream_id, token=token, from_seq=from_seq, window=self.window, **join
            )
            if join:
                answer = await self.reply()
                if answer.get("op") != "snapshot":
                    raise ClientError(400, str(answer.get("code")), str(answer.get("message")))
                assert snapshot is not None
                snapshot.restore(msgspec.json.encode(answer["snapshot"]))
                if snapshot.finished:
                    return  # it had ended: nothing comes after
            async with contextlib.aclosing(self._events(stream_id)) as events:
                async for event in events:
                    if snapshot is not None:
                        snapshot.add(event)
                    yield event
            return
        at = cursor if cursor is not None else TreeCursor(stream_id)
        fields = {"stream_id": stream_id, "token": token, "tree": True, "cursor": at.token()}
        async with contextlib.aclosing(self._subscribe_tree(at, fields)) as events:
            async for event in events:
                yield event

    async def subscribe_many(
        self,
        streams: Mapping[str, str | None] | None = None,
        *,
        mine: bool = False,
        cursor: TreeCursor | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Many streams as one subscription: ``streams`` maps each stream id to its read token
        (None: this socket's API key started it); ``mine`` adds every run of the API key, those
        started later included (announced by a ``step child started`` event of ``~runs``).
        Events and ``cursor`` as :meth:`~tokenwire.client.http.Client.subscribe_many`; other
        subscriptions may be added and dropped beside it on the same socket."""
        named, at = subscription_cursor(streams, mine=mine, cursor=cursor)
        refs = [{"stream_id": sid, **({"token": tok} if tok else {})} for sid, tok in named.items()]
        fields: dict[str, Any] = {"streams": refs, "mine": mine}
        if cursor is not None:
            fields["cursor"] = cursor.token()
        async with contextlib.aclosing(self._subscribe_tree(at, fields, reply=True)) as events:
            async for event in events:
                yield event

    async def unsubscribe(self, stream_id: str) -> None:
        """Stop a subscription of this socket (a stream, or a tree or multiplexed one by its
        root); its iterator gets no more events."""
        await self.send("unsubscribe", stream_id=stream_id)

    async def _subscribe_tree(
        self, at: TreeCursor, fields: dict[str, Any], *, reply: bool = False
    ) -> AsyncGenerator[Event, None]:
        root = at.root
        if root in self._trees or any(sid in self._route or sid in self._queues for sid in at.positions):
            raise Conflict(f"a stream of {root!r} is already read on this socket (alone or in a tree)")
        at.reopen()
        self._trees.add(root)
        if reply:
            self._cursors[root] = at
        for sid in at.positions:  # streams the cursor knows: their started marks will not come again
            if sid != root:
                self._route[sid] = root
        try:
            await self.send("subscribe", **fields, window=self.window)
            if reply:  # a multiplexed subscription: the server says where it starts (see _started)
                answer = await self.reply()
                if answer.get("op") != "subscribe":
                    raise ClientError(400, str(answer.get("code")), str(answer.get("message")))
            async with contextlib.aclosing(self._tree_events(root, at)) as events:
                async for event in events:
                    yield event
        finally:
            self._trees.discard(root)
            self._cursors.pop(root, None)
            for child in [c for c, r in self._route.items() if r == root]:
                del self._route[child]

    async def _tree_events(self, root: str, cursor: TreeCursor) -> AsyncGenerator[Event, None]:
        q = self._queue(root)
        n = 0  # the subscription's events so far: a tree's acks count them
        try:
            while True:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                for fresh in cursor.receive(item):
                    yield fresh
                if cursor.ended:
                    return  # nothing follows: no credit to return
                await self.send("ack", stream_id=root, seq=n)
                n += 1
        finally:
            if self._queues.get(root) is q:
                del self._queues[root]

    async def cancel(self, stream_id: str, token: str) -> None:
        await self.send("cancel", stream_id=stream_id, token=token)
