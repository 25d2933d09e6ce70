"""Server-side runs: each one a stream generated independently of its subscribers.

A :class:`Run` owns the stream's handle and, for each wire format, a :class:`~tokenwire.log.Ring`
of encoded frames: every event is encoded once per format, at append time, and the bytes are
shared by every connection reading that format. :class:`Runs` creates, finds, retains and shuts
them down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any

from tokenwire.api import generate
from tokenwire.engine import StreamHandle
from tokenwire.events import TERMINAL_TYPES, Event, encode
from tokenwire.log import Ring
from tokenwire.provider import Provider
from tokenwire.request import Request

__all__ = ["Run", "Runs", "ShuttingDown"]


class ShuttingDown(Exception):
    """The server no longer accepts runs."""


def sse_frame(event: Event, data: bytes) -> bytes:
    """The native SSE frame: ``id`` is the seq, ``event`` the type, LF line endings."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), data)


class Run:
    """One server-side stream and its encoded frames."""

    def __init__(self, stream_id: str, max_events: int):
        self.stream_id = stream_id
        self.created = time.time()
        self.sse: Ring[bytes] = Ring(stream_id, max_events)
        """Native SSE frames, seq-aligned."""
        self.json: Ring[str] = Ring(stream_id, max_events)
        """Event JSON as text (WebSocket frames), seq-aligned."""
        self.handle: StreamHandle | None = None
        self.agent: Any = None

    def on_event(self, event: Event) -> None:
        """Inline observer: encode once per wire format."""
        data = encode(event)
        self.sse.append(sse_frame(event, data))
        self.json.append(data.decode())
        if event.__class__ in TERMINAL_TYPES:
            self.sse.finish()
            self.json.finish()

    @property
    def finished(self) -> bool:
        return self.sse.finished


class Runs:
    """The server's runs, with retention: at most ``max_runs`` kept, finished ones evicted first."""

    def __init__(self, *, max_runs: int = 1000, max_events: int = 65_536):
        self.max_runs = max_runs
        self.max_events = max_events
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self.accepting = True

    def get(self, stream_id: str) -> Run | None:
        return self._runs.get(stream_id)

    def start(self, provider: Provider, request: Request, **kwargs: Any) -> Run:
        """Start generating now; the run does not depend on any subscriber."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs")
        stream_id = uuid.uuid4().hex
        run = Run(stream_id, self.max_events)
        observers = [run.on_event, *kwargs.pop("observers", ())]
        run.handle = generate(provider, request, observers=observers, stream_id=stream_id, **kwargs)
        run.agent = run.handle.provider if hasattr(run.handle.provider, "submit") else None
        self._runs[stream_id] = run
        while len(self._runs) > self.max_runs:
            victim = next((sid for sid, r in self._runs.items() if r.finished), None)
            if victim is None:
                break  # never drop a live run: retention applies to finished ones
            del self._runs[victim]
        return run

    @property
    def running(self) -> list[Run]:
        return [r for r in self._runs.values() if not r.finished]

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting runs; let running ones finish for ``grace_s``, then end them with
        ``error(source=transport, code=shutdown)``."""
        self.accepting = False
        handles = [r.handle for r in self.running if r.handle is not None]
        if not handles:
            return
        waits = [asyncio.ensure_future(h.wait()) for h in handles]
        _, pending = await asyncio.wait(waits, timeout=grace_s)
        for h in handles:
            if not h.done():
                h.fail(
                    "shutdown",
                    "the server is shutting down; retry on another instance",
                    source="transport",
                    retryable=True,
                )
        if pending:
            await asyncio.wait(pending)
