"""Server-side runs: each one a stream generated independently of its readers.

A :class:`Run` is the handle of a stream this server produces; its events are in the server's
:class:`~tokenwire.log.EventLog` (``create_app(log=...)``), which every SSE and WebSocket reader
reads from its own seq: the run keeps no copy of them. :class:`Runs` creates, finds, retains and
shuts them down, with O(1) bookkeeping per start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

import msgspec

from tokenwire.core.provider import Provider
from tokenwire.core.request import Request
from tokenwire.engine import RunOptions, StreamHandle, start_stream
from tokenwire.errors import OverCapacity, ShuttingDown
from tokenwire.events import Done
from tokenwire.log import EventLog

__all__ = ["Run", "Runs", "ShuttingDown"]

logger = logging.getLogger("tokenwire")


class Run:
    """One stream produced by this server."""

    __slots__ = ("agent", "background", "created", "handle", "owner", "stream_id", "unread_since")

    def __init__(
        self, stream_id: str, handle: StreamHandle, *, background: bool = False, now: float = 0.0, owner: str = ""
    ):
        self.stream_id = stream_id
        self.owner = owner
        """The API key (its fingerprint) that started it."""
        self.created = time.time()
        self.handle = handle
        self.background = background
        """Runs to its end whether or not anyone reads it (OpenAI's ``background``)."""
        self.unread_since: float | None = now
        """Since when (loop time) no reader has been attached here; None while one is."""

    @property
    def finished(self) -> bool:
        return self.handle.done()


class Runs:
    """The server's runs, with retention: at most ``max_runs`` kept, finished ones evicted first."""

    def __init__(
        self,
        log: EventLog,
        *,
        max_runs: int = 1000,
        max_live: int | None = None,
        max_live_per_owner: int | None = None,
        abandon_after_s: float | None = None,
        retry_after_s: float = 1.0,
        on_finish: Callable[[Run], None] | None = None,
    ):
        self.log = log
        self.on_finish = on_finish
        """Called with each run when it ends (the server's metrics)."""
        self.max_runs = max_runs
        self.max_live = max_live
        self.max_live_per_owner = max_live_per_owner
        self.abandon_after_s = abandon_after_s
        self.retry_after_s = retry_after_s
        """When a client refused for capacity should try again (:class:`OverCapacity`)."""
        """A live run that no reader (on any node) has had for this long is cancelled ("abandoned")."""
        self._readers: dict[str, int] = {}  # stream id -> readers attached in this process
        self._watchdog: asyncio.Task[None] | None = None
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished runs, oldest first
        self._live: dict[str, str] = {}  # live run -> owner
        self._live_by_owner: dict[str, int] = {}
        self.accepting = True

    def get(self, stream_id: str) -> Run | None:
        return self._runs.get(stream_id)

    def live_runs(self) -> list[Run]:
        """The runs generating now, in this process."""
        return [run for sid in self._live if (run := self._runs.get(sid)) is not None]

    def live(self, owner: str | None = None) -> int:
        """Runs generating now (for one owner, when given)."""
        return len(self._live) if owner is None else self._live_by_owner.get(owner, 0)

    def start(
        self,
        provider: Provider,
        request: Request,
        options: RunOptions,
        *,
        observers: Iterable[object] = (),
        owner: str = "",
        background: bool = False,
    ) -> Run:
        """Start generating now (``options.stream_id``; ``options.prior``: carry a durable run on
        from its log); the run does not depend on any reader.

        ``owner`` (an API key's fingerprint) counts against ``max_live_per_owner``; both caps
        raise :class:`OverCapacity` before anything starts. Unless ``background``, a run that
        nobody reads for ``abandon_after_s`` (from its start, or since its last reader left) is
        cancelled with ``done(cancelled, reason="abandoned")``.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs")
        if self.max_live is not None and len(self._live) >= self.max_live:
            raise OverCapacity(
                f"the server is generating {len(self._live)} runs, its limit; retry shortly", self.retry_after_s
            )
        if self.max_live_per_owner is not None and self._live_by_owner.get(owner, 0) >= self.max_live_per_owner:
            raise OverCapacity(
                f"this API key has {self.max_live_per_owner} runs generating, its limit; retry when one ends",
                self.retry_after_s,
            )
        admit = getattr(provider, "admit", None)
        if admit is not None:
            admit()  # a provider with a bounded queue (the batched embedded model) says when it is full
        stream_id = options.stream_id or uuid.uuid4().hex
        options = msgspec.structs.replace(options, stream_id=stream_id, log=self.log)
        handle = start_stream(provider, request, observers=observers, options=options)
        run = Run(stream_id, handle, background=background, now=asyncio.get_running_loop().time(), owner=owner)
        self._ensure_watchdog()
        self._runs[stream_id] = run
        self._live[stream_id] = owner
        self._live_by_owner[owner] = self._live_by_owner.get(owner, 0) + 1
        handle._task.add_done_callback(lambda _: self._on_finished(stream_id))
        self._evict()
        logger.info(
            "run %s started: %s",
            stream_id,
            type(provider).__name__,
            extra={"stream_id": stream_id, "provider": type(provider).__name__, "owner": owner},
        )
        return run

    @contextlib.contextmanager
    def reader(self, stream_id: str) -> Iterator[None]:
        """Count a reader (an SSE connection, a WebSocket subscription) of ``stream_id`` while it reads."""
        self._readers[stream_id] = self._readers.get(stream_id, 0) + 1
        self._ensure_watchdog()  # also on a node that only reads: it announces its readers
        run = self._runs.get(stream_id)
        if run is not None:
            run.unread_since = None
        try:
            yield
        finally:
            left = self._readers[stream_id] - 1
            if left:
                self._readers[stream_id] = left
            else:
                del self._readers[stream_id]
                run = self._runs.get(stream_id)
                if run is not None:
                    run.unread_since = asyncio.get_running_loop().time()

    def readers(self, stream_id: str) -> int:
        """How many readers (:meth:`reader`) ``stream_id`` has here now."""
        return self._readers.get(stream_id, 0)

    def _ensure_watchdog(self) -> None:
        if self.abandon_after_s is not None and self._watchdog is None and self.accepting:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.create_task(self._watch(self.abandon_after_s), name="tokenwire-abandoned-runs")

    async def _watch(self, grace_s: float) -> None:
        """Every third of the grace period: tell the log which streams are read here (a node
        producing a run sees readers on other nodes), and cancel the runs read nowhere for
        ``grace_s``. Owned by :class:`Runs`; ended by :meth:`shutdown`."""
        loop = asyncio.get_running_loop()
        period = grace_s / 3
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(period)
            if task is not self._watchdog:
                return  # shut down (a cancel lost in a log call still stops it here)
            try:
                if self._readers:
                    await self.log.announce_readers(list(self._readers), ttl_s=3 * period)
                now = loop.time()
                due = [
                    run
                    for sid in self._live
                    if (run := self._runs.get(sid)) is not None
                    and not run.background
                    and run.unread_since is not None
                    and now - run.unread_since >= grace_s
                ]
                if not due:
                    continue
                elsewhere = await self.log.read_elsewhere([run.stream_id for run in due])
            except Exception:  # a log hiccup must not end the watchdog
                logger.warning("abandoned-run check failed; retrying", exc_info=True)
                continue
            for run in due:
                if run.stream_id in elsewhere:
                    run.unread_since = now  # read on another node: not abandoned
                else:
                    logger.info(
                        "run %s had no reader for %.0f s: cancelled as abandoned",
                        run.stream_id,
                        grace_s,
                        extra={"stream_id": run.stream_id},
                    )
                    run.handle.cancel("abandoned")

    def _on_finished(self, stream_id: str) -> None:
        run = self._runs.get(stream_id)
        if run is not None and run.handle.suspended is not None:
            run.handle._task.exception()  # RunSuspended: retrieved, it is how a suspended run ends here
            logger.info(
                "run %s suspended: %s",
                stream_id,
                run.handle.suspended.reason,
                extra={"stream_id": stream_id, "outcome": "suspended"},
            )
            self._runs.pop(stream_id, None)  # it lives in the log now; whichever node resumes it has it
            run = None
        if run is not None:
            if self.on_finish is not None:
                self.on_finish(run)
            terminal = run.handle.terminal
            if terminal is None:
                outcome, end = "unknown", None
            else:
                outcome = terminal.finish_reason if isinstance(terminal, Done) else terminal.code
                end = terminal.ts
            stats = run.handle.metrics.stats(end)
            logger.info(
                "run %s ended: %s after %.2f s, %d tokens",
                stream_id,
                outcome,
                stats.duration_s,
                stats.output_tokens,
                extra={
                    "stream_id": stream_id,
                    "outcome": outcome,
                    "duration_s": round(stats.duration_s, 4),
                    "ttft_s": None if stats.ttft_s is None else round(stats.ttft_s, 4),
                    "output_tokens": stats.output_tokens,
                    "events": run.handle.seq + 1,
                },
            )
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
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            if watchdog.get_loop() is asyncio.get_running_loop():
                watchdog.cancel()  # (a cancel lost in a log call: it stops at its next turn, waited for a while)
                await asyncio.wait([watchdog], timeout=self.abandon_after_s or 0.0)
            else:  # shut down from another thread's loop (a test driving a served app)
                watchdog.get_loop().call_soon_threadsafe(watchdog.cancel)
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
