"""Who produces a run: its lease, its stored definition, and the runs due for another producer.

A durable run (:mod:`tokenwire.server.durable`) is more than its events: its definition (the
request, the tools by name, the options) is stored beside them, and exactly one producer at a
time holds its **lease** (a token of its own). The lease is the fence: a producer appends only
while the log says the lease is its own, so a producer that was presumed dead and comes back
cannot write past the one that took over.

A lease is in one of three states:

- held: ``token`` (a producer's), refreshed while it runs; lapsed when it stops refreshing;
- ``SUSPENDED``: nobody produces the run and nobody needs to (it waits for an approval); any
  node may claim it to resume it;
- absent: the producer stopped without a terminal (SIGKILL, partition) or the run ended.

:meth:`RunOwnership.due` names the runs a supervisor should look at: a lapsed producer, or a
suspended run whose deadline passed (an approval timeout, a node that handed its runs over on
shutdown with deadline 0). :meth:`RunOwnership.claim` takes one of them atomically: of several
nodes racing, one wins.

:class:`LocalOwnership` is the in-process implementation (the memory log's: one process, so no
lease can lapse; suspension and claims work the same). The Redis log implements it with scripts.

>>> import asyncio
>>> async def demo():
...     o = LocalOwnership()
...     o.hold("s1", "tokA")
...     held = await o.claim("s1", "tokB")              # held by A: not claimable
...     await o.suspend("s1", "tokA", until=0.0)        # A hands it over, due at once
...     due = await o.due(now=1.0)
...     won, lost = await o.claim("s1", "tokB"), await o.claim("s1", "tokC")
...     return held, due, won, lost
>>> asyncio.run(demo())
(False, ['s1'], True, False)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib

__all__ = ["MAX_INDEXED", "SUSPENDED", "LocalOwnership", "RunOwnership"]

SUSPENDED = "suspended"
"""The lease value of a run nobody produces on purpose (waiting for an approval, handed over)."""
MAX_INDEXED = 10_000
"""How many of an owner's newest runs :meth:`RunOwnership.runs_of` can give."""


class RunOwnership(abc.ABC):
    """The run-ownership half of an event log (see the module docstring)."""

    @abc.abstractmethod
    async def save_run(self, stream_id: str, record: bytes) -> None:
        """Store a run's definition (kept while the run is, and with its events after its end)."""

    @abc.abstractmethod
    async def load_run(self, stream_id: str) -> bytes | None:
        """A run's stored definition, or None (not a durable run, or expired)."""

    @abc.abstractmethod
    async def claim(self, stream_id: str, token: str, *, suspended_only: bool = False) -> bool:
        """Become the run's producer with ``token``: True when its lease was absent (lapsed) or
        ``SUSPENDED``; ``suspended_only``: only a suspended run (an approval resumes it, a
        lapsed one is the supervisors'). Atomic: of several claimers one wins."""

    @abc.abstractmethod
    async def suspend(self, stream_id: str, token: str, until: float) -> bool:
        """The producer holding ``token`` stops without ending the run: the lease becomes
        ``SUSPENDED``, due for a supervisor at wall time ``until``. False if ``token`` no
        longer held it."""

    @abc.abstractmethod
    async def release(self, stream_id: str, token: str) -> None:
        """The run ended (or its producer gave up): drop the lease if ``token`` holds it."""

    @abc.abstractmethod
    async def due(self, now: float, limit: int = 32) -> list[str]:
        """Runs a supervisor should look at now: lease lapsed, or suspended past its deadline."""

    @abc.abstractmethod
    async def forget(self, stream_id: str) -> None:
        """Stop listing ``stream_id`` as due (it ended, or it is not a durable run)."""

    @abc.abstractmethod
    async def lease_state(self, stream_id: str) -> str | None:
        """The lease as it stands: a producer's token, ``SUSPENDED``, or None (absent)."""

    @abc.abstractmethod
    async def present(self, node: str, now: float, within_s: float, *, kind: str = "") -> int:
        """Say that ``node`` (a supervisor) is up at ``now``; how many *other* nodes of the same
        ``kind`` (the same providers and tools: they can carry each other's runs on) said so
        within ``within_s``: the ones a node shutting down can hand its runs to."""

    async def absent(self, node: str, *, kind: str = "") -> None:  # noqa: B027 - optional hook
        """``node`` is going away: it is nobody's peer any more."""

    @abc.abstractmethod
    async def name_run(self, owner: str, name: str, value: bytes) -> None:
        """Remember, on every node, what a client's own ``name`` stands for (an AI SDK chat id, an
        AG-UI thread's run: which run, and where its current response starts), for ``owner``
        only; kept as long as a run's definition."""

    @abc.abstractmethod
    async def named_run(self, owner: str, name: str) -> bytes | None:
        """What :meth:`name_run` remembered for ``owner``'s ``name``, or None."""

    @abc.abstractmethod
    async def index_run(self, owner: str, stream_id: str) -> None:
        """List a new run under its owner (an API key's fingerprint): :meth:`runs_of` gives it to
        every reader of the owner's runs, on every node. The newest ``MAX_INDEXED`` are kept."""

    @abc.abstractmethod
    async def latest_runs(self, owner: str, count: int) -> tuple[int, list[str]]:
        """The position the owner's next run will get, and its newest ``count`` runs (oldest first)."""

    @abc.abstractmethod
    async def runs_of(self, owner: str, from_pos: int, *, wait_s: float) -> list[tuple[int, str]]:
        """The owner's runs listed at position ``from_pos`` or later, oldest first, as
        ``(position, stream_id)`` (positions count from 0, one per run); when there are none,
        waits up to ``wait_s`` for one (then ``[]``). Positions trimmed away are skipped."""


class LocalOwnership(RunOwnership):
    """:class:`RunOwnership` in this process (the memory log's)."""

    MAX_NAMES = 4096
    """The names kept (the oldest go first)."""

    def __init__(self) -> None:
        self._records: dict[str, bytes] = {}
        self._names: dict[tuple[str, str], bytes] = {}
        self._leases: dict[str, str] = {}
        self._due: dict[str, float] = {}  # suspended runs -> when a supervisor should resume them
        self._owned: dict[str, _Owned] = {}  # an owner's runs, for runs_of

    def hold(self, stream_id: str, token: str) -> None:
        """A new producer takes a new run's lease (in-process leases do not lapse)."""
        self._leases[stream_id] = token

    def ended(self, stream_id: str) -> None:
        """The run's terminal was appended: nobody produces it any more."""
        self._leases.pop(stream_id, None)
        self._due.pop(stream_id, None)

    def drop(self, stream_id: str) -> None:
        """The run left the log's retention: forget everything about it."""
        self.ended(stream_id)
        self._records.pop(stream_id, None)

    async def save_run(self, stream_id: str, record: bytes) -> None:
        self._records[stream_id] = record

    async def load_run(self, stream_id: str) -> bytes | None:
        return self._records.get(stream_id)

    async def name_run(self, owner: str, name: str, value: bytes) -> None:
        self._names.pop((owner, name), None)
        self._names[owner, name] = value
        while len(self._names) > self.MAX_NAMES:
            del self._names[next(iter(self._names))]

    async def named_run(self, owner: str, name: str) -> bytes | None:
        return self._names.get((owner, name))

    async def claim(self, stream_id: str, token: str, *, suspended_only: bool = False) -> bool:
        lease = self._leases.get(stream_id)
        if lease == SUSPENDED or (lease is None and not suspended_only and stream_id in self._records):
            self._leases[stream_id] = token
            self._due.pop(stream_id, None)
            return True
        return False

    async def suspend(self, stream_id: str, token: str, until: float) -> bool:
        if self._leases.get(stream_id) != token:
            return False
        self._leases[stream_id] = SUSPENDED
        self._due[stream_id] = until
        return True

    async def release(self, stream_id: str, token: str) -> None:
        if self._leases.get(stream_id) == token:
            del self._leases[stream_id]
        self._due.pop(stream_id, None)

    async def due(self, now: float, limit: int = 32) -> list[str]:
        return [sid for sid, until in self._due.items() if until <= now][:limit]

    async def forget(self, stream_id: str) -> None:
        self._due.pop(stream_id, None)
        self._records.pop(stream_id, None)

    async def lease_state(self, stream_id: str) -> str | None:
        return self._leases.get(stream_id)

    async def present(self, node: str, now: float, within_s: float, *, kind: str = "") -> int:
        return 0  # one process: nobody to hand runs to

    async def index_run(self, owner: str, stream_id: str) -> None:
        index = self._owned.get(owner)
        if index is None:
            index = self._owned[owner] = _Owned()
        index.runs.append(stream_id)
        if len(index.runs) > MAX_INDEXED:
            index.first += len(index.runs) - MAX_INDEXED
            del index.runs[: len(index.runs) - MAX_INDEXED]
        index.wake.set()
        index.wake = asyncio.Event()  # the next wait is for the next run

    async def latest_runs(self, owner: str, count: int) -> tuple[int, list[str]]:
        index = self._owned.get(owner)
        if index is None:
            return 0, []
        return index.first + len(index.runs), index.runs[max(0, len(index.runs) - count) :]

    async def runs_of(self, owner: str, from_pos: int, *, wait_s: float) -> list[tuple[int, str]]:
        index = self._owned.get(owner)
        if index is None:
            index = self._owned[owner] = _Owned()
        if index.first + len(index.runs) <= from_pos:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(index.wake.wait(), wait_s)
        first, runs = index.first, index.runs
        return [(pos, runs[pos - first]) for pos in range(max(from_pos, first), first + len(runs))]


class _Owned:
    """One owner's runs in this process, the newest ``MAX_INDEXED``."""

    __slots__ = ("first", "runs", "wake")

    def __init__(self) -> None:
        self.first = 0  # the position of runs[0]
        self.runs: list[str] = []
        self.wake = asyncio.Event()  # set when a run is listed
