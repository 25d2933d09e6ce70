"""The ``Tokenwire`` gRPC service on ``grpc.aio``: the same runs, log, keys, tokens and limits as
the HTTP app, read over gRPC.

``ServerConfig(grpc_port=N)`` (``tokenwire serve --grpc-port N``) starts it beside the HTTP app,
in the app's event loop, with the standard health service (``grpc.health.v1``) and server
reflection. Every call is a reader of the event log like an SSE connection: a run started over
HTTP can be read over gRPC and the other way round, and an event is encoded to protobuf once for
all gRPC readers (:data:`~tokenwire.grpc.codec.PROTO` in the server's frame cache; responses are
written as those bytes).

- ``Run``: the API key in the ``authorization: Bearer`` metadata; the run's id and tokens in the
  initial metadata (``tokenwire-stream-id``, ``tokenwire-token``, ``tokenwire-read-token``), then
  its events. Leaving does not cancel the run (resume with ``Subscribe``).
- ``Subscribe``: a read token; events from ``from_seq``.
- ``Cancel``: a token with the cancel permission.
- ``Session``: the WebSocket protocol's ops (:class:`~tokenwire.server.session.Session`) as
  protobuf messages, with credit (``Ack``) per subscription.

Status codes: UNAUTHENTICATED (no or a wrong API key), PERMISSION_DENIED (a token that does not
grant the call), NOT_FOUND (no such stream), FAILED_PRECONDITION (``from_seq`` evicted: resume from
the oldest retained seq the message names), RESOURCE_EXHAUSTED (a capacity cap), INVALID_ARGUMENT
(a bad request), UNAVAILABLE (shutting down, or a reader that fell ``max_lag_events`` behind a live
stream: resume from the last seq received + 1). Flow control: a call is written one message at a
time, each write awaited, so HTTP/2 flow control holds the server back from a slow reader; one
that falls ``max_lag_events`` behind is cut off, as over SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
import msgspec
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenwire.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    ObserverOverflow,
    OverCapacity,
    SeqEvicted,
    SessionError,
    ShuttingDown,
    StreamNotFound,
    TokenwireError,
    Unauthorized,
)
from tokenwire.events import Event
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.grpc.codec import PROTO, session_frame
from tokenwire.log import TreeCursor, check_tree, owned_batches, read_tree
from tokenwire.server import streaming
from tokenwire.server.multiplex import Subscription, open_subscription
from tokenwire.server.schema import RunBody
from tokenwire.server.service import RunService, bearer
from tokenwire.server.session import Session
from tokenwire.server.sockets import Watchdog

__all__ = ["SERVICE", "STATUS", "GrpcServer", "run_body"]

SERVICE = pb.DESCRIPTOR.services_by_name["Tokenwire"].full_name
"""``tokenwire.v1.Tokenwire``."""

STATUS: dict[type[TokenwireError], grpc.StatusCode] = {
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    StreamNotFound: grpc.StatusCode.NOT_FOUND,
    SeqEvicted: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    OverCapacity: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    LogUnavailable: grpc.StatusCode.UNAVAILABLE,
}
"""The gRPC status for each typed error the run service raises."""

_json = msgspec.json.Decoder()


def _json_or(text: str, default: Any) -> Any:
    return _json.decode(text) if text else default


async def _abort(context: grpc.aio.ServicerContext, exc: TokenwireError) -> NoReturn:
    """End the call with the status :data:`STATUS` gives ``exc`` (re-raised when it has none)."""
    for cls in type(exc).__mro__:
        code = STATUS.get(cls)
        if code is not None:
            await context.abort(code, str(exc))
    raise exc


def run_body(request: pb.RunRequest) -> RunBody:
    """The run a ``RunRequest`` asks for, checked as ``POST /v1/runs`` checks its body."""
    body: dict[str, Any] = {}
    scalars = ("prompt", "system", "provider", "model", "max_tokens", "temperature", "seed", "tool_choice", "max_steps")
    for name in scalars:
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.messages:
        body["messages"] = [
            {
                "role": m.role,
                "content": m.content,
                **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {}),
                **({"name": m.name} if m.name else {}),
                **({"tool_calls": _json.decode(m.tool_calls)} if m.tool_calls else {}),
            }
            for m in request.messages
        ]
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = list(request.tools)
    if request.limits:
        body["limits"] = _json.decode(request.limits)
    if request.meta:
        body["meta"] = _json.decode(request.meta)
    body["background"] = request.background
    return msgspec.convert(body, RunBody)


def _session_message(request: pb.SessionRequest) -> dict[str, Any]:
    """A Session request as the session's ``{"op": …}`` message."""
    op = request.WhichOneof("op")
    if op == "run":
        r = request.run
        return {"op": "run", "id": r.id, "window": r.window or 256, **msgspec.to_builtins(run_body(r.request))}
    if op == "subscribe":
        s = request.subscribe
        if s.request.streams or s.request.mine:
            return {"op": "subscribe", **_many(s.request), "window": s.window or 256}
        return {
            "op": "subscribe",
            "stream_id": s.request.stream_id,
            "token": s.request.token,
            "from_seq": s.request.from_seq,
            "tree": s.request.tree,
            "cursor": s.request.cursor,
            "window": s.window or 256,
        }
    if op == "unsubscribe":
        return {"op": "unsubscribe", "stream_id": request.unsubscribe.stream_id}
    if op == "ack":
        return {"op": "ack", "stream_id": request.ack.stream_id, "seq": request.ack.seq}
    if op == "cancel":
        return {"op": "cancel", "stream_id": request.cancel.stream_id, "token": request.cancel.token}
    if op == "tool_result":
        t = request.tool_result
        return {
            "op": "tool_result",
            "stream_id": t.stream_id,
            "token": t.token,
            "call_id": t.call_id,
            "result": _json_or(t.result, None),
            "is_error": t.is_error,
        }
    if op == "approve":
        a = request.approve
        return {
            "op": "approve",
            "stream_id": a.stream_id,
            "call_id": a.call_id,
            "approved": a.approved,
            "token": a.token or None,
        }
    raise SessionError(
        "bad_message", "a SessionRequest needs one of run, subscribe, unsubscribe, ack, cancel, tool_result, approve"
    )


def _many(request: pb.SubscribeRequest) -> dict[str, Any]:
    """A subscription of many streams (``streams``, ``mine``) as the session's fields."""
    refs = [{"stream_id": r.stream_id, "token": r.token or None, "from_seq": r.from_seq} for r in request.streams]
    return {"streams": refs, "mine": request.mine, "cursor": request.cursor or None}


def _session_reply(obj: dict[str, Any]) -> bytes:
    """The session's answer (a dict) as a serialized ``SessionReply``."""
    op = obj.get("op")
    if op == "run":
        reply = pb.SessionReply(
            run=pb.RunStarted(
                id=obj.get("id") or "", stream_id=obj["stream_id"], token=obj["token"], read_token=obj["read_token"]
            )
        )
    elif op == "error":
        reply = pb.SessionReply(error=pb.SessionError(code=obj["code"], message=obj["message"]))
    else:
        accepted = pb.OpAccepted(op=str(op), stream_id=obj.get("stream_id", ""), status=obj["status"])
        accepted.call_id, accepted.cursor = obj.get("call_id", ""), obj.get("cursor", "")
        reply = pb.SessionReply(accepted=accepted)
    data: bytes = reply.SerializeToString()
    return data


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class _Service:
    def __init__(self, service: RunService):
        self.service = service

    async def _events(
        self,
        stream_id: str,
        from_seq: int,
        context: grpc.aio.ServicerContext,
        tree: TreeCursor | None = None,
        live_from: int | None = None,
        root_batches: Callable[[int, float | None], AsyncIterator[Sequence[Event]]] | None = None,
    ) -> None:
        """A log reader: every event's shared protobuf bytes, one awaited write at a time (HTTP/2
        flow control holds it back); a write that makes no progress for ``write_timeout_s`` ends
        the call (UNAVAILABLE: resume from the seq it names). With ``tree``, every stream of the
        run's tree from that cursor (of many streams: their roots, and ``root_batches`` the
        marks of an owner's runs)."""
        service = self.service
        frame, frames, wrote = service.frames.frame, service.frames.frames, service.stats.wrote
        tree_frame = streaming.tree_frame(service)
        write, timeout_s = context.write, service.config.write_timeout_s
        task = asyncio.current_task()
        assert task is not None

        def stalled() -> None:  # a write with no progress: end the call
            task.cancel()

        dog = Watchdog(timeout_s, stalled)
        seq = from_seq - 1
        try:
            async with contextlib.AsyncExitStack() as reading:
                if tree is None:
                    batches: AsyncIterator[Any] = reading.enter_context(
                        service.reading(stream_id, from_seq, live_from=live_from)
                    )
                else:
                    max_lag = service.config.max_lag_events
                    batches = read_tree(
                        service.log, tree, max_lag=max_lag, root_batches=root_batches, reading=service.runs.reader
                    )
                    await reading.enter_async_context(contextlib.aclosing(batches))
                async for batch in batches:
                    if tree is not None:  # events of several streams: each stream's shared frames
                        pairs: Any = ((e, tree_frame(e, PROTO)) for e in batch)
                    elif len(batch) == 1:  # the live edge, and every reader of a fan-out
                        pairs = ((batch[0], frame(stream_id, PROTO, batch[0])),)
                    else:
                        pairs = zip(batch, frames(stream_id, PROTO, batch), strict=True)
                    for event, data in pairs:
                        wrote("grpc", len(data))
                        dog.writing()
                        try:
                            await write(data)
                        except asyncio.CancelledError:
                            if not dog.stalled:
                                raise
                            task.uncancel()
                            service.stats.lag_disconnects += 1
                            message = f"no progress writing for {timeout_s:g} s; resume from seq {seq + 1}"
                            await context.abort(grpc.StatusCode.UNAVAILABLE, message)
                        dog.wrote()
                        seq = event.seq
        except ObserverOverflow:
            service.stats.lag_disconnects += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"fell behind the live stream; resume from seq {seq + 1}")
        except (SeqEvicted, StreamNotFound) as exc:
            await _abort(context, exc)
        finally:
            dog.close()

    async def run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext) -> None:
        service = self.service
        md = _metadata(context)
        try:
            owner = service.authenticate(bearer(md))
            with service.connection("grpc", owner):
                body = service.parse(request, run_body, "run request")
                run = await service.start(body, owner=owner, headers=md)
                tokens = service.issue(run.stream_id)
                await context.send_initial_metadata(
                    (
                        ("tokenwire-stream-id", run.stream_id),
                        ("tokenwire-token", tokens.token),
                        ("tokenwire-read-token", tokens.read_token),
                    )
                )
                await self._events(run.stream_id, 0, context, live_from=0)  # there from the run's start
        except TokenwireError as exc:
            await _abort(context, exc)

    async def subscribe(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext) -> None:
        service = self.service
        try:
            if request.streams or request.mine:
                await self._subscribe_many(request, context)
                return
            if request.from_seq < 0:
                raise InvalidRequest("from_seq must be >= 0")
            tree, from_seq = None, request.from_seq
            if request.tree:
                tree = TreeCursor.parse(request.cursor) if request.cursor else TreeCursor(request.stream_id)
                if tree.root != request.stream_id:
                    raise InvalidRequest(f"the cursor is of another tree, not of {request.stream_id!r}")
                from_seq = tree.positions[request.stream_id]
            await service.open(request.stream_id, request.token, from_seq)
            if tree is not None:
                await check_tree(service.log, tree)  # a cursor is the client's: only this tree's runs
            with service.connection("grpc"):
                await self._events(request.stream_id, from_seq, context, tree)
        except TokenwireError as exc:
            await _abort(context, exc)

    async def _subscribe_many(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext) -> None:
        """Many streams, or every run of the API key, on one call (:mod:`tokenwire.server.multiplex`);
        the initial metadata's ``tokenwire-cursor`` is where it starts."""
        service = self.service
        sub = service.parse(_many(request), lambda fields: msgspec.convert(fields, Subscription), "subscription")
        needs_key = sub.mine or any(ref.token is None for ref in sub.streams)
        owner = service.authenticate(bearer(_metadata(context))) if needs_key else None
        cursor = await open_subscription(service, sub, owner)
        await context.send_initial_metadata((("tokenwire-cursor", cursor.token()),))
        mine = owned_batches(service.log, owner) if sub.mine and owner is not None else None
        with service.connection("grpc"):
            await self._events(cursor.root, 0, context, cursor, root_batches=mine)

    async def cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelReply:
        try:
            await self.service.authorize(request.stream_id, request.token, "cancel")
            if not await self.service.cancel(request.stream_id, request.reason or "cancelled over gRPC"):
                raise StreamNotFound(f"no node produces stream {request.stream_id!r}")
        except TokenwireError as exc:
            await _abort(context, exc)
        return pb.CancelReply(stream_id=request.stream_id, status="cancelling")

    async def session(self, requests: AsyncIterator[pb.SessionRequest], context: grpc.aio.ServicerContext) -> None:
        service = self.service
        md = _metadata(context)
        api_key = bearer(md)
        try:
            owner = service.authenticate(api_key) if api_key else None
        except Unauthorized:
            owner = None  # runs need a valid key; subscriptions only need stream tokens
        lock = asyncio.Lock()

        async def write(data: bytes) -> None:
            async with lock:  # pumps of several subscriptions share the call
                await context.write(data)
            service.stats.wrote("grpc", len(data))

        async def send(frame: bytes) -> None:
            await write(session_frame(frame))

        async def reply(obj: dict[str, Any]) -> None:
            await write(_session_reply(obj))

        session = Session(service, owner=owner, headers=md, fmt=PROTO, send=send, reply=reply)
        try:
            with service.connection("grpc", owner):
                async with session:  # the client closing its side: leaving serves its subscriptions to their end
                    await self._serve_session(session, requests, reply)
        except TokenwireError as exc:
            await _abort(context, exc)

    @staticmethod
    async def _serve_session(session: Session, requests: AsyncIterator[pb.SessionRequest], reply: Any) -> None:
        async for request in requests:
            try:
                await session.handle(session.service.parse(request, _session_message))
            except SessionError as exc:
                await reply({"op": "error", "code": exc.code, "message": str(exc)})
            except InvalidRequest as exc:
                await reply({"op": "error", "code": "invalid_request", "message": str(exc)})


def _handler(service: _Service) -> grpc.GenericRpcHandler:
    identity = None  # responses are written as the bytes the frame cache holds
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Run": grpc.unary_stream_rpc_method_handler(
                service.run, request_deserializer=pb.RunRequest.FromString, response_serializer=identity
            ),
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                service.subscribe, request_deserializer=pb.SubscribeRequest.FromString, response_serializer=identity
            ),
            "Cancel": grpc.unary_unary_rpc_method_handler(
                service.cancel,
                request_deserializer=pb.CancelRequest.FromString,
                response_serializer=pb.CancelReply.SerializeToString,
            ),
            "Session": grpc.stream_stream_rpc_method_handler(
                service.session, request_deserializer=pb.SessionRequest.FromString, response_serializer=identity
            ),
        },
    )


class GrpcServer:
    """The gRPC side of one app: start it in the app's loop, stop it with a grace period.

    >>> # app = create_app(..., config=ServerConfig(grpc_port=50051))   # the app's lifespan runs it
    """

    def __init__(self, service: RunService, host: str, port: int):
        self.host = host
        self.port = port
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", service.config.max_body_bytes)])
        self._grpc.add_generic_rpc_handlers((_handler(_Service(service)),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        names = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._grpc)
        self.port = self._grpc.add_insecure_port(f"{host}:{port}")

    async def start(self) -> None:
        await self._grpc.start()
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._grpc.stop(grace_s)

    async def _set(self, status: int) -> None:
        for name in ("", SERVICE):
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result
