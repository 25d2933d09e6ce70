"""Durable runs: the log is the run's source of truth, so any node can carry a run on.

Every run the server starts stores its definition beside its events (:class:`RunRecord`: the
request, the tools by name, the options, the provider by the name this server knows it under, the
owner) and its producer holds a lease with a token of its own (:mod:`tokenwire.log.ownership`).
From those and the events folded (:func:`tokenwire.core.fold.fold`), a node with the same
providers and tools continues the run under the same ``stream_id``, ``seq`` carrying on:

- **takeover**: a producer stops refreshing its lease (SIGKILL, partition, hang): the
  supervisor of every node lists the run as due, exactly one claims it, and the run goes on
  there. The model turn that was cut off continues from its logged text (providers that can:
  ``continues_prefix``) or is asked again (a ``step`` ``turn`` with ``restarted``); a tool call
  whose result is in the log never runs again; one without a result runs again only if its tool
  is ``retry_safe``, else the model is told it was interrupted;
- **suspend / resume**: a call that needs an approval suspends the run (no task, no lease held,
  no memory: log entries only); :meth:`Durable.approve` (``POST /v1/streams/{id}/approvals``,
  the WebSocket / gRPC session's ``approve``) resumes it on whichever node it arrives; an
  approval that does not come within ``approval_timeout_s`` is a denial;
- **hand-over**: on shutdown a node with a shared log suspends its live runs due at once, and the
  other nodes' supervisors carry them on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import msgspec

from tokenwire.core.fold import fold
from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request
from tokenwire.engine import RunOptions
from tokenwire.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    OverCapacity,
    SeqEvicted,
    ShuttingDown,
    StreamNotFound,
)
from tokenwire.events import TERMINAL_TYPES, Error, Event
from tokenwire.log import EventLog
from tokenwire.server.providers import Providers
from tokenwire.server.runs import Run, Runs
from tokenwire.tools import Agent, ToolOptions, Toolset

__all__ = ["Durable", "DurableHost", "RunRecord"]

logger = logging.getLogger("tokenwire")


class _Ending:
    """A framework's run carried on only to be cancelled at once (it may have nothing to go on
    with from the log): it waits until the cancel ends it."""

    runs_own_tools = True

    def __init__(self, model: str):
        self.model = model
        self.provider = self

    async def stream(self, request: object) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""  # never reached: the generator's type


def own_tools(provider: object) -> bool:
    """Another framework's agent (``runs_own_tools``): its run cannot be carried on from the log."""
    return bool(getattr(provider, "runs_own_tools", False))


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a run is, as the log keeps it (everything but its events)."""

    owner: str
    """The API key's fingerprint that started it (who may approve its calls)."""
    provider: str
    """The provider's name on this server (every node must configure the same)."""
    request: Request
    tools: list[str] = []
    """The server's tools the run may call, by name."""
    max_steps: int = 8
    approval_timeout_s: float = 3600.0
    limits: Limits | None = None
    meta: dict[str, Any] = {}
    background: bool = False
    request_id: str = ""
    caller_waits: bool = False
    """A call to one of the caller's own tools suspends the run until the caller posts its result."""
    version: int = 1


class DurableHost(Protocol):
    """What :class:`Durable` needs of its server (:class:`~tokenwire.server.service.RunService`)."""

    log: EventLog
    runs: Runs
    providers: Providers
    tools: Toolset

    async def history(self, stream_id: str, before: int | None = None) -> list[Event]: ...

    def telemetry(self, provider: Provider, request: Request, headers: Mapping[str, str]) -> list[object]: ...


class Durable:
    """The durable-run operations of one server (see the module docstring); ``RunService.durable``."""

    def __init__(self, service: DurableHost, *, poll_s: float | None = None):
        self.service = service
        lease_s = float(getattr(service.log, "lease_s", 2.0))
        self.poll_s = poll_s if poll_s is not None else lease_s / 4
        """How often the supervisor looks for runs due for a new producer."""
        self._supervisor: asyncio.Task[None] | None = None
        self.node = uuid.uuid4().hex
        """This node's id among the supervisors sharing the log."""
        names = ",".join(sorted([*service.providers, "|", *service.tools.names]))
        self.kind = hashlib.sha256(names.encode()).hexdigest()[:12]
        """Nodes of one kind have the same providers and tools: they can carry each other's runs on."""

    @staticmethod
    def token() -> str:
        """A new producer token."""
        return uuid.uuid4().hex

    async def save(self, stream_id: str, record: RunRecord) -> None:
        await self.service.log.ownership.save_run(stream_id, msgspec.json.encode(record))

    async def listed(self, stream_id: str, owner: str) -> None:
        """List a started run under its owner, for the readers of the owner's runs (on every
        node). A log that cannot is logged: the run goes on, those readers miss it."""
        try:
            await self.service.log.ownership.index_run(owner, stream_id)
        except LogUnavailable as exc:
            logger.warning("run %s not listed under its owner: %s", stream_id, exc, extra={"stream_id": stream_id})

    async def owns(self, stream_id: str, owner: str) -> bool:
        """Whether ``owner`` started run ``stream_id`` (False once its definition expired)."""
        record = await self.load(stream_id)
        return record is not None and record.owner == owner

    async def load(self, stream_id: str) -> RunRecord | None:
        data = await self.service.log.ownership.load_run(stream_id)
        return None if data is None else msgspec.json.decode(data, type=RunRecord)

    def options(self, stream_id: str, record: RunRecord, token: str, prior: Any = ()) -> RunOptions:
        return RunOptions(
            stream_id=stream_id,
            limits=record.limits,
            request_id=record.request_id or None,
            meta=record.meta,
            lease_token=token,
            prior=prior,
        )

    def agent(self, record: RunRecord) -> Agent:
        service = self.service
        tools = [t for t in service.tools if t.name in record.tools]
        options = ToolOptions(
            max_steps=record.max_steps,
            durable=True,
            approval_timeout_s=record.approval_timeout_s,
            client_timeout_s=record.approval_timeout_s,
            caller_waits=record.caller_waits,
        )
        return Agent(service.providers.get(record.provider), tools, options)

    # -- carrying a run on ------------------------------------------------------------------------

    async def carry_on(
        self,
        stream_id: str,
        token: str,
        *,
        decisions: dict[str, tuple[bool, str]] | None = None,
        results: dict[str, tuple[Any, bool]] | None = None,
        cancel: str | None = None,
        background: bool | None = None,
    ) -> Run | None:
        """Continue a run whose lease ``token`` holds (claimed: taken over, or resumed) from its
        log. None when there is nothing to continue (it ended, or it is not a durable run)."""
        service = self.service
        record = await self.load(stream_id)
        try:
            events = await service.history(stream_id)
        except StreamNotFound:
            await service.log.ownership.release(stream_id, token)
            await service.log.ownership.forget(stream_id)
            return None
        except SeqEvicted:
            events = []
        if events and events[-1].__class__ in TERMINAL_TYPES:
            await service.log.ownership.release(stream_id, token)
            await service.log.ownership.forget(stream_id)
            return None
        if record is None or not events or events[0].seq != 0:
            await self._end(stream_id, token, "the run's definition or the start of its log is gone")
            return None
        framework = service.providers.get(record.provider) if record.provider in service.providers else None
        resume = getattr(framework, "resume", None) if own_tools(framework) else None
        if own_tools(framework) and resume is None:
            await self._end(stream_id, token, "another framework's agent runs it: only its own node could go on")
            return None
        state = fold(events)
        now = time.time()
        answers, given = dict(decisions or {}), dict(results or {})
        for cid in state.pending_approvals():  # an approval not given in time is a denial
            expires = state.approvals[cid].get("expires")
            if cid not in answers and isinstance(expires, int | float) and expires <= now:
                answers[cid] = (False, "timeout")
        for cid in state.pending_results():  # a client's result not given in time is an error result
            expires = state.waits[cid].get("expires")
            if cid not in given and isinstance(expires, int | float) and expires <= now:
                given[cid] = (f"the client gave no result for the call to {state.waits[cid]['tool']!r} in time", True)
        try:  # another framework's agent that can go on from the log (its resume), or tokenwire's loop
            if cancel is not None and own_tools(framework):
                agent: Any = _Ending(record.provider)  # nothing to go on with: only to end it, cancelled
            elif resume is not None:
                agent = resume(state, answers)
            else:
                agent = self.agent(record).resume(state, answers, given)
        except InvalidRequest as exc:  # a provider this node does not have
            await self._end(stream_id, token, f"this node cannot carry the run on: {exc}")
            return None
        try:
            run = service.runs.start(
                agent,
                record.request,
                self.options(stream_id, record, token, events),
                observers=service.telemetry(agent.provider, record.request, {}),
                owner=record.owner,
                background=record.background if background is None else background,
            )
        except (OverCapacity, ShuttingDown):
            await service.log.ownership.suspend(stream_id, token, now + 1.0)  # another node, or later
            raise
        if cancel is not None:
            run.handle.cancel(cancel)
        return run

    async def _end(self, stream_id: str, token: str, why: str) -> None:
        """End a run that cannot be carried on with ``error(not_resumable)``, written with the
        claimed ``token`` (a run nobody can continue must not wait for ever)."""
        log = self.service.log
        info = await log.info(stream_id)
        if not info.finished:
            writer = log.open(stream_id, at=info.next_seq, token=token)
            terminal = Error(
                code="not_resumable",
                message=why,
                source="internal",
                stream_id=stream_id,
                seq=info.next_seq,
                ts=time.time(),
            )
            pending = writer.append(terminal)
            if pending is not None:
                await pending
            await writer.flush()
        await log.ownership.forget(stream_id)
        logger.warning("run %s ended: %s", stream_id, why, extra={"stream_id": stream_id})

    async def answer(
        self,
        stream_id: str,
        owner: str | None,
        approvals: Mapping[str, bool] | None = None,
        results: Mapping[str, tuple[Any, bool]] | None = None,
        *,
        wait_s: float = 5.0,
    ) -> int:
        """Answer what a suspended run waits for — approvals (call id -> approved) and
        client-side calls' results (call id -> (result, is_error)) — all at once, and resume the
        run here (the run's ``owner`` only; None: the caller proved it may, with the run's token).
        Returns the seq the resumed run writes first (where the answer's readers read on from).

        :class:`StreamNotFound` for an unknown run or a call that waits for no such answer,
        :class:`Forbidden` for another API key, :class:`Conflict` for a call already answered, or
        whose answer expired (a denial or an error result, even before the supervisor carries the
        run on), or a run that did not suspend within ``wait_s`` (it is still finishing its turn)."""
        approvals, results = dict(approvals or {}), dict(results or {})
        record = await self.load(stream_id)
        if record is None:
            raise StreamNotFound(f"no durable run {stream_id!r} (unknown, or expired)")
        if owner is not None and record.owner != owner:
            raise Forbidden(f"run {stream_id!r} belongs to another API key")
        if not approvals and not results:
            raise InvalidRequest("an answer answers at least one call")
        token = self.token()
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            state = fold(await self.service.history(stream_id))
            asked = [(cid, state.approvals.get(cid), "approval") for cid in approvals]
            asked += [(cid, state.waits.get(cid), "client result") for cid in results]
            for call_id, waiting, what in asked:
                if waiting is None:
                    raise StreamNotFound(f"run {stream_id!r} has no call {call_id!r} waiting for its {what}")
                if waiting.get("approved") is not None or waiting.get("answered") or state.finished:
                    raise Conflict(f"the call {call_id!r} of run {stream_id!r} was already answered")
                expires = waiting.get("expires")
                if isinstance(expires, int | float) and expires <= time.time():  # whoever claims first
                    counts = "denied" if what == "approval" else "an error result"
                    raise Conflict(
                        f"the {what} of call {call_id!r} of run {stream_id!r} expired: it counts as {counts}"
                    )
            if await self.service.log.ownership.claim(stream_id, token, suspended_only=True):
                break
            if asyncio.get_running_loop().time() >= deadline:
                raise Conflict(f"run {stream_id!r} is not waiting for an answer now (it is still running); retry")
            await asyncio.sleep(0.05)
        at = (await self.service.log.info(stream_id)).next_seq  # claimed: nobody else writes it now
        decisions = {call_id: (approved, "api") for call_id, approved in approvals.items()}
        await self.carry_on(stream_id, token, decisions=decisions, results=results, background=True)
        return at

    async def cancel_suspended(self, stream_id: str, reason: str) -> bool:
        """End a suspended run with ``done(cancelled)``; False when it is not suspended."""
        token = self.token()
        if not await self.service.log.ownership.claim(stream_id, token, suspended_only=True):
            return False
        return await self.carry_on(stream_id, token, cancel=reason, background=True) is not None

    # -- the supervisor -----------------------------------------------------------------------------

    def supervise(self) -> None:
        """Start (once) the task that carries on the runs due for a new producer; owned here,
        ended by :meth:`aclose`."""
        if self._supervisor is None:
            loop = asyncio.get_running_loop()
            self._supervisor = loop.create_task(self._supervise(), name="tokenwire-supervisor")

    async def _supervise(self) -> None:
        ownership = self.service.log.ownership
        task = asyncio.current_task()
        assert task is not None
        # aclose() lets go of it first, and a cancel (asyncio.run's at a loop's end, with no
        # aclose) stays counted: either stops it, also when a Redis call swallowed the cancel.
        while task is self._supervisor and not task.cancelling():
            if self.service.runs.accepting:
                try:
                    await ownership.present(self.node, time.time(), 4 * self.poll_s, kind=self.kind)
                    for stream_id in await ownership.due(time.time()):
                        token = self.token()
                        if not await ownership.claim(stream_id, token):
                            continue  # another node was first, or its producer is back
                        logger.info("run %s carried on by this node", stream_id, extra={"stream_id": stream_id})
                        with contextlib.suppress(OverCapacity, ShuttingDown):
                            await self.carry_on(stream_id, token)
                except Exception:  # a log hiccup must not end the supervisor
                    if task is not self._supervisor or task.cancelling():
                        return  # closed meanwhile (its cancel may have come back as this error)
                    logger.warning("run supervisor: check failed; retrying", exc_info=True)
            await asyncio.sleep(self.poll_s)

    async def hand_over(self, grace_s: float) -> int:
        """Shutdown with a shared log: suspend every live durable run, due at once, for the other
        nodes to carry on (when another node's supervisor was seen lately); returns how many were
        handed over."""
        runs = self.service.runs.running
        handles = [
            r.handle for r in runs if r.handle.options.lease_token is not None and not own_tools(r.handle.provider)
        ]
        ownership = self.service.log.ownership
        peers = await ownership.present(self.node, time.time(), 4 * self.poll_s, kind=self.kind) if handles else 0
        with contextlib.suppress(Exception):
            await ownership.absent(self.node, kind=self.kind)
        if not peers:
            return 0  # no node like this one is up to carry them on: they end as before (error(shutdown))
        for handle in handles:
            handle.suspend("handed over: its node is shutting down", until=0.0)
        if handles:
            await asyncio.wait([asyncio.ensure_future(h.settled()) for h in handles], timeout=grace_s)
        return sum(1 for h in handles if h.suspended is not None)

    async def aclose(self) -> None:
        """Stop the supervisor. Python 3.11's ``asyncio.timeout`` and ``wait_for`` can drop a
        cancel (one that meets a timeout or a result, inside a Redis call): the supervisor also
        stops at its next turn because it is no longer :attr:`_supervisor`, and this waits at most
        ``poll_s`` and a little for it (a shutdown once waited for ever)."""
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=self.poll_s + 5.0)
