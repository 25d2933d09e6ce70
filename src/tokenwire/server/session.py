"""A multiplexed connection's operations, whatever carries them: runs, subscriptions with
credit-based flow control, acks, cancels and client-side tool results.

The WebSocket protocol (:mod:`tokenwire.server.ws`, JSON messages) and gRPC's ``Session`` call
(:mod:`tokenwire.grpc.server`, protobuf messages) both hand their decoded messages to one
:class:`Session` as ``{"op": …}`` dicts and give it two ways out: ``reply`` (an op's answer, a
dict) and ``send`` (an event's frame, in the transport's wire format, shared by every reader
through the server's :class:`~tokenwire.wire.FrameCache`). Ops:

- ``run`` (RunBody fields, ``id``?, ``window``?): needs the API key; replies
  ``{"op": "run", "id", "stream_id", "token", "read_token"}`` and subscribes from seq 0;
- ``subscribe`` (``stream_id``, ``token``, ``from_seq``?, ``window``?, ``snapshot``?: join now,
  replying ``{"op": "snapshot", "stream_id", "snapshot": <the run folded>}`` before the events
  after it; WebSocket only); with ``tree: true`` and a
  ``cursor``? (a :class:`~tokenwire.log.TreeCursor` token): the run and every child run below it
  (each event names its stream), from the cursor; the token authorises the whole tree; with
  ``streams`` or ``mine`` instead: many streams, or every run of the connection's API key, as
  one subscription (:mod:`tokenwire.server.multiplex`), known by its cursor's root; replies
  ``{"op": "subscribe", "stream_id": <root>, "cursor": <where it starts>, "status": "subscribed"}``;
- ``unsubscribe`` (``stream_id``): stop a subscription on a live connection;
- ``ack`` (``stream_id``, ``seq``): events up to ``seq`` are processed (of a tree subscription,
  ``stream_id`` is its root and ``seq`` counts its events from 0); at most ``window``
  unacknowledged events are in flight per subscription;
- ``cancel`` (``stream_id``, ``token``);
- ``approve`` (``stream_id``, ``call_id``, ``approved``, ``token``?): answers a suspended durable run's
  approval (the run's token, the one that can cancel it, or else the connection's API key must
  own the run; without API keys only the token will do) and resumes it;
- ``tool_result`` (``stream_id``, ``call_id``, ``result``, ``is_error``?, ``token``?: the run's
  token, or the connection's API key): a client-side call's result; the suspended run resumes.

Every op is a call of the run service (:class:`~tokenwire.server.service.RunService`); the typed
errors it raises become a :class:`SessionError` through :data:`CODES`, the one table of both
transports. A bad message raises :class:`SessionError` (code, message): the transport reports it
and the connection stays open; bad credentials raise :class:`~tokenwire.errors.Unauthorized`
(the transport closes the connection).

A session is an async context manager: it owns the tasks of its subscriptions (a
:class:`~tokenwire.core.tasks.TaskSet`), and leaving it waits for them; :meth:`Session.close`
ends them first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import msgspec

from tokenwire.core.tasks import TaskSet
from tokenwire.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    ModelNotFound,
    OverCapacity,
    SeqEvicted,
    SessionError,
    ShuttingDown,
    StreamNotFound,
    TokenwireError,
    Unauthorized,
)
from tokenwire.events import Event
from tokenwire.log import TreeCursor, check_tree, owned_batches, read_tree
from tokenwire.server.multiplex import Subscription, open_subscription
from tokenwire.server.schema import RunBody
from tokenwire.server.service import RunService
from tokenwire.server.streaming import tree_frame
from tokenwire.wire import WireFormat

__all__ = ["CODES", "DEFAULT_WINDOW", "MAX_SUBSCRIPTIONS", "Session"]

DEFAULT_WINDOW = 256
MAX_SUBSCRIPTIONS = 64

CODES: dict[type[TokenwireError], str] = {
    Conflict: "conflict",
    Forbidden: "forbidden",
    StreamNotFound: "not_found",
    ModelNotFound: "model_not_found",
    SeqEvicted: "gone",
    InvalidRequest: "invalid_request",
    OverCapacity: "over_capacity",
    ShuttingDown: "shutting_down",
    LogUnavailable: "log_unavailable",
}
"""The session error code for each typed error the run service raises."""


def session_error(exc: TokenwireError) -> SessionError | None:
    """The :class:`SessionError` a typed error becomes, or None (Unauthorized: the transport closes)."""
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            seconds = getattr(exc, "retry_after_s", None)
            message = str(exc) if seconds is None else f"{exc} (retry after {seconds:g} s)"
            return SessionError(code, message)
    return None


class _Subscription:
    def __init__(self, stream_id: str, cursor: int, window: int, tree: TreeCursor | None = None):
        self.stream_id = stream_id
        self.tree = tree
        self.live_from: int | None = None  # 0: the subscription of the op that started the run
        self.cursor = cursor
        self.acked = cursor - 1
        self.window = window
        self.credit = asyncio.Event()
        self.credit.set()
        self.task: asyncio.Task[None] | None = None


class Session:
    """The ops of one connection (see the module docstring).

    ``send(frame)`` writes an event's frame (``fmt``'s encoding); ``reply(obj)`` writes an op's
    answer; ``owner`` is who runs started here belong to (None: runs are refused, the
    transport closes); ``headers`` are the connection's (their ``traceparent`` parents its runs);
    ``disconnected`` are the exceptions that mean the peer left (they end a subscription quietly).
    """

    def __init__(
        self,
        service: RunService,
        *,
        owner: str | None,
        headers: Mapping[str, str],
        fmt: WireFormat,
        send: Callable[[Any], Awaitable[None]],
        reply: Callable[[dict[str, Any]], Awaitable[None]],
        disconnected: tuple[type[BaseException], ...] = (),
    ):
        self.service = service
        self.owner = owner
        """Who runs started here belong to (an API key's owner; None: this connection may not start runs)."""
        self.headers = headers
        self.fmt = fmt
        self.send = send
        self.reply = reply
        self.disconnected = disconnected
        self.subs: dict[str, _Subscription] = {}
        self._tasks = TaskSet("session")

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tasks.__aexit__(kind, exc, tb)

    async def handle(self, msg: dict[str, Any]) -> None:
        """Act on one decoded message (``{"op": …, …}``)."""
        if not isinstance(msg.get("op"), str):
            raise SessionError("bad_message", 'every message is an object with an "op"')
        op = msg.pop("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise SessionError(
                "unknown_op",
                f"unknown op {op!r}; ops are run, subscribe, unsubscribe, ack, cancel, approve, tool_result",
            )
        try:
            await handler(msg)
        except TokenwireError as exc:
            error = session_error(exc)
            if error is None:
                raise
            raise error from None

    def close(self) -> None:
        """End every subscription (the connection closed); leaving the session waits for them."""
        self._tasks.cancel()

    def _answering(self, msg: dict[str, Any]) -> str | None:
        """The run's token an answer (``approve``, ``tool_result``) comes with, or None for the
        connection's API key; without API keys a token is needed."""
        token = msg.get("token")
        if token is not None and not isinstance(token, str):
            raise SessionError("bad_message", '"token" must be the run\'s token (a string)')
        if token is None and (self.owner is None or self.service.config.api_keys is None):
            raise SessionError("unauthorized", "give the run's token (the one that can cancel it): no API key here")
        return token

    async def _authorized(self, msg: dict[str, Any], perm: str) -> str:
        """The stream id of a message whose token grants ``perm``."""
        stream_id = msg.get("stream_id")
        if not isinstance(stream_id, str):
            raise SessionError("bad_message", '"stream_id" (a string) is required')
        await self.service.authorize(stream_id, msg.get("token"), perm)
        return stream_id

    async def op_run(self, msg: dict[str, Any]) -> None:
        owner = self.owner
        if owner is None:
            raise Unauthorized("runs need an API key: 'Authorization: Bearer <key>' (or a ticket for it: ?ticket=)")
        request_id = msg.pop("id", None)
        window = msg.pop("window", DEFAULT_WINDOW)
        if not isinstance(window, int) or window < 1:
            raise SessionError("bad_message", '"window" must be a positive integer')
        self._check_room()  # before the run starts: never generate for nobody
        body = self.service.parse(msg, lambda msg: msgspec.convert(msg, RunBody), "run request")
        run = await self.service.start(body, owner=owner, headers=self.headers)
        tokens = self.service.issue(run.stream_id)
        await self.reply(
            {
                "op": "run",
                "id": request_id,
                "stream_id": run.stream_id,
                "token": tokens.token,
                "read_token": tokens.read_token,
            }
        )
        self._subscribe(run.stream_id, 0, window, live_from=0)  # there from the run's start

    async def op_subscribe(self, msg: dict[str, Any]) -> None:
        if "streams" in msg or "mine" in msg:
            await self._subscribe_many(msg)
            return
        stream_id = await self._authorized(msg, "read")
        from_seq = msg.get("from_seq", 0)
        window = msg.get("window", DEFAULT_WINDOW)
        if not isinstance(from_seq, int) or from_seq < 0 or not isinstance(window, int) or window < 1:
            raise SessionError("bad_message", '"from_seq" must be an integer >= 0 and "window" a positive integer')
        tree = None
        if msg.get("tree"):
            token = msg.get("cursor") or ""
            if not isinstance(token, str):
                raise SessionError("bad_message", '"cursor" must be a tree cursor (a string)')
            tree = TreeCursor.parse(token) if token else TreeCursor(stream_id)
            if tree.root != stream_id:
                raise SessionError("bad_message", f"the cursor is of another tree, not of {stream_id!r}")
            from_seq = tree.positions[stream_id]
        await self.service.open(stream_id, msg.get("token"), from_seq)
        if tree is not None:
            await check_tree(self.service.log, tree)  # a cursor is the client's: only this tree's runs
        elif msg.get("snapshot") and from_seq == 0:  # join now: the run as it stands, then the rest
            self._check_room()
            from_seq, ended, state = await self.service.snapshots.take(stream_id)
            await self.reply({"op": "snapshot", "stream_id": stream_id, "snapshot": msgspec.Raw(state)})
            if ended:
                return  # the snapshot is all there is
        self._subscribe(stream_id, 0 if tree else from_seq, window, tree)

    async def _subscribe_many(self, msg: dict[str, Any]) -> None:
        """A multiplexed subscription (:mod:`tokenwire.server.multiplex`): known by its cursor's
        root (its first stream, or ``~runs``), which ``ack`` and ``unsubscribe`` name."""
        window = msg.pop("window", DEFAULT_WINDOW)
        if not isinstance(window, int) or window < 1:
            raise SessionError("bad_message", '"window" must be a positive integer')
        sub = self.service.parse(msg, lambda msg: msgspec.convert(msg, Subscription), "subscription")
        tree = await open_subscription(self.service, sub, self.owner)
        mine = owned_batches(self.service.log, self.owner) if sub.mine and self.owner is not None else None
        self._check_room()
        # The reply before the first event: the client routes the streams the cursor names by it.
        await self.reply({"op": "subscribe", "stream_id": tree.root, "cursor": tree.token(), "status": "subscribed"})
        self._subscribe(tree.root, 0, window, tree, root_batches=mine)

    async def op_unsubscribe(self, msg: dict[str, Any]) -> None:
        """Stop reading a stream (or the multiplexed subscription its ``stream_id`` names)."""
        stream_id = msg.get("stream_id")
        sub = self.subs.pop(stream_id, None) if isinstance(stream_id, str) else None
        if sub is None:
            raise SessionError("not_found", "no subscription of this connection has that stream_id")
        if sub.task is not None:
            sub.task.cancel()
        await self.reply({"op": "unsubscribe", "stream_id": sub.stream_id, "status": "unsubscribed"})

    def _check_room(self) -> None:
        if len(self.subs) >= MAX_SUBSCRIPTIONS:
            raise SessionError(
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS} live subscriptions per socket (finished ones free their slot)",
            )

    def _subscribe(
        self,
        stream_id: str,
        from_seq: int,
        window: int,
        tree: TreeCursor | None = None,
        live_from: int | None = None,
        root_batches: Callable[[int, float | None], AsyncIterator[Sequence[Event]]] | None = None,
    ) -> None:
        old = self.subs.pop(stream_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        self._check_room()
        sub = _Subscription(stream_id, from_seq, window, tree)
        sub.live_from = live_from
        pump = self._pump(sub) if tree is None else self._pump_tree(sub, tree, root_batches)
        sub.task = self._tasks.start(pump, name=f"tokenwire-subscription-{stream_id}")
        self.subs[stream_id] = sub

    async def _pump(self, sub: _Subscription) -> None:
        """One subscription: a reader of the log from its cursor, at most ``window`` unacked events out."""
        frames = self.service.frames.frames
        fmt = self.fmt
        sid = sub.stream_id
        try:
            with (
                contextlib.suppress(*self.disconnected, RuntimeError, SeqEvicted, StreamNotFound),
                self.service.reading(sid, sub.cursor, lagging=False, live_from=sub.live_from) as batches,
            ):
                async for batch in batches:
                    i = 0
                    while i < len(batch):
                        in_flight = sub.cursor - 1 - sub.acked
                        if in_flight >= sub.window:
                            sub.credit.clear()
                            await sub.credit.wait()
                            continue
                        n = min(len(batch) - i, sub.window - in_flight)
                        for frame in frames(sid, fmt, batch[i : i + n]):
                            await self.send(frame)
                        sub.cursor += n
                        i += n
        finally:
            if self.subs.get(sid) is sub:
                del self.subs[sid]  # a finished subscription frees its slot: a socket serves any number of runs

    async def _pump_tree(
        self,
        sub: _Subscription,
        tree: TreeCursor,
        root_batches: Callable[[int, float | None], AsyncIterator[Sequence[Event]]] | None,
    ) -> None:
        """A tree subscription (or a multiplexed one: a tree of many roots): every stream of it
        from ``tree``, at most ``window`` unacknowledged events out (counted over all of them)."""
        frame, fmt, sid = tree_frame(self.service), self.fmt, sub.stream_id
        batches = read_tree(self.service.log, tree, root_batches=root_batches, reading=self.service.runs.reader)
        try:
            with contextlib.suppress(*self.disconnected, RuntimeError, SeqEvicted, StreamNotFound):
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        for event in batch:
                            while sub.cursor - 1 - sub.acked >= sub.window:
                                sub.credit.clear()
                                await sub.credit.wait()
                            await self.send(frame(event, fmt))
                            sub.cursor += 1
        finally:
            if self.subs.get(sid) is sub:
                del self.subs[sid]

    async def op_ack(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        if not isinstance(msg.get("stream_id"), str) or not isinstance(seq, int):
            raise SessionError("bad_message", 'ack needs a "stream_id" and an integer "seq"')
        sub = self.subs.get(msg["stream_id"])
        if sub is None:
            return  # the subscription already ended (an ack racing its end): nothing to credit
        if seq > sub.acked:
            sub.acked = min(seq, sub.cursor - 1)
            sub.credit.set()

    async def op_cancel(self, msg: dict[str, Any]) -> None:
        stream_id = await self._authorized(msg, "cancel")
        if not await self.service.cancel(stream_id, "cancelled by the client"):
            raise SessionError("not_found", f"no node produces stream {stream_id!r}")
        await self.reply({"op": "cancel", "stream_id": stream_id, "status": "cancelling"})

    async def op_approve(self, msg: dict[str, Any]) -> None:
        stream_id, call_id, approved = msg.get("stream_id"), msg.get("call_id"), msg.get("approved")
        if not isinstance(stream_id, str) or not isinstance(call_id, str) or not isinstance(approved, bool):
            raise SessionError("bad_message", 'approve needs "stream_id", "call_id" and a boolean "approved"')
        token = self._answering(msg)
        await self.service.answer(stream_id, approvals={call_id: approved}, owner=self.owner, token=token)
        await self.reply({"op": "approve", "stream_id": stream_id, "call_id": call_id, "status": "resumed"})

    async def op_tool_result(self, msg: dict[str, Any]) -> None:
        stream_id, call_id = msg.get("stream_id"), msg.get("call_id")
        if not isinstance(stream_id, str) or not isinstance(call_id, str):
            raise SessionError("bad_message", 'tool_result needs "stream_id" and "call_id" (and "result")')
        token = self._answering(msg)
        results = {call_id: (msg.get("result"), bool(msg.get("is_error", False)))}
        await self.service.answer(stream_id, results=results, owner=self.owner, token=token)
        await self.reply({"op": "tool_result", "stream_id": stream_id, "call_id": call_id, "status": "accepted"})
