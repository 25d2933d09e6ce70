"""The WebSocket transport: one socket, many subscriptions, credit-based flow control.

Client → server, one JSON object per text frame, with ``op``:

- ``{"op": "run", "prompt" | "messages", …RunBody fields, "id"?, "window"?: 256}`` — needs the API key (the
  handshake's ``Authorization: Bearer`` header or ``?api_key=``); replies
  ``{"op": "run", "id", "stream_id", "token", "read_token"}`` and subscribes from seq 0;
- ``{"op": "subscribe", "stream_id", "token", "from_seq"?: 0, "window"?: 256}``;
- ``{"op": "ack", "stream_id", "seq"}`` — the client has processed events up to ``seq``; the
  server keeps at most ``window`` unacknowledged events in flight per subscription;
- ``{"op": "cancel", "stream_id", "token"}``;
- ``{"op": "tool_result", "stream_id", "token", "call_id", "result", "is_error"?}`` — the result
  of a tool marked ``client_side``.

Server → client: every event as its JSON object (it carries ``stream_id``, ``seq`` and ``type``;
the text is encoded once and shared by all sockets), and replies with ``op``. A malformed
message gets ``{"op": "error", "code", "message"}`` and the socket stays open; a frame over
``max_frame_bytes`` closes it with 1009, binary frames and bad credentials with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from tokenwire.errors import Forbidden, OverCapacity, SeqEvicted, ShuttingDown, StreamNotFound, Unauthorized
from tokenwire.server.schema import RunBody
from tokenwire.wire import JSON_TEXT

if TYPE_CHECKING:
    from tokenwire.server.app import _Server

__all__ = ["websocket_endpoint"]

MAX_FRAME_BYTES = 1_000_000
DEFAULT_WINDOW = 256
MAX_SUBSCRIPTIONS = 64


class _BadMessage(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class _Subscription:
    def __init__(self, stream_id: str, cursor: int, window: int):
        self.stream_id = stream_id
        self.cursor = cursor
        self.acked = cursor - 1
        self.window = window
        self.credit = asyncio.Event()
        self.credit.set()
        self.task: asyncio.Task[None] | None = None


class _Connection:
    def __init__(self, server: _Server, ws: WebSocket):
        self.server = server
        self.ws = ws
        self.send_lock = asyncio.Lock()
        self.subs: dict[str, _Subscription] = {}
        api_key = ws.query_params.get("api_key")
        auth = ws.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            api_key = auth[7:].strip()
        self.api_key = api_key
        self.owner: str | None = None

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)
        self.server.stats.wrote("websocket", len(text))

    async def reply(self, obj: dict[str, Any]) -> None:
        await self.send(msgspec.json.encode(obj).decode())

    async def serve(self) -> None:
        try:
            self.owner = self.server.check_api_key(self.api_key) if self.api_key else None
        except Unauthorized:
            self.owner = None  # runs need a valid key; subscriptions only need stream tokens
        try:
            self.server.connect(self.owner, "websocket")
        except OverCapacity as exc:
            await self.ws.accept()
            await self.ws.close(1013, str(exc)[:120])  # try again later
            return
        try:
            await self._serve()
        finally:
            self.server.disconnect(self.owner, "websocket")

    async def _serve(self) -> None:
        await self.ws.accept()
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    await self.ws.close(1008, "binary frames are not part of this protocol")
                    return
                if len(text) > MAX_FRAME_BYTES:
                    await self.ws.close(1009, f"message over {MAX_FRAME_BYTES} bytes")
                    return
                try:
                    await self.handle(text)
                except _BadMessage as exc:
                    await self.reply({"op": "error", "code": exc.code, "message": str(exc)})
                except Unauthorized as exc:
                    await self.ws.close(1008, str(exc)[:120])
                    return
        except WebSocketDisconnect:
            return
        finally:
            for sub in self.subs.values():
                if sub.task is not None:
                    sub.task.cancel()
            tasks = [s.task for s in self.subs.values() if s.task is not None]
            if tasks:
                await asyncio.wait(tasks)

    async def handle(self, text: str) -> None:
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise _BadMessage("bad_json", f"not JSON: {exc}") from None
        except RecursionError:
            raise _BadMessage("bad_json", "JSON nested too deeply") from None
        except UnicodeEncodeError:
            raise _BadMessage("bad_json", "not valid Unicode text") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise _BadMessage("bad_message", 'every message is a JSON object with an "op"')
        op = msg.pop("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise _BadMessage("unknown_op", f"unknown op {op!r}; ops are run, subscribe, ack, cancel, tool_result")
        await handler(msg)

    async def _authorized(self, msg: dict[str, Any], perm: str) -> str:
        """The stream id of a message whose token grants ``perm``."""
        stream_id = msg.get("stream_id")
        if not isinstance(stream_id, str):
            raise _BadMessage("bad_message", '"stream_id" (a string) is required')
        try:
            await self.server.log.info(stream_id)
        except StreamNotFound:
            raise _BadMessage("not_found", f"no stream {stream_id!r}") from None
        try:
            self.server.tokens.verify(msg.get("token"), stream_id, perm, now=time.time())
        except Forbidden as exc:
            raise _BadMessage("forbidden", str(exc)) from None
        return stream_id

    def _local_run(self, stream_id: str) -> Any:
        run = self.server.runs.get(stream_id)
        if run is None:
            raise _BadMessage("not_found", f"no stream {stream_id!r}")
        return run

    async def op_run(self, msg: dict[str, Any]) -> None:
        owner = self.server.check_api_key(self.api_key)
        request_id = msg.pop("id", None)
        window = msg.pop("window", DEFAULT_WINDOW)
        if not isinstance(window, int) or window < 1:
            raise _BadMessage("bad_message", '"window" must be a positive integer')
        self._check_room()  # before the run starts: never generate for nobody
        try:
            body = msgspec.convert(msg, RunBody)
            run = self.server.start(body, owner, self.ws.headers)
        except (msgspec.ValidationError, ValueError, KeyError) as exc:
            raise _BadMessage("invalid_request", f"invalid run request: {exc}") from None
        except ShuttingDown as exc:
            raise _BadMessage("shutting_down", str(exc)) from None
        except OverCapacity as exc:
            raise _BadMessage("over_capacity", f"{exc} (retry after {exc.retry_after_s:g} s)") from None
        await run.handle.ready()  # readable on every node before anyone hears of it
        token, read_token = self.server.issue(run.stream_id)
        await self.reply(
            {"op": "run", "id": request_id, "stream_id": run.stream_id, "token": token, "read_token": read_token}
        )
        self._subscribe(run.stream_id, 0, window)

    async def op_subscribe(self, msg: dict[str, Any]) -> None:
        stream_id = await self._authorized(msg, "read")
        from_seq = msg.get("from_seq", 0)
        window = msg.get("window", DEFAULT_WINDOW)
        if not isinstance(from_seq, int) or from_seq < 0 or not isinstance(window, int) or window < 1:
            raise _BadMessage("bad_message", '"from_seq" must be an integer >= 0 and "window" a positive integer')
        try:
            info = await self.server.log.info(stream_id)
        except StreamNotFound:
            raise _BadMessage("not_found", f"no stream {stream_id!r}") from None
        if from_seq < info.first_seq:
            raise _BadMessage("gone", str(SeqEvicted(stream_id, from_seq, info.first_seq)))
        self._subscribe(stream_id, from_seq, window)

    def _check_room(self) -> None:
        if len(self.subs) >= MAX_SUBSCRIPTIONS:
            raise _BadMessage(
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS} live subscriptions per socket (finished ones free their slot)",
            )

    def _subscribe(self, stream_id: str, from_seq: int, window: int) -> None:
        old = self.subs.pop(stream_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        self._check_room()
        sub = _Subscription(stream_id, from_seq, window)
        sub.task = asyncio.get_running_loop().create_task(self._pump(sub))
        self.subs[stream_id] = sub

    async def _pump(self, sub: _Subscription) -> None:
        """One subscription: a reader of the log from its cursor, at most ``window`` unacked events out."""
        frames = self.server.frames.frames
        sid = sub.stream_id
        try:
            with (
                contextlib.suppress(WebSocketDisconnect, RuntimeError, SeqEvicted, StreamNotFound),
                self.server.runs.reader(sid),
            ):
                async for batch in self.server.log.batches(sid, sub.cursor):
                    i = 0
                    while i < len(batch):
                        in_flight = sub.cursor - 1 - sub.acked
                        if in_flight >= sub.window:
                            sub.credit.clear()
                            await sub.credit.wait()
                            continue
                        n = min(len(batch) - i, sub.window - in_flight)
                        for frame in frames(sid, JSON_TEXT, batch[i : i + n]):
                            await self.send(frame)
                        sub.cursor += n
                        i += n
        finally:
            if self.subs.get(sid) is sub:
                del self.subs[sid]  # a finished subscription frees its slot: a socket serves any number of runs

    async def op_ack(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        if not isinstance(msg.get("stream_id"), str) or not isinstance(seq, int):
            raise _BadMessage("bad_message", 'ack needs a "stream_id" and an integer "seq"')
        sub = self.subs.get(msg["stream_id"])
        if sub is None:
            return  # the subscription already ended (an ack racing its end): nothing to credit
        if seq > sub.acked:
            sub.acked = min(seq, sub.cursor - 1)
            sub.credit.set()

    async def op_cancel(self, msg: dict[str, Any]) -> None:
        stream_id = await self._authorized(msg, "cancel")
        if not await self.server.cancel_run(stream_id, "cancelled over the WebSocket"):
            raise _BadMessage("not_found", f"no node produces stream {stream_id!r}")
        await self.reply({"op": "cancel", "stream_id": stream_id, "status": "cancelling"})

    async def op_tool_result(self, msg: dict[str, Any]) -> None:
        run = self._local_run(await self._authorized(msg, "cancel"))
        call_id = msg.get("call_id")
        if run.agent is None or not isinstance(call_id, str):
            raise _BadMessage("bad_message", 'tool_result needs a run with client-side tools and a "call_id"')
        try:
            run.agent.submit(call_id, msg.get("result"), is_error=bool(msg.get("is_error", False)))
        except KeyError as exc:
            raise _BadMessage("not_found", str(exc.args[0])) from None
        await self.reply({"op": "tool_result", "stream_id": run.stream_id, "call_id": call_id, "status": "accepted"})


async def websocket_endpoint(server: _Server, ws: WebSocket) -> None:
    """Serve one WebSocket connection."""
    await _Connection(server, ws).serve()
