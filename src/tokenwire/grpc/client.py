"""The gRPC client: the calls of :class:`tokenwire.client.Client`, over the ``Tokenwire`` service.

>>> import asyncio                                                              # doctest: +SKIP
>>> async def main():                                                           # doctest: +SKIP
...     async with GrpcClient("127.0.0.1:50051", api_key="k") as client:
...         async for event in client.run("Write a haiku"):
...             print(event.type)

``run`` and ``subscribe`` resume when the call fails in a way a retry can fix (UNAVAILABLE: the
connection dropped, the server restarted, or the reader fell behind a live stream) from the seq
after the last one yielded, with a capped backoff; events are de-duplicated by seq, so the caller
sees each exactly once and in order, ending with the terminal event. Status codes raise:
UNAUTHENTICATED → :class:`~tokenwire.errors.Unauthorized`, PERMISSION_DENIED →
:class:`~tokenwire.errors.Forbidden`, NOT_FOUND → :class:`~tokenwire.errors.StreamNotFound`,
FAILED_PRECONDITION → :class:`~tokenwire.errors.SeqEvicted`, others :class:`~tokenwire.errors.ClientError`
(``status`` is the gRPC code's number).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import grpc
import msgspec

from tokenwire.errors import ClientError, ConnectionLost, Forbidden, SeqEvicted, StreamNotFound, Unauthorized
from tokenwire.events import TERMINAL_TYPES, Event
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.grpc import tokenwire_pb2_grpc as pb_grpc
from tokenwire.grpc.codec import from_proto
from tokenwire.log import TreeCursor, subscription_cursor

__all__ = ["GrpcClient", "GrpcRunInfo", "run_request"]

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
_json = msgspec.json.Encoder()


class GrpcRunInfo(msgspec.Struct, frozen=True):
    """A run started over gRPC: its stream id and tokens."""

    stream_id: str
    token: str
    """Read and cancel."""
    read_token: str
    """Read only."""


def run_request(request: str | dict[str, Any], options: dict[str, Any]) -> pb.RunRequest:
    """A ``RunRequest`` from a prompt or a dict of ``RunBody`` fields (as :class:`Client` takes)."""
    body: dict[str, Any] = {"prompt": request} if isinstance(request, str) else dict(request)
    body.update(options)
    messages: list[dict[str, Any]] = body.pop("messages", None) or []
    out = pb.RunRequest(
        messages=[
            pb.Message(
                role=m["role"],
                content=m.get("content", ""),
                tool_call_id=m.get("tool_call_id") or "",
                name=m.get("name") or "",
                tool_calls=_json.encode(m["tool_calls"]).decode() if m.get("tool_calls") else "",
            )
            for m in messages
        ],
        stop=body.pop("stop", None) or [],
        tools=body.pop("tools", None) or [],
        limits=_json.encode(body.pop("limits")).decode() if body.get("limits") else "",
        meta=_json.encode(body.pop("meta")).decode() if body.get("meta") else "",
        background=bool(body.pop("background", False)),
    )
    body.pop("limits", None)
    body.pop("meta", None)
    for name, value in body.items():
        if value is not None:
            try:
                setattr(out, name, value)
            except (AttributeError, TypeError, ValueError) as exc:
                raise ValueError(f"run request field {name!r}: {exc}") from None
    return out


def _raise_for(err: grpc.aio.AioRpcError, stream_id: str, from_seq: int) -> None:
    code, details = err.code(), err.details() or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        raise Unauthorized(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        raise Forbidden(details)
    if code == grpc.StatusCode.NOT_FOUND:
        raise StreamNotFound(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        m = re.search(r"oldest retained seq is (\d+)", details)
        raise SeqEvicted(stream_id, from_seq, int(m.group(1)) if m else 0)
    raise ClientError(code.value[0], code.name.lower(), details)


METADATA_ROOM = (("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20))
"""Channel options a :class:`GrpcClient` adds unless given: the metadata it accepts."""


class GrpcClient:
    """Async client over gRPC (``target``: ``host:port``; ``credentials`` for TLS, else plaintext;
    ``options``: channel arguments, e.g. ``[("grpc.http2.bdp_probe", 0)]`` to keep the receive
    window at its initial size instead of letting gRPC grow it to buffer megabytes)."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        max_reconnects: int = 8,
        max_backoff_s: float = 10.0,
        retry_s: float = 0.5,
    ):
        self.target = target
        self.api_key = api_key
        # A subscription of many streams starts with its cursor in the initial metadata (about 36
        # bytes a stream): room for the most streams one subscription reads, past gRPC's 8 KiB.
        named = {name for name, _ in options}
        options = [*options, *((k, v) for k, v in METADATA_ROOM if k not in named)]
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.stub: Any = pb_grpc.TokenwireStub(self.channel)  # type: ignore[no-untyped-call]
        self.max_reconnects = max_reconnects
        self.max_backoff_s = max_backoff_s
        self.retry_s = retry_s
        self.reconnects = 0
        """Resumptions made so far (all calls)."""

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.channel.close()

    def _auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    async def _start(self, request: str | dict[str, Any], options: dict[str, Any]) -> tuple[Any, GrpcRunInfo]:
        call = self.stub.Run(run_request(request, options), metadata=self._auth())
        try:
            md = dict(await call.initial_metadata())
        except grpc.aio.AioRpcError as err:
            _raise_for(err, "", 0)
        if "tokenwire-stream-id" not in md:  # the call failed before the run existed
            try:
                await call.read()
            except grpc.aio.AioRpcError as err:
                _raise_for(err, "", 0)
            raise ClientError(2, "unknown", "the server sent no run")
        info = GrpcRunInfo(md["tokenwire-stream-id"], md["tokenwire-token"], md["tokenwire-read-token"])
        return call, info

    async def create_run(self, request: str | dict[str, Any], **options: Any) -> GrpcRunInfo:
        """Start a run and return its id and tokens without reading it (the run goes on)."""
        call, info = await self._start(request, options)
        call.cancel()  # leaving does not cancel the run
        return info

    async def run(self, request: str | dict[str, Any], **options: Any) -> AsyncGenerator[Event, None]:
        """Start a run and iterate its events to the terminal one, resuming across failures."""
        call, info = await self._start(request, options)
        last = -1
        try:
            async for message in call:
                event = from_proto(message)
                last = event.seq
                yield event
                if event.__class__ in TERMINAL_TYPES:
                    return
        except grpc.aio.AioRpcError as err:
            if err.code() not in _RETRYABLE:
                _raise_for(err, info.stream_id, last + 1)
        finally:
            call.cancel()
        self.reconnects += 1
        async with contextlib.aclosing(self.subscribe(info.stream_id, info.token, from_seq=last + 1)) as events:
            async for event in events:
                yield event

    async def subscribe(
        self, stream_id: str, token: str, *, from_seq: int = 0, tree: bool = False, cursor: TreeCursor | None = None
    ) -> AsyncGenerator[Event, None]:
        """Iterate a stream's events from ``from_seq``, resuming across failures.

        With ``tree`` (or a ``cursor``): the run and every child run below it, until every stream
        of the tree ended (``event.stream_id`` says whose); ``cursor`` is moved as events are
        yielded, and a resume restores every stream's position.
        """
        if tree or cursor is not None:
            at = cursor or TreeCursor(stream_id)

            def request() -> pb.SubscribeRequest:
                return pb.SubscribeRequest(stream_id=stream_id, token=token, tree=True, cursor=at.token())

            async with contextlib.aclosing(self._tree(request, at, f"tree {stream_id!r}")) as events:
                async for event in events:
                    yield event
            return
        last = from_seq - 1
        failures = 0
        while True:
            call = self.stub.Subscribe(pb.SubscribeRequest(stream_id=stream_id, token=token, from_seq=last + 1))
            try:
                async for message in call:
                    event = from_proto(message)
                    if event.seq <= last:
                        continue  # a duplicate after a resume
                    last = event.seq
                    failures = 0
                    yield event
                    if event.__class__ in TERMINAL_TYPES:
                        return
            except grpc.aio.AioRpcError as err:
                if err.code() not in _RETRYABLE:
                    _raise_for(err, stream_id, last + 1)
            finally:
                call.cancel()
            failures += 1
            self.reconnects += 1
            if failures > self.max_reconnects:
                raise ConnectionLost(
                    f"stream {stream_id!r}: no progress after {self.max_reconnects} reconnects (last seq {last})"
                )
            backoff = min(self.max_backoff_s, self.retry_s * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(backoff / 2, backoff))

    async def subscribe_many(
        self,
        streams: Mapping[str, str | None] | None = None,
        *,
        mine: bool = False,
        cursor: TreeCursor | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Many streams on one call, resumed all at once across failures: as
        :meth:`~tokenwire.client.http.Client.subscribe_many` (``streams``: stream id -> read
        token, None for a run this client's API key started; ``mine``: every run of the key)."""
        named, at = subscription_cursor(streams, mine=mine, cursor=cursor)
        refs = [pb.StreamRef(stream_id=sid, token=tok or "") for sid, tok in named.items()]
        # A new subscription starts where the server says (``tokenwire-cursor``): until that
        # arrived, a retry asks for a new start again, not for the placeholder's.
        started = [cursor is not None]

        def request() -> pb.SubscribeRequest:
            return pb.SubscribeRequest(streams=refs, mine=mine, cursor=at.token() if started[0] else "")

        async with contextlib.aclosing(self._tree(request, at, "subscription", started=started)) as events:
            async for event in events:
                yield event

    async def _tree(
        self,
        request: Callable[[], pb.SubscribeRequest],
        cursor: TreeCursor,
        what: str,
        *,
        started: list[bool] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """A tree's (or many streams') events, resumed from ``cursor`` with ``request()``; of many
        streams (``started``), the cursor takes where the server starts them (``tokenwire-cursor``)."""
        failures = 0
        many = started is not None
        while True:
            cursor.reopen()
            call = self.stub.Subscribe(request(), metadata=self._auth() if many else ())
            try:
                start = dict(await call.initial_metadata()).get("tokenwire-cursor") if many else None
                if start is not None and started is not None:  # (none: the call failed, as reading it says)
                    cursor.restore(start)
                    started[0] = True
                async for message in call:
                    for fresh in cursor.receive(from_proto(message)):
                        failures = 0
                        yield fresh
                    if cursor.ended:
                        return
            except grpc.aio.AioRpcError as err:
                if err.code() not in _RETRYABLE:
                    _raise_for(err, cursor.root, cursor.positions[cursor.root])
            finally:
                call.cancel()
            failures += 1
            self.reconnects += 1
            if failures > self.max_reconnects:
                raise ConnectionLost(f"{what}: no progress after {self.max_reconnects} reconnects")
            backoff = min(self.max_backoff_s, self.retry_s * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(backoff / 2, backoff))

    async def cancel(self, stream_id: str, token: str) -> None:
        try:
            await self.stub.Cancel(pb.CancelRequest(stream_id=stream_id, token=token))
        except grpc.aio.AioRpcError as err:
            _raise_for(err, stream_id, 0)
