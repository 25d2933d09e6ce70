"""Fan-out at the limit: one task writes a stream's live edge to every SSE reader keeping up.

A thousand readers of one stream each waiting on the log wake a thousand tasks per event, and
each passes its frame through the ASGI layers to its connection: about 30 µs of server CPU per
delivered event. The native SSE frame of an event is the same bytes for every reader, and so is
the HTTP/1.1 chunk around it. So once a stream has ``ServerConfig.fanout_readers`` readers, a
reader at the live edge (it has written every event there is, past its replay) hands its
connection to the stream's :class:`Broadcast`: one task reads the log once and writes each chunk
straight to each member's transport, while the members' own tasks sleep. A batch larger than
:data:`WRITE_BYTES` goes out as several writes. A member goes back to reading by itself (from the
seq it needs next) as soon as the broadcast cannot write to it at once: its transport holds
unsent bytes (a slow reader: its own task applies the lag and write-timeout rules) or it is
closing. The terminal event ends every member's body.

Only connections whose bytes this app may write itself take part: HTTP/1.1 with a chunked body on
a transport the app reaches (uvicorn; see :mod:`tokenwire.server.sockets`), not HTTP/1.0, HEAD,
HTTP/2 or another server. A middleware that rewrites response bodies would be bypassed: set
``fanout_readers=None`` under one.

>>> # in a reader's body, after it yielded the batch that ended at seq - 1:
>>> # handed = await service.fanout.hand_over(stream_id, seq, link)
>>> # None: not taken (read on); END: the broadcast wrote the terminal; else read on from it
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from tokenwire.events import TERMINAL_TYPES, Event
from tokenwire.server.runs import Runs
from tokenwire.server.schema import ServerConfig
from tokenwire.server.sockets import Link
from tokenwire.telemetry.server import ServerStats
from tokenwire.wire import SSE, FrameCache

__all__ = ["END", "PING", "WRITE_BYTES", "Broadcast", "Fanout", "FanoutHost", "Member", "chunk", "write_spans"]

END = -1
"""What :meth:`Fanout.hand_over` returns once the broadcast wrote the stream's terminal event."""
PING = b": ping\n"
"""The keep-alive: a comment with no blank line after it, so no SSE decoder dispatches an
(empty) event for it (DESIGN.md, wire notes); every SSE endpoint sends this one."""
WRITE_BYTES = 65_536
"""At most about this many bytes per write (one frame may exceed it): what a write may add to a
slow connection's transport buffer before flow control holds the writer; a broadcast's batch
larger than that goes out in several, each only to a member whose connection took the one before."""


def write_spans(frames: Sequence[bytes]) -> list[tuple[int, int]]:
    """``frames`` as ``[start, end)`` index spans of writes of at most about :data:`WRITE_BYTES`."""
    spans: list[tuple[int, int]] = []
    start = size = 0
    for i, frame in enumerate(frames):
        size += len(frame)
        if size >= WRITE_BYTES:
            spans.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(frames):
        spans.append((start, len(frames)))
    return spans


class FanoutHost(Protocol):
    """What a :class:`Fanout` needs of its server (:class:`~tokenwire.server.service.RunService`)."""

    config: ServerConfig
    frames: FrameCache
    stats: ServerStats
    runs: Runs

    def reading(
        self, stream_id: str, from_seq: int, *, idle_s: float | None, lagging: bool, live_from: int | None
    ) -> contextlib.AbstractContextManager[AsyncIterator[Sequence[Event]]]: ...


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk of a response body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Member:
    """A reader parked on a broadcast: its connection, the seq it needs next, and the future
    that hands it back (resolved with the seq to read on from, or :data:`END`)."""

    __slots__ = ("next", "resume", "transport")

    def __init__(self, transport: asyncio.Transport, next_seq: int, resume: asyncio.Future[int]):
        self.transport = transport
        self.next = next_seq
        """The seq this reader needs next (it wrote every event before it, and no other)."""
        self.resume = resume


class Broadcast:
    """One stream's live edge, written by one task to its members' connections.

    ``next_seq`` is the seq of the next batch it reads. A reader may join at that seq or past it
    (it read on by itself while the broadcast was not yet woken): the broadcast writes each
    member the events from its own next seq. The task ends with its last member (or the stream)."""

    def __init__(self, fanout: Fanout, stream_id: str, next_seq: int):
        self.stream_id = stream_id
        self.next_seq = next_seq
        self.members: list[Member] = []
        self._fanout = fanout
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"tokenwire-fanout-{stream_id}")

    def leave(self, member: Member) -> None:
        """``member`` left (its reader was cancelled): the last one out ends the broadcast."""
        with contextlib.suppress(ValueError):
            self.members.remove(member)
        if not self.members and not self.task.done():
            self.task.cancel()

    def _release(self, members: list[Member], end: bool = False) -> None:
        for m in members:
            if not m.resume.done():
                m.resume.set_result(END if end else m.next)

    async def _run(self) -> None:
        service = self._fanout.service
        frames = service.frames.frames
        try:
            reading = service.reading(
                self.stream_id, self.next_seq, idle_s=service.config.ping_s, lagging=False, live_from=self.next_seq
            )
            with reading as batches:
                async with contextlib.aclosing(batches):  # type: ignore[type-var]
                    async for batch in batches:
                        if not self._write(batch, frames, service.stats):
                            return
        except Exception:  # the log failed (evicted, gone): each member meets it reading on its own
            pass
        finally:
            self._release(self.members)  # cancelled, or the log failed: each reads on from its next seq
            if self._fanout.groups.get(self.stream_id) is self:
                del self._fanout.groups[self.stream_id]

    def _write(self, batch: Sequence[Event], frames: Any, stats: ServerStats) -> bool:
        """Write one batch (an empty one: a keep-alive) to every member that can take it now;
        False once nobody is left to write to, or the stream ended. A batch of more than about
        :data:`WRITE_BYTES` bytes goes out as several writes, each only to the members whose
        connection took the one before. No await: nobody joins or leaves meanwhile."""
        encoded: list[bytes] = frames(self.stream_id, SSE, batch) if batch else []
        *before, (a, b) = write_spans(encoded) or [(0, 0)]  # (0, 0): a keep-alive
        for start, end in before:
            if not self._write_one(batch[start:end], encoded[start:end], frames, stats):
                return False
        return self._write_one(batch[a:b], encoded[a:b], frames, stats)

    def _write_one(self, batch: Sequence[Event], encoded: list[bytes], frames: Any, stats: ServerStats) -> bool:
        """One write of ``batch`` (``encoded``: its frames) to every member that can take it."""
        first = self.next_seq
        after = batch[-1].seq + 1 if batch else first
        out, kept, size, events = chunk(b"".join(encoded) if batch else PING), [], 0, 0
        for m in self.members:
            if m.resume.done():
                continue  # its reader is leaving (cancelled)
            t = m.transport
            if t.is_closing() or t.get_write_buffer_size():
                m.resume.set_result(m.next)  # slow, or closing: on its own from its next seq
                continue
            kept.append(m)
            if m.next >= after and batch:
                continue  # it joined past this batch
            part = out if m.next <= first else chunk(b"".join(frames(self.stream_id, SSE, _since(batch, m.next))))
            try:
                t.write(part)
            except Exception:  # a transport that failed now: on its own from its next seq
                kept.pop()
                m.resume.set_result(m.next)
                continue
            events += after - max(m.next, first)
            m.next = max(m.next, after)
            size += len(part)
        self.members = kept
        stats.wrote("sse", size)
        stats.broadcast_events += events
        self.next_seq = after
        if batch and batch[-1].__class__ in TERMINAL_TYPES:
            self._release(kept, end=True)
            return False
        return bool(kept)


def _since(batch: Sequence[Event], seq: int) -> list[Event]:
    return [e for e in batch if e.seq >= seq]


class Fanout:
    """The server's broadcasts, one per stream with readers parked at its live edge."""

    def __init__(self, service: FanoutHost):
        self.service = service
        self.groups: dict[str, Broadcast] = {}

    async def hand_over(self, stream_id: str, seq: int, link: Link) -> int | None:
        """Let the stream's broadcast write to ``link`` from ``seq`` on, if it may (see the
        module): ``None`` when it was not taken, else once it is handed back, the seq to read on
        from, or :data:`END` when the broadcast wrote the terminal event."""
        least = self.service.config.fanout_readers
        transport = link.transport
        if least is None or not link.raw_chunks or transport is None:
            return None
        if transport.is_closing() or transport.get_write_buffer_size():
            return None  # slow (or leaving): the broadcast would hand it back at once
        group = self.groups.get(stream_id)
        if group is not None and group.task.done():
            group = None  # ended (its cleanup runs in the task: one cancelled before its start has none)
        if group is None:
            if self.service.runs.readers(stream_id) < least:
                return None
            group = self.groups[stream_id] = Broadcast(self, stream_id, seq)
        elif seq < group.next_seq:
            return None  # behind the broadcast: it reads on by itself
        member = Member(transport, seq, asyncio.get_running_loop().create_future())
        group.members.append(member)
        try:
            return await member.resume
        finally:
            group.leave(member)
