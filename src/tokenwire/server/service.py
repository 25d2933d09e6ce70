"""The run service: the one place every transport goes through.

Native HTTP and SSE, the OpenAI / AI SDK / AG-UI endpoints, WebSocket, gRPC and speech are thin
adapters over one :class:`RunService`: they turn their request into a call here and the typed
error it may raise (all from :mod:`tokenwire.errors`) into their own status, with one table each.
The service authenticates, admits (parse → ceilings and defaults → capacity → the log took the
start), starts, reads, cancels, takes client-side tool results and issues and checks stream
tokens; it knows nothing of HTTP, WebSocket frames or gRPC.

>>> import asyncio
>>> from tokenwire.providers import Scripted
>>> from tokenwire.server import RunBody, RunService
>>> async def main():
...     service = RunService(providers={"scripted": Scripted(["Hi"])}, api_keys=["k"])
...     owner = service.authenticate("k")
...     run = await service.start(RunBody(prompt="hello"), owner=owner)
...     tokens = service.issue(run.stream_id)
...     await service.authorize(run.stream_id, tokens.read_token, "read")
...     return (await run.handle).text
>>> asyncio.run(main())
'Hi'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request
from tokenwire.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidRequest,
    LogUnavailable,
    MalformedBody,
    OverCapacity,
    SeqEvicted,
    Unauthorized,
)
from tokenwire.events import Error, Event
from tokenwire.log import EventLog, StreamInfo, configured_log_url, log_from_url
from tokenwire.server.admission import check_model, check_tools, max_tokens, request_for, run_limits
from tokenwire.server.durable import Durable, RunRecord
from tokenwire.server.fanout import Fanout
from tokenwire.server.providers import Providers
from tokenwire.server.runs import Run, Runs
from tokenwire.server.schema import RunBody, ServerConfig
from tokenwire.server.snapshots import Snapshots
from tokenwire.server.tokens import StreamTokens, TicketClaims, Tickets, bearer, check_api_key, is_api_key, new_secret
from tokenwire.telemetry.otel import OTel
from tokenwire.telemetry.server import ServerStats
from tokenwire.tools import Toolset
from tokenwire.wire import FrameCache

__all__ = ["RunService", "RunTokens", "bearer"]

T = TypeVar("T")

logger = logging.getLogger("tokenwire")

_UNPARSEABLE = (msgspec.ValidationError, msgspec.DecodeError, ValueError, KeyError, TypeError, UnicodeError)
"""What a protocol's parser raises for a body it cannot understand: one tuple for every transport."""
UNWRITTEN = "the run could not be written to the event log"


class RunTokens(NamedTuple):
    """The two stream tokens of a run: ``token`` reads and cancels, ``read_token`` only reads."""

    token: str
    read_token: str


class RunService:
    """Runs for every transport (see the module docstring).

    Arguments are :func:`tokenwire.server.create_app`'s. ``config`` holds the limits and timings;
    ``log`` defaults to the log ``TOKENWIRE_LOG`` names (:func:`tokenwire.log.log_from_url`), else
    bounded memory.
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider | Callable[[], Provider]],
        default_provider: str | None = None,
        tools: Toolset | Iterable[Any] | None = None,
        api_keys: Iterable[str] | None = None,
        secret: bytes | None = None,
        config: ServerConfig | None = None,
        default_limits: Limits | None = None,
        log: EventLog | None = None,
        otel: OTel | None = None,
    ):
        cfg = config or ServerConfig()
        if api_keys is not None:
            cfg = msgspec.structs.replace(cfg, api_keys=list(api_keys))
        self.config = cfg
        self.providers = Providers(providers, default_provider)  # the model backends by name, made on first use
        self.tools = tools if isinstance(tools, Toolset) else Toolset(tools or ())
        key = secret or new_secret()
        self.tokens = StreamTokens(key)
        self.tickets = Tickets(key)
        self.default_limits = default_limits
        self._owns_log = log is None
        url = cfg.log_url or configured_log_url()
        self.log = log if log is not None else log_from_url(url, max_events=cfg.max_events, max_streams=cfg.max_runs)
        self.frames = FrameCache()  # encoded frames per (stream, wire format), shared by every reader
        self.fanout = Fanout(self)  # a stream's live edge written once for its many SSE readers
        self.snapshots = Snapshots(self.log)  # late joiners' snapshots (?snapshot=1), folded once
        self.otel = otel
        """OpenTelemetry for every run; None: off."""
        self.stats = ServerStats()
        """What the server counts about itself (``GET /metrics`` exports it)."""
        self.runs = Runs(
            self.log,
            max_runs=cfg.max_runs,
            max_live=cfg.max_live_runs,
            max_live_per_owner=cfg.max_live_runs_per_key,
            abandon_after_s=cfg.abandon_after_s,
            retry_after_s=cfg.retry_after_s,
            on_finish=self._run_finished,
        )
        self.log.append_observer = self.stats.log_wrote
        self.durable = Durable(self)
        """Durable runs: takeover, suspend / resume, hand-over (:mod:`tokenwire.server.durable`)."""
        self.grpc: Any = None
        """The gRPC service (:class:`tokenwire.grpc.server.GrpcServer`) when ``grpc_port`` is set."""
        self.connections = 0
        """Streaming connections open now (SSE readers, WebSockets, gRPC calls)."""
        self.connections_by_owner: dict[str, int] = {}

    # -- identity and connections ------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> str:
        """The caller's owner id (a fingerprint of its key; "" without auth), or Unauthorized."""
        if self.config.api_keys is None:
            return ""
        check_api_key(api_key, self.config.api_keys)
        assert api_key is not None
        return hashlib.sha256(api_key.encode()).hexdigest()[:16]

    def over_capacity(self, owner: str | None = None) -> OverCapacity | None:
        """Why one more streaming connection (of ``owner``) would be refused, or None."""
        cfg = self.config
        if self.connections >= cfg.max_connections:
            return OverCapacity(
                f"the server has {self.connections} streaming connections open, its limit", cfg.retry_after_s
            )
        if owner is not None and self.connections_by_owner.get(owner, 0) >= cfg.max_connections_per_key:
            return OverCapacity(
                f"this API key has {cfg.max_connections_per_key} connections open, its limit", cfg.retry_after_s
            )
        return None

    @contextlib.contextmanager
    def connection(self, transport: str, owner: str | None = None, *, admit: bool = True) -> Iterator[None]:
        """Hold one of the server's streaming-connection slots while the block runs, or raise
        :class:`OverCapacity` (``admit=False``: the caller already checked :meth:`over_capacity`).
        Counted per transport in the server's stats."""
        refused = self.over_capacity(owner) if admit else None
        if refused is not None:
            raise refused
        self.connections += 1
        self.stats.opened(transport)
        if owner is not None:
            self.connections_by_owner[owner] = self.connections_by_owner.get(owner, 0) + 1
        try:
            yield
        finally:
            self.connections -= 1
            self.stats.closed(transport)
            if owner is not None:
                left = self.connections_by_owner[owner] - 1
                if left:
                    self.connections_by_owner[owner] = left
                else:
                    del self.connections_by_owner[owner]

    # -- admission ---------------------------------------------------------------------------------

    def check_size(self, size: int) -> None:
        """:class:`BodyTooLarge` for a body of ``size`` bytes over ``max_body_bytes``."""
        if size > self.config.max_body_bytes:
            raise BodyTooLarge(f"the body is {size} bytes or more; the limit is {self.config.max_body_bytes}")

    def parse(self, raw: bytes | object, parser: Callable[[Any], T], what: str = "request") -> T:
        """``parser(raw)``, with whatever it raises for a body it cannot understand (malformed
        JSON, a mistyped field, a missing key, JSON nested too deeply) as :class:`InvalidRequest`
        ("invalid {what}: …")."""
        if isinstance(raw, bytes | bytearray):
            self.check_size(len(raw))
            if not raw.strip():
                raise MalformedBody(f"invalid {what}: the body is empty; send a JSON object")
        try:
            return parser(raw)
        except InvalidRequest:
            raise
        except RecursionError:
            raise InvalidRequest(f"invalid {what}: JSON nested too deeply") from None
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid {what}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise MalformedBody(f"invalid {what}: not JSON ({exc})") from None
        except _UNPARSEABLE as exc:
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise InvalidRequest(f"invalid {what}: {detail}") from None

    async def start(
        self,
        run: RunBody | Request,
        *,
        owner: str = "",
        headers: Mapping[str, str] | None = None,
        provider: str | None = None,
        background: bool | None = None,
        tools: Sequence[str] = (),
    ) -> Run:
        """Admit and start a run; it is readable on every node when this returns.

        ``run`` is the native API's body, or a request a foreign protocol parsed (its tools are
        then the caller's: the run ends with their calls; ``tools`` names server tools it may
        call too). The server's ceilings and defaults apply to both; ``provider`` (a name)
        defaults to the body's, else the server's default.
        Raises :class:`InvalidRequest`, :class:`OverCapacity`, :class:`ShuttingDown`, or
        :class:`LogUnavailable` when the log could not take the run's start.
        """
        if isinstance(run, RunBody):
            request, body = request_for(run, self.tools), run
        else:
            request, body = run, RunBody(prompt="", tools=list(tools))
        cfg = self.config
        if (n := len(request.messages)) > cfg.max_messages:
            raise InvalidRequest(f"{n} messages is more than this server accepts ({cfg.max_messages})")
        request = msgspec.structs.replace(request, max_tokens=max_tokens(cfg, request.max_tokens))
        limits = run_limits(cfg, body.limits or self.default_limits)
        name = provider or body.provider or self.providers.default
        model = self.providers.get(name)
        check_model(body.model, name, model, self.providers)
        check_tools(name, model, body.tools, self.tools, waits=bool(body.client_tools))
        granted = [t for t in self.tools if t.name in body.tools]
        self.log.listen_cancels(self._remote_cancel)  # this node produces runs: hear cancels for them
        self.durable.supervise()
        record = RunRecord(
            owner=owner,
            provider=name,
            request=request,
            tools=[t.name for t in granted],
            max_steps=body.max_steps,
            approval_timeout_s=cfg.approval_timeout_s,
            limits=limits,
            meta=body.meta,
            background=body.background if background is None else background,
            caller_waits=bool(body.client_tools),
        )
        stream_id, token = uuid.uuid4().hex, self.durable.token()
        try:
            await self.durable.save(stream_id, record)
        except LogUnavailable as exc:
            raise LogUnavailable(f"{UNWRITTEN}: {exc}", cfg.retry_after_s) from None
        started = self.runs.start(
            self.durable.agent(record) if granted or body.client_tools else model,
            request,
            self.durable.options(stream_id, record, token),
            observers=self.telemetry(model, request, headers or {}),
            owner=owner,
            background=record.background,
        )
        await started.handle.ready()  # readable on every node before anyone hears of it
        terminal = started.handle.terminal
        if isinstance(terminal, Error) and terminal.code == "log_unavailable":
            raise LogUnavailable(f"{UNWRITTEN}: {terminal.message}", cfg.retry_after_s)
        await self.durable.listed(stream_id, owner)
        return started

    def telemetry(self, provider: Provider, request: Request, headers: Mapping[str, str]) -> list[object]:
        """The observers a run gets for telemetry: none, or OpenTelemetry's with the incoming
        request's trace context (``traceparent``) as the run's parent."""
        if self.otel is None:
            return []
        return [self.otel.observer(provider, request, parent=self.otel.extract(headers))]

    def _run_finished(self, run: Run) -> None:
        terminal = run.handle.terminal
        if terminal is not None:
            self.stats.run_finished(run.handle.metrics, terminal)

    # -- tokens and reading ------------------------------------------------------------------------

    def issue(self, stream_id: str) -> RunTokens:
        """A run's stream tokens, valid for ``token_ttl_s``."""
        now, ttl = time.time(), self.config.token_ttl_s
        return RunTokens(
            self.tokens.issue(stream_id, {"read", "cancel"}, now=now, ttl_s=ttl),
            self.tokens.issue(stream_id, {"read"}, now=now, ttl_s=ttl),
        )

    async def authorize(self, stream_id: str, token: str | None, perm: str) -> StreamInfo:
        """The stream's position in the log, if ``token`` grants ``perm`` on it: else
        :class:`StreamNotFound`, :class:`~tokenwire.errors.Unauthorized` or
        :class:`~tokenwire.errors.Forbidden`."""
        info = await self.log.info(stream_id)
        self.tokens.verify(token or None, stream_id, perm, now=time.time())
        return info

    def ticket(self, credential: str | None) -> str:
        """A single-use ticket for a URL (valid ``ticket_ttl_s``), for what ``credential`` grants:
        an API key → a connection acting for its owner (``WS /v1/ws?ticket=``); a stream token →
        reading its stream (``GET /v1/streams/{id}/events?ticket=``, ``…/speech?ticket=``; a
        ticket never grants ``cancel``). :class:`~tokenwire.errors.Unauthorized` otherwise."""
        now, ttl, keys = time.time(), self.config.ticket_ttl_s, self.config.api_keys
        if credential:
            if is_api_key(credential, keys):
                return self.tickets.issue(now=now, ttl_s=ttl, owner=self.authenticate(credential))
            if keys is None and "." not in credential:
                return self.tickets.issue(now=now, ttl_s=ttl, owner="")
            claims = self.tokens.claims(credential, now=now)
            return self.tickets.issue(now=now, ttl_s=ttl, sid=claims.sid, perm=claims.perm & {"read"})
        if keys is None:
            return self.tickets.issue(now=now, ttl_s=ttl, owner="")
        raise Unauthorized("POST /v1/tickets needs 'Authorization: Bearer <API key or stream token>'")

    async def redeem(self, ticket: str) -> TicketClaims:
        """A ticket's claims, once: a second use (on any node of a shared log) is :class:`Unauthorized`."""
        claims = self.tickets.verify(ticket, now=time.time())
        if not await self.log.claim_once(f"ticket:{claims.n}", self.config.ticket_ttl_s + 1):
            raise Unauthorized(
                "this ticket was already used; tickets are single-use: ask for a new one (POST /v1/tickets)"
            )
        return claims

    async def authorize_ticket(self, stream_id: str, ticket: str, perm: str) -> StreamInfo:
        """:meth:`authorize` with a ticket instead of a token (it is used up)."""
        info = await self.log.info(stream_id)
        claims = await self.redeem(ticket)
        if claims.sid != stream_id:
            what = "a connection" if claims.sid is None else f"stream {claims.sid!r}"
            raise Forbidden(f"this ticket is for {what}, not stream {stream_id!r}")
        if perm not in claims.perm:
            raise Forbidden(f"this ticket does not allow {perm!r} on stream {stream_id!r}")
        return info

    async def open(self, stream_id: str, token: str | None, from_seq: int) -> StreamInfo:
        """:meth:`authorize` to read from ``from_seq``: also :class:`SeqEvicted` when the log no
        longer holds it (resume from the oldest retained seq the error names)."""
        info = await self.authorize(stream_id, token, "read")
        if from_seq < info.first_seq:
            raise SeqEvicted(stream_id, from_seq, info.first_seq)
        return info

    @contextlib.contextmanager
    def reading(
        self,
        stream_id: str,
        from_seq: int,
        *,
        idle_s: float | None = None,
        lagging: bool = True,
        live_from: int | None = None,
    ) -> Iterator[AsyncIterator[Sequence[Event]]]:
        """The stream's events from ``from_seq`` as batches (an empty one after ``idle_s`` of
        silence), counted as a reader of the run while the block runs. ``lagging``: a reader
        ``max_lag_events`` behind a live producer gets :class:`~tokenwire.errors.ObserverOverflow`
        (it resumes). The log's own iterator: no layer between it and the reader per batch.
        ``live_from``: see :meth:`~tokenwire.log.EventLog.batches`."""
        max_lag = self.config.max_lag_events if lagging else None
        with self.runs.reader(stream_id):
            yield self.log.batches(stream_id, from_seq, idle_s=idle_s, max_lag=max_lag, live_from=live_from)

    async def history(self, stream_id: str, before: int | None = None) -> list[Event]:
        """The stream's events from 0 up to (not including) seq ``before``, or all it has now."""
        earlier: list[Event] = []
        async with contextlib.aclosing(self.log.read(stream_id, 0, follow=False)) as events:  # type: ignore[type-var]
            async for event in events:
                if before is not None and event.seq >= before:
                    break
                earlier.append(event)
        return earlier

    # -- control -----------------------------------------------------------------------------------

    async def cancel(self, stream_id: str, reason: str) -> bool:
        """Cancel a run here, on whichever node produces it, or suspended in the log; False when
        nobody has it."""
        run = self.runs.get(stream_id)
        if run is not None and not run.handle.done():
            run.handle.cancel(reason)  # a no-op once it is ending: a suspending run is cancelled below
            if run.handle.suspended is None and not run.handle.done():
                return True
            await run.handle.settled()
        if await self.durable.cancel_suspended(stream_id, reason):
            return True
        return await self.log.forward_cancel(stream_id, reason)

    async def answer(
        self,
        stream_id: str,
        *,
        approvals: Mapping[str, bool] | None = None,
        results: Mapping[str, tuple[Any, bool]] | None = None,
        owner: str | None = None,
        token: str | None = None,
    ) -> int:
        """Answer what a suspended run waits for — approvals (call id -> approved), client-side
        calls' results (call id -> (result, is_error)) — and resume it here (see
        :meth:`tokenwire.server.durable.Durable.answer`; returns the seq it goes on from), for the
        run's ``token`` (the one that can cancel it) or its ``owner`` (an API key's); without API
        keys only the token will do."""
        if token is not None:
            await self.authorize(stream_id, token, "cancel")
        elif owner is None or self.config.api_keys is None:
            raise Unauthorized("an answer needs the run's token (the one that can cancel it), or its owner's API key")
        return await self.durable.answer(stream_id, owner if token is None else None, approvals, results)

    async def approve(
        self, stream_id: str, call_id: str, approved: bool, *, owner: str | None = None, token: str | None = None
    ) -> None:
        """Answer one approval (:meth:`answer`)."""
        await self.answer(stream_id, approvals={call_id: approved}, owner=owner, token=token)

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking runs. With a shared log, live durable runs are handed to the other nodes
        (suspended, due at once); the rest get ``grace_s`` to finish, then end with
        ``error(shutdown)``. A log the service made itself is closed (its tasks and connections)."""
        self.runs.accepting = False
        await self.durable.aclose()
        if self.log.shared:
            handed = await self.durable.hand_over(grace_s)
            if handed:
                logger.info("handed %d live runs over to the other nodes", handed)
        await self.runs.shutdown(grace_s)
        if self._owns_log:
            await self.log.aclose()

    def _remote_cancel(self, stream_id: str, reason: str) -> None:
        """A cancel another node forwarded: end the run if this node produces it."""
        run = self.runs.get(stream_id)
        if run is not None:
            run.handle.cancel(reason)
