"""The WebSocket transport: one socket, many subscriptions, credit-based flow control.

Client → server, one JSON object per text frame, with ``op``:

- ``{"op": "run", "prompt" | "messages", …RunBody fields, "id"?, "window"?: 256}`` — needs the API key (the
  handshake's ``Authorization: Bearer`` header, or from a browser ``?ticket=``: a single-use ticket
  that ``POST /v1/tickets`` gives for the key; ``?api_key=`` is refused: URLs reach logs); replies
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

The ops themselves are :class:`~tokenwire.server.session.Session`'s (gRPC's ``Session`` call
shares them); this module is the WebSocket's framing around them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tokenwire.errors import Forbidden, OverCapacity, SessionError, Unauthorized
from tokenwire.server.http import refuse_url_credentials
from tokenwire.server.service import RunService, bearer
from tokenwire.server.session import Session
from tokenwire.server.sockets import Link, Watchdog
from tokenwire.wire import JSON_TEXT

__all__ = ["MAX_FRAME_BYTES", "route"]

MAX_FRAME_BYTES = 1_000_000


class _Connection:
    def __init__(self, service: RunService, ws: WebSocket):
        self.service = service
        self.ws = ws
        self.send_lock = asyncio.Lock()
        self.api_key = bearer(ws.headers)
        self.link = Link.here(service.config.send_buffer, ws.scope)  # this connection's socket, bounded
        self.watchdog = Watchdog(service.config.write_timeout_s, self.link.cut)  # a stalled write drops it

    async def send(self, text: str) -> None:
        async with self.send_lock:
            dog = self.watchdog
            dog.writing()
            try:
                await self.ws.send_text(text)
            finally:
                dog.wrote()  # also when the write is cancelled (a re-subscribe): no stale clock
        self.service.stats.wrote("websocket", len(text))

    async def reply(self, obj: dict[str, Any]) -> None:
        await self.send(msgspec.json.encode(obj).decode())

    async def serve(self) -> None:
        try:
            owner = await self._owner()
        except (Unauthorized, Forbidden) as exc:
            await self.ws.accept()
            await self.ws.close(1008, str(exc)[:120])
            return
        try:
            with self.service.connection("websocket", owner):
                try:
                    await self._serve(owner)
                finally:
                    self.watchdog.close()
        except OverCapacity as exc:
            await self.ws.accept()
            await self.ws.close(1013, str(exc)[:120])  # try again later

    async def _owner(self) -> str | None:
        """Who the connection acts for: the API key's owner (header), a ticket's (``?ticket=``), or
        nobody (subscriptions only need stream tokens; a run then closes the socket)."""
        query = self.ws.query_params
        refuse_url_credentials(query)
        ticket = query.get("ticket")
        if ticket is not None:
            claims = await self.service.redeem(ticket)
            if claims.own is None:
                raise Forbidden("this ticket is for reading a stream, not for a connection: get one for the API key")
            return claims.own
        try:
            return self.service.authenticate(self.api_key) if self.api_key else None
        except Unauthorized:
            return None  # runs need a valid key; subscriptions only need stream tokens

    async def _serve(self, owner: str | None) -> None:
        await self.ws.accept()
        session = Session(
            self.service,
            owner=owner,
            headers=self.ws.headers,
            fmt=JSON_TEXT,
            send=self.send,
            reply=self.reply,
            disconnected=(WebSocketDisconnect, OSError),  # OSError: a connection the watchdog cut
        )
        async with session:
            try:
                await self._receive(session)
            finally:
                session.close()

    async def _receive(self, session: Session) -> None:
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
                    await session.handle(self.decode(text))
                except SessionError as exc:
                    await self.reply({"op": "error", "code": exc.code, "message": str(exc)})
                except Unauthorized as exc:
                    await self.ws.close(1008, str(exc)[:120])
                    return
        except WebSocketDisconnect:
            return

    @staticmethod
    def decode(text: str) -> dict[str, Any]:
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise SessionError("bad_json", f"not JSON: {exc}") from None
        except RecursionError:
            raise SessionError("bad_json", "JSON nested too deeply") from None
        except UnicodeEncodeError:
            raise SessionError("bad_json", "not valid Unicode text") from None
        if not isinstance(msg, dict):
            raise SessionError("bad_message", 'every message is a JSON object with an "op"')
        return msg


def route(service: RunService) -> WebSocketRoute:
    """``/v1/ws``, bound to ``service``."""

    async def endpoint(ws: WebSocket) -> None:
        await _Connection(service, ws).serve()

    return WebSocketRoute("/v1/ws", endpoint)
