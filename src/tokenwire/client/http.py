"""Python clients for a tokenwire server: SSE with reconnect-and-resume, and sync.

>>> import asyncio                                                              # doctest: +SKIP
>>> async def main():                                                           # doctest: +SKIP
...     async with Client("http://127.0.0.1:8000", api_key="k") as client:
...         async for event in client.run("Write a haiku"):
...             print(event.type)

``subscribe`` reconnects when the connection drops and resumes after the last seq it yielded
(``Last-Event-ID``), honouring the server's ``retry`` hint with a capped backoff; events are
de-duplicated by seq, so the caller sees each exactly once and in order, ending with the terminal
event. HTTP errors raise: 401 → :class:`~tokenwire.errors.Unauthorized`, 403 →
:class:`~tokenwire.errors.Forbidden`, 404 → :class:`~tokenwire.errors.StreamNotFound`, 410 →
:class:`~tokenwire.errors.SeqEvicted`, others :class:`ClientError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple

import httpx
import msgspec

from tokenwire.core.snapshot import Snapshot
from tokenwire.errors import (
    ClientError,
    Conflict,
    ConnectionLost,
    Forbidden,
    ModelNotFound,
    SeqEvicted,
    StreamNotFound,
    Unauthorized,
)
from tokenwire.events import TERMINAL_TYPES, Event, decode
from tokenwire.log import TreeCursor, subscription_cursor
from tokenwire.wire.sse import SSEDecoder

__all__ = ["Client", "ClientError", "ConnectionLost", "RunInfo", "run_body"]


class RunInfo(msgspec.Struct, frozen=True):
    """What ``POST /v1/runs`` returns."""

    stream_id: str
    token: str
    """Read and cancel."""
    read_token: str
    """Read only: share it with viewers."""
    events_url: str


class _Connect(NamedTuple):
    """One (re)connection's request."""

    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, int]
    json: dict[str, Any] | None


def _raise_for(status: int, body: bytes, stream_id: str, from_seq: int) -> None:
    try:
        err = msgspec.json.decode(body).get("error", {})
        code, message = str(err.get("code", "error")), str(err.get("message", ""))
    except (msgspec.DecodeError, AttributeError):
        code, message = "error", body[:200].decode(errors="replace")
    if status == 401:
        raise Unauthorized(message)
    if status == 403:
        raise Forbidden(message)
    if status == 404:
        raise ModelNotFound(message) if code == "model_not_found" else StreamNotFound(message)
    if status == 409:
        raise Conflict(message)
    if status == 410:
        m = re.search(r"oldest retained seq is (\d+)", message)
        raise SeqEvicted(stream_id, from_seq, int(m.group(1)) if m else 0)
    raise ClientError(status, code, message)


def run_body(request: str | dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A run request's body: a prompt or a dict of ``RunBody`` fields, with ``options`` over it."""
    body = {"prompt": request} if isinstance(request, str) else dict(request)
    body.update(options)
    return body


class Client:
    """Async client over HTTP + SSE."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_reconnects: int = 8,
        max_backoff_s: float = 10.0,
        idle_timeout_s: float = 45.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.idle_timeout_s = idle_timeout_s
        """How long a stream may stay silent before the connection is presumed dead and resumed;
        a server that announces its keep-alive interval (``x-tokenwire-ping-s``) gets 2.5x that."""
        self.api_key = api_key
        self._own = http_client is None
        self.http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))
        self.max_reconnects = max_reconnects
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0
        """Reconnections made so far (all subscriptions)."""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def create_run(self, request: str | dict[str, Any], **options: Any) -> RunInfo:
        """Start a run (``request``: a prompt, or a dict of ``RunBody`` fields)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        r = await self.http.post(f"{self.base_url}/v1/runs", json=run_body(request, options), headers=headers)
        if r.status_code != 201:
            _raise_for(r.status_code, r.content, "", 0)
        return msgspec.convert(r.json(), RunInfo)

    async def run(self, request: str | dict[str, Any], **options: Any) -> AsyncGenerator[Event, None]:
        """Start a run and iterate its events to the terminal one."""
        info = await self.create_run(request, **options)
        async with contextlib.aclosing(self.subscribe(info.stream_id, info.token)) as events:
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
        """Iterate a stream's events from ``from_seq``, resuming across disconnects.

        With an empty ``snapshot`` (``Snapshot()``): join the run now. The server's snapshot of
        its state fills it, the events after it are yielded, and each is added to it as it is
        yielded (``snapshot`` is the run's state at the last event yielded)::

            state = Snapshot()
            async for event in client.subscribe(stream_id, token, snapshot=state):
                render(state)

        With ``tree`` too, the snapshot is the run's; the events after it are the run's from the
        snapshot on and its children's that were still running, from their start.

        With ``tree`` (or a ``cursor``): the run's tree instead, its events and those of every
        child run below it, interleaved on one connection (``event.stream_id`` says whose; each
        stream in order, a child's end before its parent's mark of it), until every stream of the
        tree ended; a resume restores every stream's position. ``cursor`` (a
        :class:`~tokenwire.log.TreeCursor`) is where to start and is moved as events are yielded.
        """
        url = f"{self.base_url}/v1/streams/{stream_id}/events"
        if tree and cursor is None:
            cursor = TreeCursor(stream_id)
        tree_cursor = cursor
        state = {"last": from_seq - 1}

        def connect() -> _Connect:
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            params: dict[str, int] = {}
            if tree_cursor is not None:
                params["tree"] = 1
                if tree_cursor.positions[stream_id]:
                    headers["Last-Event-ID"] = tree_cursor.token()
            elif state["last"] >= 0:
                headers["Last-Event-ID"] = str(state["last"])
            joined = tree_cursor.positions[stream_id] if tree_cursor is not None else state["last"] + 1
            if snapshot is not None and joined == 0:
                params["snapshot"] = 1  # not joined yet (a resume goes on from where it is)
            return _Connect("GET", url, headers, params, None)

        async with contextlib.aclosing(
            self._follow(connect, f"stream {stream_id!r}", cursor, state, snapshot)
        ) as events:
            async for event in events:
                yield event

    async def subscribe_many(
        self,
        streams: Mapping[str, str | None] | None = None,
        *,
        mine: bool = False,
        cursor: TreeCursor | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Iterate many streams on one connection, resuming all of them across disconnects:
        ``streams`` maps each stream id to its read token (None: this client's API key started
        it), and ``mine`` adds every run of the API key, those started later included.

        Each event names its stream (``event.stream_id``); each stream comes in order, with the
        runs below it; a run of ``mine`` is announced by a ``step child started`` event of the
        stream ``~runs`` before its own events. With only ``streams`` it ends once every one
        ended; with ``mine`` it goes on until the caller stops. ``cursor`` is where to start
        (the one a previous call moved: its :meth:`~tokenwire.log.TreeCursor.token` is every
        stream's position at once)::

            async for event in client.subscribe_many({run_a.stream_id: run_a.read_token, run_b.stream_id: None}):
                print(event.stream_id, event.type)
        """
        named, at = subscription_cursor(streams, mine=mine, cursor=cursor)
        refs = [{"stream_id": sid, **({"token": tok} if tok else {})} for sid, tok in named.items()]
        url = f"{self.base_url}/v1/events"
        # A new subscription starts where the server says (its first event, ``cursor``): until
        # that arrived, a reconnect asks for a new start again, not for the placeholder's.
        state = {"last": -1, "started": int(cursor is not None)}

        def connect() -> _Connect:
            headers = {"Accept": "text/event-stream"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            body: dict[str, Any] = {"streams": refs, "mine": mine}
            if state["started"]:
                body["cursor"] = at.token()
            return _Connect("POST", url, headers, {}, body)

        async with contextlib.aclosing(self._follow(connect, "subscription", at, state, None)) as events:
            async for event in events:
                yield event

    async def _follow(
        self,
        connect: Callable[[], _Connect],
        what: str,
        cursor: TreeCursor | None,
        state: dict[str, int],
        snapshot: Snapshot | None,
    ) -> AsyncGenerator[Event, None]:
        """The events of an SSE subscription, reconnecting with ``connect()``'s request (which
        says where to resume: ``cursor``'s token, or ``state["last"]``, moved as events are yielded)."""
        retry_s = 1.0
        failures = 0
        while True:
            if cursor is not None:
                cursor.reopen()
            method, url, headers, params, body = connect()
            try:
                async with self.http.stream(method, url, headers=headers, params=params, json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        _raise_for(response.status_code, response.content, what, state["last"] + 1)
                    # Bytes, not events, reset the idle clock: keep-alive comments count as life.
                    idle_s = _idle_timeout(response.headers.get("x-tokenwire-ping-s"), self.idle_timeout_s)
                    decoder = SSEDecoder()
                    async for chunk in _with_idle_timeout(response.aiter_bytes(), idle_s):
                        for sse in decoder.feed(chunk):
                            if sse.retry is not None:
                                retry_s = sse.retry / 1000
                            if not sse.data:
                                continue  # an empty data line carries nothing
                            if sse.event == "cursor" and cursor is not None:
                                cursor.restore(sse.data)  # a multiplexed subscription's start
                                state["started"] = 1
                                continue
                            if sse.event == "snapshot" and snapshot is not None:
                                snapshot.restore(sse.data)
                                state["last"] = snapshot.next_seq - 1
                                if cursor is not None and sse.id:
                                    cursor.restore(sse.id)  # the tree from the snapshot on
                                if snapshot.finished:
                                    return  # it had ended: nothing comes after
                                continue
                            event = decode(sse.data)
                            if cursor is not None:
                                for fresh in cursor.receive(event):
                                    failures = 0
                                    if snapshot is not None and fresh.stream_id == cursor.root:
                                        snapshot.add(fresh)
                                    yield fresh
                                if cursor.ended:
                                    return
                                continue
                            if event.seq <= state["last"]:
                                continue  # a duplicate after a resume
                            state["last"] = event.seq
                            failures = 0
                            if snapshot is not None:
                                snapshot.add(event)
                            yield event
                            if event.__class__ in TERMINAL_TYPES:
                                return
            except (httpx.TransportError, TimeoutError):
                pass  # dropped, or silent past the keep-alive interval (a half-open connection): resume
            failures += 1
            self.reconnects += 1
            if failures > self.max_reconnects:
                raise ConnectionLost(
                    f"{what}: no progress after {self.max_reconnects} reconnects (last seq {state['last']})"
                )
            backoff = min(self.max_backoff_s, retry_s * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(backoff / 2, backoff))

    async def cancel(self, stream_id: str, token: str) -> None:
        r = await self.http.post(
            f"{self.base_url}/v1/streams/{stream_id}/cancel", headers={"Authorization": f"Bearer {token}"}
        )
        if r.status_code != 202:
            _raise_for(r.status_code, r.content, stream_id, 0)

    async def approve(self, stream_id: str, call_id: str, approved: bool = True, *, token: str | None = None) -> None:
        """Answer the approval a suspended run waits for, with the run's ``token`` (the one that
        can cancel it; what a server without API keys requires) or else this client's API key
        (the run's owner's); the run resumes on the server that takes it."""
        await self._answer(stream_id, "approvals", {"call_id": call_id, "approved": approved}, token)

    async def submit_tool_result(
        self, stream_id: str, call_id: str, result: Any, *, is_error: bool = False, token: str | None = None
    ) -> None:
        """Post the result of a call to one of the run's client-side tools (your ``client_tools``,
        or the server's ``client_side`` ones), which the suspended run waits for; credentials as
        :meth:`approve`. The run resumes on the server that takes it::

            async for event in client.run({"prompt": "...", "client_tools": [pick_color]}):
                if event.type == "step" and event.name == "client_tool" and event.status == "started":
                    await client.submit_tool_result(event.stream_id, event.detail["call_id"], "teal")
        """
        body = {"call_id": call_id, "result": result, "is_error": is_error}
        await self._answer(stream_id, "tool_results", body, token)

    async def _answer(self, stream_id: str, what: str, body: dict[str, Any], token: str | None) -> None:
        credential = token or self.api_key
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        r = await self.http.post(f"{self.base_url}/v1/streams/{stream_id}/{what}", json=body, headers=headers)
        if r.status_code != 202:
            _raise_for(r.status_code, r.content, stream_id, 0)

    async def status(self, stream_id: str, token: str) -> dict[str, Any]:
        r = await self.http.get(f"{self.base_url}/v1/streams/{stream_id}", headers={"Authorization": f"Bearer {token}"})
        if r.status_code != 200:
            _raise_for(r.status_code, r.content, stream_id, 0)
        result: dict[str, Any] = r.json()
        return result


def _idle_timeout(announced: str | None, default: float) -> float:
    """2.5 keep-alive intervals when the server announces one (a ping may be late, not two)."""
    try:
        ping = float(announced) if announced else 0.0
    except ValueError:
        ping = 0.0
    return 2.5 * ping if 0 < ping < 3600 else default


async def _with_idle_timeout(items: AsyncIterator[Any], idle_s: float) -> AsyncIterator[Any]:
    """``items``, raising TimeoutError when none (keep-alives included) arrives within ``idle_s``."""
    iterator = aiter(items)
    try:
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
