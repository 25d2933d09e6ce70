"""The one SSE response shell every SSE endpoint uses: a reader of the log, an encoder, keep-alive
and the client leaving.

- :func:`log_frames` reads a stream from a seq through the run service and turns its batches into
  bounded writes: frames of a stateless format from the server's shared frame cache (native SSE),
  or of a stateful one through a :class:`~tokenwire.wire.SharedReader` (OpenAI, AI SDK, AG-UI),
  which continues with an encoder of its own when it falls behind the shared window. An idle
  stream gets :data:`PING`; a reader too far behind a live producer, or behind retention, is
  ended (its client resumes); ``on_abandon`` runs when the client leaves before the terminal event.
- :func:`tree_frames` reads a run tree (the run and every child run below it) the same way, each
  frame's ``id`` the :class:`~tokenwire.log.TreeCursor` token to resume it from.
- :class:`EventStreamResponse` is the response around any such body (speech's too): it holds one
  of the server's connection slots while it is served and counts the bytes it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from tokenwire.errors import ObserverOverflow, SeqEvicted, StreamNotFound
from tokenwire.events import TERMINAL_TYPES, Event
from tokenwire.log import OWNED, TreeCursor, read_tree
from tokenwire.server.fanout import END, PING, WRITE_BYTES, write_spans
from tokenwire.server.service import RunService
from tokenwire.server.sockets import Link, Watchdog, current_transport
from tokenwire.wire import SSE, FrameCache, SharedReader, WireFormat
from tokenwire.wire.encoder import StreamEncoder

__all__ = ["PING", "WRITE_BYTES", "WRITE_FRAMES", "EventStreamResponse", "log_frames", "tree_frame", "tree_frames"]

WRITE_FRAMES = 512
"""At most this many frames per write (a replay is encoded a slice at a time, never the lot)."""


def _bounded(frames: list[bytes]) -> list[bytes]:
    """Frames joined into writes of at most about ``WRITE_BYTES`` each."""
    return [b"".join(frames[a:b]) for a, b in write_spans(frames)]


async def log_frames(
    service: RunService,
    stream_id: str,
    from_seq: int,
    *,
    fmt: WireFormat = SSE,
    reader: SharedReader | None = None,
    prelude: bytes = b"",
    lagging: bool = True,
    live_from: int | None = None,
    on_abandon: Callable[[], None] | None = None,
    on_lag: Callable[[], None] | None = None,
    link: Link | None = None,
) -> AsyncIterator[bytes]:
    """The stream's events from ``from_seq`` as SSE writes, in ``fmt`` (stateless, shared by
    every reader through the frame cache; native SSE by default) or through ``reader`` (a
    stateful format, read from 0).

    ``prelude`` is written first. ``lagging``: a reader ``max_lag_events`` behind a live
    producer is disconnected (counted in the server's stats; ``on_lag`` cuts its connection; its
    client resumes). Falling behind retention ends the body too (the client's resume gets 410 / 404).
    ``live_from``: see :meth:`~tokenwire.log.EventLog.batches` (``0`` for the request that started the run).
    ``link``: the connection, which a native SSE reader at the live edge of a stream with many
    readers hands to the stream's broadcast (:mod:`tokenwire.server.fanout`) until it is handed back;
    only past ``live_from`` (give it: where the reader's replay ends).
    """
    cache: FrameCache = service.frames
    frame, frames = cache.frame, cache.frames
    finished = False
    fanout = service.fanout if link is not None and reader is None and fmt is SSE else None
    if prelude:
        yield prelude
    try:
        seq: int | None = from_seq
        while seq is not None:
            idle_s = service.config.ping_s
            with service.reading(stream_id, seq, idle_s=idle_s, lagging=lagging, live_from=live_from) as batches:
                seq = None
                async with contextlib.aclosing(batches):  # type: ignore[type-var]
                    async for batch in batches:
                        if not batch:
                            yield PING
                            continue
                        finished = batch[-1].__class__ in TERMINAL_TYPES
                        if reader is not None:
                            out: list[bytes] = []
                            for event in batch:
                                data = reader.frame(event)
                                if data is None:  # behind the shared window (rare): awaited only then
                                    data = await _caught_up(service, reader, event)
                                out.append(data)
                            for write in _bounded(out):
                                yield write
                            if reader.ended(batch[-1].seq):  # the format ended its response (a suspension)
                                finished = True
                                break
                        elif len(batch) == 1:  # the live edge of a paced stream, and every reader of a fan-out
                            yield frame(stream_id, fmt, batch[0])
                        else:
                            for i in range(0, len(batch), WRITE_FRAMES):
                                for write in _bounded(frames(stream_id, fmt, batch[i : i + WRITE_FRAMES])):
                                    yield write
                        after = batch[-1].seq + 1
                        # Only at the live edge: before live_from the reader replays (no transient data).
                        if fanout is not None and not finished and live_from is not None and after >= live_from:
                            assert link is not None
                            seq = await fanout.hand_over(stream_id, after, link)
                            if seq is not None:
                                break  # handed back: read on from there (what came since is live)
            if seq == END:
                finished = True
                break
            live_from = seq
    except ObserverOverflow:
        service.stats.lag_disconnects += 1  # too far behind a live producer: disconnect rather than buffer
        if on_lag is not None:
            on_lag()
    except (SeqEvicted, StreamNotFound):
        pass  # fell behind retention: the client resumes and gets 410 / 404
    finally:
        if not finished and on_abandon is not None:
            on_abandon()


async def tree_frames(
    service: RunService,
    cursor: TreeCursor,
    *,
    encoder: StreamEncoder | None = None,
    prelude: bytes = b"",
    live_from: int | None = None,
    root_batches: Callable[[int, float | None], AsyncIterator[Sequence[Event]]] | None = None,
    ids_per_batch: bool = False,
    on_abandon: Callable[[], None] | None = None,
    on_lag: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """A run tree's events from ``cursor`` as SSE writes: native frames, each with the cursor's
    token after it as its ``id`` (``Last-Event-ID`` resumes every stream of the tree at once), or
    ``encoder``'s frames (a stateful format that shows child runs its own way, read from the
    start). Keep-alives, lag and retention as :func:`log_frames`; each run read counts as read.
    A multiplexed subscription is a tree with many roots (:mod:`tokenwire.server.multiplex`);
    ``root_batches`` is :func:`~tokenwire.log.read_tree`'s (an owner's runs). ``ids_per_batch``:
    the cursor only after each batch's last frame (a cursor of many streams is long; a client
    that resumes from it may get again events it had: each names its stream and seq)."""
    cfg = service.config
    frame, token = tree_frame(service), cursor.token
    if prelude:
        yield prelude
    try:
        max_lag = cfg.max_lag_events if encoder is None else None  # a stateful format's reader cannot resume
        tree = read_tree(
            service.log,
            cursor,
            idle_s=cfg.ping_s,
            max_lag=max_lag,
            live_from=live_from,
            root_batches=root_batches,
            reading=service.runs.reader,  # every run read counts as read (abandoned runs are cancelled)
        )
        async with contextlib.aclosing(tree):
            async for batch in tree:
                out = []
                if encoder is not None:
                    for e in batch:
                        out += encoder.feed(e)
                    if out:
                        for write in _bounded(out):
                            yield write
                    elif not cursor.ended:
                        yield PING  # an idle tree (or events this format leaves out): the connection lives
                    if encoder.finished:
                        return  # its terminal, or where the format ends a response early (a suspension)
                    continue
                for e in batch:  # the shared frame (its id the seq), with the tree's cursor as id instead
                    f: bytes = frame(e, SSE)
                    f = f[f.index(b"\n") + 1 :]
                    out.append(f if ids_per_batch else b"id: %s\n%s" % (token().encode(), f))
                if ids_per_batch and out:
                    out[-1] = b"id: %s\n%s" % (token().encode(), out[-1])
                if not out:
                    yield PING
                for write in _bounded(out):
                    yield write
    except ObserverOverflow:
        service.stats.lag_disconnects += 1
        if on_lag is not None:
            on_lag()
    except (SeqEvicted, StreamNotFound):
        pass  # fell behind retention: the client resumes and gets 410 / 404
    finally:
        if not cursor.ended and on_abandon is not None:
            on_abandon()


def tree_frame(service: RunService) -> Callable[[Event, WireFormat], Any]:
    """``frame(event, fmt)``: a tree's event in ``fmt``, shared through the server's frame cache,
    except the marks of an owner's runs (:data:`~tokenwire.log.OWNED`: every owner's have the
    same stream id and seqs, so they are never cached)."""
    cached = service.frames.frame

    def frame(event: Event, fmt: WireFormat) -> Any:
        sid = event.stream_id
        return cached(sid, fmt, event) if sid != OWNED else fmt.encode(event)

    return frame


async def _caught_up(service: RunService, reader: SharedReader, event: Event) -> bytes:
    """The event's frame from a reader that fell behind its format's shared window: it continues
    with an encoder of its own, fed the stream's history first."""
    reader.catch_up(await service.history(event.stream_id, event.seq))
    data = reader.frame(event)
    assert data is not None
    return data


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that holds one of the server's streaming-connection slots
    while it is served (until it ends or the client leaves) and counts what it writes under
    ``transport``: counted where the ASGI call starts and returns, not in a generator's
    ``finally`` that the garbage collector may run much later. Capacity is checked by the
    endpoint before it answers (a 429 is an ordinary response).

    The connection's kernel send buffer is bounded (``ServerConfig.send_buffer``) and a write
    that makes no progress for ``write_timeout_s`` cuts it, as does ``link.cut()`` (what
    :func:`log_frames` calls for a reader that lags): see :mod:`tokenwire.server.sockets`.
    """

    def __init__(
        self,
        service: RunService,
        body: AsyncIterator[bytes],
        *,
        transport: str,
        headers: dict[str, str] | None = None,
        link: Link | None = None,
    ):
        super().__init__(body, media_type="text/event-stream", headers={"cache-control": "no-cache", **(headers or {})})
        self._service = service
        self._transport = transport
        self.link = link or Link(None)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        service, transport, link = self._service, self._transport, self.link
        cfg = service.config
        link.transport = current_transport(scope)
        link.task = asyncio.current_task()
        # uvicorn sends a body of unknown length to an HTTP/1.1 client as chunks (none for HEAD)
        link.raw_chunks = scope.get("http_version") == "1.1" and scope.get("method") != "HEAD"
        if cfg.send_buffer is not None:
            link.bound(cfg.send_buffer)
        wrote = service.stats.wrote
        dog = Watchdog(cfg.write_timeout_s, link.cut)  # a write with no progress: drop the reader

        async def counted(message: Any) -> None:  # one call per write, not per event
            if message["type"] == "http.response.body":
                wrote(transport, len(message.get("body", b"")))
            dog.writing()
            await send(message)
            dog.wrote()
            if link.cut_off:
                raise ConnectionAbortedError(f"no progress writing for {cfg.write_timeout_s:g} s, or lagging")

        with service.connection(transport, admit=False):
            try:
                await super().__call__(scope, receive, counted)
            except (ClientDisconnect, OSError):
                if not link.cut_off:
                    raise
                await asyncio.sleep(0)  # the server sees the connection lost before we return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (link.cut_off and link.transport is None) or task is None or task.cancelling() > 1:
                    raise
                task.uncancel()  # cut by us (no transport to abort): this response ends here
            finally:
                dog.close()
