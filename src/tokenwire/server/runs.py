"""Server-side runs: each one a stream generated independently of its readers.

A :class:`Run` is the handle of a stream this server produces; its events are in the server's
:class:`~tokenwire.log.EventLog` (``create_app(log=...)``), which every SSE and WebSocket reader
reads from its own seq: the run keeps no copy of them. :class:`Runs` creates, finds, retains and
shuts them down, with O(1) bookkeeping per start.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any

from tokenwire.api import generate
from tokenwire.engine import StreamHandle
from tokenwire.errors import OverCapacity, ShuttingDown
from tokenwire.log import EventLog
from tokenwire.provider import Provider
from tokenwire.request import Request

__all__ = ["Run", "Runs", "ShuttingDown"]


class Run:
    """One stream produced by this server."""

    __slots__ = ("agent", "created", "handle", "stream_id")

    def __init__(self, stream_id: str, handle: StreamHandle):
        self.stream_id = stream_id
        self.created = time.time()
        self.handle = handle
        self.agent: Any = handle.provider if hasattr(handle.provider, "submit") else None
        """The agent loop, when the run has tools (client-side tool results go to it)."""

    @property
    def finished(self) -> bool:
        return self.handle.done()


class Runs:
    """The server's runs, with retention: at most ``max_runs`` kept, finished ones evicted first."""

    def __init__(
        self, log: EventLog, *, max_runs: int = 1000, max_live: int | None = None, max_live_per_owner: int | None = None
    ):
        self.log = log
        self.max_runs = max_runs
        self.max_live = max_live
        self.max_live_per_owner = max_live_per_owner
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished runs, oldest first
        self._live: dict[str, str] = {}  # live run -> owner
        self._live_by_owner: dict[str, int] = {}
        self.accepting = True

    def get(self, stream_id: str) -> Run | None:
        return self._runs.get(stream_id)

    def live(self, owner: str | None = None) -> int:
        """Runs generating now (for one owner, when given)."""
        return len(self._live) if owner is None else self._live_by_owner.get(owner, 0)

    def start(self, provider: Provider, request: Request, *, owner: str = "", **kwargs: Any) -> Run:
        """Start generating now; the run does not depend on any reader.

        ``owner`` (an API key's fingerprint) counts against ``max_live_per_owner``; both caps
        raise :class:`OverCapacity` before anything starts.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs")
        if self.max_live is not None and len(self._live) >= self.max_live:
            raise OverCapacity(f"the server is generating {len(self._live)} runs, its limit; retry shortly")
        if self.max_live_per_owner is not None and self._live_by_owner.get(owner, 0) >= self.max_live_per_owner:
            raise OverCapacity(
                f"this API key has {self.max_live_per_owner} runs generating, its limit; retry when one ends"
            )
        stream_id = uuid.uuid4().hex
        handle = generate(provider, request, stream_id=stream_id, log=self.log, **kwargs)
        run = Run(stream_id, handle)
        self._runs[stream_id] = run
        self._live[stream_id] = owner
        self._live_by_owner[owner] = self._live_by_owner.get(owner, 0) + 1
        handle._task.add_done_callback(lambda _: self._on_finished(stream_id))
        self._evict()
        return run

    def _on_finished(self, stream_id: str) -> None:
        owner = self._live.pop(stream_id, None)
        if owner is not None:
            left = self._live_by_owner[owner] - 1
            if left:
                self._live_by_owner[owner] = left
            else:
                del self._live_by_owner[owner]
        if stream_id in self._runs:
            self._finished[stream_id] = None
        self._evict()

    def _evict(self) -> None:
        # Never a live run: retention applies to finished ones, oldest first.
        while len(self._runs) > self.max_runs and self._finished:
            victim, _ = self._finished.popitem(last=False)
            self._runs.pop(victim, None)

    @property
    def running(self) -> list[Run]:
        return [self._runs[sid] for sid in self._live if sid in self._runs]

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting runs; let running ones finish for ``grace_s``, then end them with
        ``error(source=transport, code=shutdown)``."""
        self.accepting = False
        handles = [r.handle for r in self.running]
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
