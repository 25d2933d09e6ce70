"""The event log's interface: what a producer appends through (:class:`StreamWriter`), what
readers read from (:class:`EventLog`), and a cursor's position and overflow policy
(:class:`Cursor`). The backends are :mod:`tokenwire.log.memory` and :mod:`tokenwire.log.redis`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal, NamedTuple, Protocol, TypeAlias

import msgspec

from tokenwire.errors import LogUnavailable, ObserverOverflow, SeqEvicted, StreamNotFound
from tokenwire.events import Data, Event, ToolCallDelta
from tokenwire.log.coalescing import MERGEABLE, coalesced, delta_text, mergeable
from tokenwire.log.ownership import LocalOwnership, RunOwnership

__all__ = [
    "OVERFLOWS",
    "Cursor",
    "CursorSource",
    "EventLog",
    "InlineReader",
    "Overflow",
    "StreamInfo",
    "StreamWriter",
    "replayed",
]


Overflow: TypeAlias = Literal["block", "drop_oldest", "coalesce", "disconnect"]
"""What a cursor does when it lags more than its ``maxsize`` events behind the producer:

- ``block`` — the producer waits until the cursor catches up (natural backpressure);
- ``drop_oldest`` — the cursor skips ahead to the newest ``maxsize`` events (counted in ``dropped``);
- ``coalesce`` — consecutive text / reasoning / same-call tool-argument deltas of the backlog are
  merged into one event carrying the newest ``seq``; nothing else is dropped;
- ``disconnect`` — the cursor is detached; reading it raises :class:`ObserverOverflow` and the
  reader can resume from the log at the last seq it saw.
"""
OVERFLOWS: tuple[Overflow, ...] = ("block", "drop_oldest", "coalesce", "disconnect")

InlineReader: TypeAlias = Callable[[Event], "Awaitable[None] | None"]
"""Called by :meth:`StreamWriter.append` with each event; an awaitable result holds the producer."""


class StreamInfo(NamedTuple):
    """Where a stream's log stands."""

    first_seq: int
    """The oldest retained seq."""
    next_seq: int
    """The seq the next event will get (the number of events appended so far)."""
    finished: bool
    """True once the terminal event was appended."""


class StreamWriter(abc.ABC):
    """Write side of one stream's log; only the stream's producer holds it.

    Besides appending, the writer is where in-process consumers attach: the inline reader (the
    engine's observer dispatcher) and :class:`Cursor` readers with an overflow policy. They live
    in the producer's process, so only they can hold the producer (backpressure); readers in
    other processes use :meth:`EventLog.read`.
    """

    stream_id: str

    @abc.abstractmethod
    def append(self, event: Event) -> Awaitable[None] | None:
        """Append the next event (the caller guarantees seq order) and hand it to the inline
        reader. Returns an awaitable when the producer must wait (an async observer, a
        ``block`` cursor that is full); await it before appending the next event."""

    @abc.abstractmethod
    def cursor(self, from_seq: int = 0, *, maxsize: int = 1024, overflow: Overflow = "block") -> Cursor:
        """Attach an in-process reader at ``from_seq`` with an overflow policy."""

    inline: InlineReader | None = None
    """The inline reader (set once, before the first append)."""

    token: str = ""
    """The producer's lease token (durable runs: see :mod:`tokenwire.log.ownership`)."""

    async def suspend(self, until: float) -> bool:
        """Stop producing without a terminal event: the run is suspended in the log (its lease
        ``SUSPENDED``, due for a supervisor at wall time ``until``) and any node may resume it.
        Call after :meth:`flush`; nothing may be appended after. False when this producer no
        longer held the run (another node took it over)."""
        raise NotImplementedError(f"{type(self).__name__} cannot suspend a run")

    @property
    def failure(self) -> LogUnavailable | None:
        """Why this writer gave up writing (a networked log unreachable past its bounds), or None."""
        return None

    async def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for memory
        """Wait until appended events are durable and visible to every reader."""


class EventLog(abc.ABC):
    """Per-stream append-only event logs with explicit retention."""

    shared: bool = False
    """Whether other processes read and write this log (Redis): runs can move between them."""

    append_observer: Callable[[float, int], None] | None = None
    """Called after each write of a batch to a networked log's storage with (seconds, events):
    the server's log-latency metric. The memory log never calls it (its appends are in-process)."""

    @abc.abstractmethod
    def open(self, stream_id: str, *, at: int = 0, token: str | None = None) -> StreamWriter:
        """Create the log of a new stream and return its writer; with ``at`` > 0, continue the
        stream at that seq instead (a durable run taken over or resumed: its producer claimed
        the lease with ``token`` through :attr:`ownership`). A ``token`` marks the run durable:
        supervisors may take it over if its producer stops (see :mod:`tokenwire.log.ownership`)."""

    @property
    def ownership(self) -> RunOwnership:
        """Leases, run definitions and due runs (in this process unless the backend shares them)."""
        own = self.__dict__.get("_ownership")
        if own is None:
            own = self.__dict__["_ownership"] = LocalOwnership()
        return own

    @abc.abstractmethod
    def batches(
        self,
        stream_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        idle_s: float | None = None,
        max_lag: int | None = None,
        live_from: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Iterate the stream's events from ``from_seq`` on, as many as are ready at a time.

        With ``follow`` the iterator waits for new events until the terminal one; without it, it
        stops at the current end. With ``idle_s`` it yields an empty batch after that many idle
        seconds (servers send keep-alives then). With ``max_lag``, a reader that is more than
        that many events behind a live stream when it comes back for more (it took too long with
        the last batch) gets :class:`ObserverOverflow`: disconnect it; it resumes from its last
        seq. Raises :class:`StreamNotFound` for an unknown stream and :class:`SeqEvicted` when
        ``from_seq`` (or a later seq, for a reader that fell behind) is no longer retained.

        Transient ``data`` events are left out of what the reader replays: those appended before
        it opened, or before seq ``live_from`` when given (``0``: the reader that started the
        run, and so was there from its start).
        """

    def read(self, stream_id: str, from_seq: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
        """The events of :meth:`batches`, one at a time (same errors, raised by this call where
        the backend can tell at once)."""
        return _flatten(self.batches(stream_id, from_seq, follow=follow))

    async def first(self, stream_id: str) -> Event | None:
        """The stream's first event (its ``start``), or None when the log does not have it (an
        unknown stream, or one whose start retention dropped)."""
        try:
            async with contextlib.aclosing(self.read(stream_id, 0, follow=False)) as events:  # type: ignore[type-var]
                async for event in events:
                    return event
        except (StreamNotFound, SeqEvicted):
            pass
        return None

    @abc.abstractmethod
    async def info(self, stream_id: str) -> StreamInfo:
        """Where the stream's log stands; raises :class:`StreamNotFound` for an unknown stream."""

    async def forward_cancel(self, stream_id: str, reason: str) -> bool:
        """Ask the node producing ``stream_id`` to cancel it; False when no other node can hear
        it (the memory log lives in one process, where the run is local or gone)."""
        return False

    def listen_cancels(self, handler: Callable[[str, str], None]) -> None:  # noqa: B027 - optional hook
        """Call ``handler(stream_id, reason)`` for cancels other nodes forward (a no-op for memory)."""

    async def announce_readers(self, stream_ids: Sequence[str], ttl_s: float) -> None:  # noqa: B027 - optional hook
        """Tell the other nodes that ``stream_ids`` have readers here for the next ``ttl_s``
        (a no-op for memory: there are no other nodes)."""

    async def read_elsewhere(self, stream_ids: Sequence[str]) -> set[str]:
        """Which of ``stream_ids`` another node announced readers for (none for memory)."""
        return set()

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        """True the first time ``key`` is claimed within ``ttl_s`` (a ticket's nonce), False after:
        on every node that shares this log (here: this process; Redis: every node)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        claimed: dict[str, float] = self.__dict__.setdefault("_claimed", {})
        if len(claimed) > 1024:  # expired claims go; a live one is kept until it expires
            for k in [k for k, until in claimed.items() if until <= now]:
                del claimed[k]
        if claimed.get(key, 0.0) > now:
            return False
        claimed[key] = now + ttl_s
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; a no-op for memory."""


async def _flatten(batches: AsyncIterator[Sequence[Event]]) -> AsyncIterator[Event]:
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:  # closed early: the backend's reader now, not when the collector finds it
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


def _transient(event: Event, before: int) -> bool:
    return event.__class__ is Data and event.transient and event.seq < before


def replayed(batch: Sequence[Event], before: int | None = None) -> Sequence[Event]:
    """``batch`` as a replay: without the transient ``data`` events (only those below seq
    ``before``, when given: what came after the reader did is live). The batch itself when it
    has none; every backend's reader applies it to what it reads from history."""
    limit = batch[-1].seq + 1 if before is None else before
    if not any(_transient(e, limit) for e in batch):
        return batch
    return [e for e in batch if not _transient(e, limit)]


# -- cursors ---------------------------------------------------------------------------------------


class CursorSource(Protocol):
    """What a :class:`Cursor` reads: a writer's in-process window of the stream (the memory ring)."""

    @property
    def next_seq(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def detach(self, cursor: Cursor) -> None: ...

    async def wait(self, seq: int) -> None: ...

    def since(self, seq: int) -> Sequence[Event]: ...


class Cursor:
    """An in-process reader of one stream's log at its own position, with an overflow policy.

    Read it with :meth:`next_batch` (:class:`~tokenwire.EventIterator` wraps one as an async
    iterator); :meth:`close` detaches it at once (a producer waiting for it is released). Made by
    :meth:`StreamWriter.cursor`.
    """

    __slots__ = (
        "_carry",
        "_parts",
        "_ring",
        "_run",
        "_space",
        "closed",
        "dropped",
        "maxsize",
        "overflow",
        "overflowed",
        "seq",
    )

    def __init__(self, ring: CursorSource, from_seq: int, maxsize: int, overflow: Overflow):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}; got {overflow!r}")
        self._ring = ring
        self.seq = from_seq
        """The next seq this cursor reads."""
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        """Events skipped (``drop_oldest``) or merged away (``coalesce``)."""
        self.overflowed = False
        """True once a ``disconnect`` cursor fell too far behind."""
        self.closed = False
        self._space: asyncio.Future[None] | None = None
        self._carry: list[Event] = []  # coalesce: what it took from the log before eviction, merged
        self._run: Event | None = None  # the delta its carried run of mergeable deltas ends with
        self._parts: list[str] = []  # that run's text, joined once when read (linear, not quadratic)

    @property
    def lag(self) -> int:
        """Events appended that this cursor has not read."""
        return self._ring.next_seq - self.seq

    def close(self) -> None:
        """Detach: the producer never waits for this cursor again; reading it ends."""
        if not self.closed:
            self.closed = True
            self._ring.detach(self)
            self._release()

    def _release(self) -> None:
        s = self._space
        if s is not None:
            self._space = None
            if not s.done():
                s.set_result(None)

    async def _wait_for_space(self) -> None:
        """The producer's side of ``block``: wait until this cursor is within ``maxsize``."""
        while not self.closed and self._ring.next_seq - self.seq > self.maxsize:
            if self._space is None or self._space.done():
                self._space = asyncio.get_running_loop().create_future()
            await self._space

    def absorb(self, event: Event) -> None:
        """``coalesce``: take ``event`` (the oldest unread, about to leave the log's retention)
        into this cursor's own backlog, merged with the deltas before it where it can be (their
        text is kept as parts and joined once, when read). What cannot be merged (tool calls,
        steps …) is kept; more than ``maxsize`` of those and the cursor overflows
        (:class:`ObserverOverflow`): never a silent loss."""
        run = self._run
        if run is not None and mergeable(run, event):
            self._parts.append(delta_text(event))
            self._run = event
            self.dropped += 1
        else:
            self._close_run()
            if event.__class__ in MERGEABLE:
                self._run, self._parts = event, [delta_text(event)]
            else:
                self._carry.append(event)
        self.seq = event.seq + 1
        if len(self._carry) > self.maxsize:
            self.overflowed = True

    def _close_run(self) -> None:
        run = self._run
        if run is not None:
            field = "args_delta" if run.__class__ is ToolCallDelta else "text"
            self._carry.append(msgspec.structs.replace(run, **{field: "".join(self._parts)}))
            self._run, self._parts = None, []

    async def next_batch(self) -> Sequence[Event]:
        """The next events (at least one), after the policy; empty once the stream ended and
        every event was read (or the cursor was closed)."""
        ring = self._ring
        while True:
            if self.overflowed:
                raise ObserverOverflow(
                    f"subscriber fell more than {self.maxsize} events behind and was disconnected "
                    f"(overflow={self.overflow!r}); resume from the event log at the last seq it saw"
                )
            if self.closed:
                return []
            if self.seq < ring.next_seq or self._carry or self._run is not None:
                break
            if ring.finished:
                return []
            await ring.wait(self.seq)
        self._close_run()
        carry, self._carry = self._carry, []
        lag = ring.next_seq - self.seq + len(carry)
        if carry:  # coalesce: what was taken before eviction, then what the log still holds
            batch: Sequence[Event] = [*carry, *ring.since(self.seq)]
            self.seq = ring.next_seq
            self._release()
            merged_batch, merged = coalesced(batch)
            self.dropped += merged
            return merged_batch
        if self.overflow == "drop_oldest" and lag > self.maxsize:
            self.dropped += lag - self.maxsize
            self.seq = ring.next_seq - self.maxsize
        try:
            batch = ring.since(self.seq)
        except SeqEvicted as exc:  # only a cursor larger than the log's retention can get here
            self.dropped += exc.first_available - self.seq
            self.seq = exc.first_available
            batch = ring.since(self.seq)
        self.seq = ring.next_seq
        self._release()
        if self.overflow == "coalesce" and lag > self.maxsize:
            merged_batch, merged = coalesced(batch)
            self.dropped += merged
            return merged_batch
        return batch


# -- the memory backend ------------------------------------------------------------------------------
