"""The lifecycle core: one stream's rules, without I/O.

:class:`Lifecycle` owns everything that decides *what* a stream is, none of *how* it runs: it
stamps provider parts with ``stream_id``/``seq``/``ts``, enforces the one-terminal rule, counts the
token cap, decides when a limit (max duration, first token, stall) ends the stream, and measures
the stats. It is driven by a clock passed in (``now`` is float seconds since the epoch, the same
clock as ``ts``); it imports neither asyncio nor time, so every rule is tested with generated
clocks (tests/test_lifecycle.py). The engine (:mod:`tokenwire.engine`) is a thin async shell
around it: it reads the provider, appends what :meth:`Lifecycle.feed` returns to the log, and
calls :meth:`Lifecycle.tick` when :attr:`Lifecycle.deadline` passes.

>>> from tokenwire.core.limits import Limits
>>> core = Lifecycle("s1", model="m", limits=Limits(stall_timeout_s=5, max_output_tokens=2), now=100.0)
>>> core.start().seq, core.delivered(100.0)
(0, False)
>>> core.feed("Hel", 101.0).text, core.delivered(101.0)
('Hel', True)
>>> core.deadline          # the stall window after the last delivery
106.0
>>> core.feed("lo", 102.0).seq, core.delivered(102.0), core.stop.reason  # the cap is reached
(2, False, 'max_output_tokens=2 reached')
>>> done = core.finish(103.0)
>>> done.type, done.finish_reason, done.seq, done.stats.output_tokens
('done', 'length', 3, 2)

Which layer a terminal blames (``error.source``) is decided here, once:

- ``stalled`` (source ``limit``) means the *provider* was idle for ``stall_timeout_s``: the stall
  clock runs only while the engine waits for the provider. Delivery to observers, a full
  ``block`` cursor or a paused iterator pause it (:meth:`feed` stops it, :meth:`delivered`
  restarts it), so a slow consumer is never reported as a stalled provider; ``max_duration_s``
  is what bounds a consumer that never returns.
- ``first_token_timeout`` likewise counts from the moment the provider is first asked (after
  ``start`` was delivered).
- ``timeout`` (``max_duration_s``) is wall-clock from the start, whoever is slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tokenwire.core.limits import Limits
from tokenwire.core.provider import Control
from tokenwire.core.response import ResponseBuilder
from tokenwire.errors import InvalidStateDelta, ProviderError
from tokenwire.events import (
    Done,
    Error,
    ErrorSource,
    Event,
    EventBase,
    Parent,
    ReasoningDelta,
    Start,
    Stats,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from tokenwire.telemetry.metrics import Metrics

__all__ = ["Lifecycle"]

_NO_LIMITS = Limits()
_UNBOUNDED = 1 << 62


class Lifecycle:
    """The sans-I/O state machine of one stream (see the module docstring).

    Call order: :meth:`start` once (not for a run carried on from its log: ``prior`` holds the
    events it made so far, and seqs continue after them); then for each provider part :meth:`feed` (append what it
    returns) and :meth:`delivered` once the event has been handed to every reader; :meth:`tick`
    whenever :attr:`deadline` has passed; :meth:`cancel` / :meth:`fail` / :meth:`provider_failed`
    at any time; :meth:`finish` once at the end for the terminal event. After :attr:`stop` is set
    the engine stops reading the provider and calls :meth:`finish`.
    """

    __slots__ = (
        "_duration_deadline",
        "_first_deadline",
        "_idle_since",
        "_last_ts",
        "_max_tokens",
        "_output",
        "_saw_first",
        "_stall",
        "_start_ts",
        "builder",
        "limits",
        "meta",
        "metrics",
        "parent",
        "request_id",
        "seq",
        "stop",
        "stream_id",
        "terminal",
        "tracks_delivery",
    )

    def __init__(
        self,
        stream_id: str,
        *,
        model: str,
        now: float,
        limits: Limits = _NO_LIMITS,
        request_id: str = "",
        meta: dict[str, Any] | None = None,
        parent: Parent | None = None,
        prior: Sequence[Event] = (),
    ):
        self.stream_id = stream_id
        self.request_id = request_id
        self.meta = meta or {}
        self.parent = parent
        self.limits = limits
        self.builder = ResponseBuilder(stream_id, model)
        self._start_ts = now
        self.metrics = Metrics(stall_gap_s=limits.stall_gap_s)
        """The stream's statistics (``done.stats`` comes from it)."""
        self.metrics.start(now)
        self._output = self.metrics.output
        self.seq = 0
        """The last seq handed out (0 once :meth:`start` was called)."""
        for event in prior:  # a run carried on from its log: what it made so far, and its seq
            if event.__class__ is TextDelta:
                self.builder.text_parts.append(event.text)
            else:
                self.builder.add(event)
            self.seq = event.seq
        self.stop: Done | Error | None = None
        """How the stream will end, once decided (a limit, a cancel, the provider's own end)."""
        self.terminal: Done | Error | None = None
        """The terminal event, once :meth:`finish` made it."""
        self._last_ts = now
        self._max_tokens = limits.max_output_tokens or _UNBOUNDED
        self._stall = limits.stall_timeout_s
        self._duration_deadline = None if limits.max_duration_s is None else now + limits.max_duration_s
        self._first_deadline: float | None = None
        self._idle_since: float | None = None  # None: the engine is not waiting for the provider
        self._saw_first = False
        self.tracks_delivery = (
            limits.stall_timeout_s is not None
            or limits.first_token_timeout_s is not None
            or limits.max_output_tokens is not None
        )
        """Whether :meth:`delivered` matters after each event (a stall, first-token or token
        limit is set); without those limits the engine may skip it (and its clock read)."""

    # -- events --------------------------------------------------------------------------------

    def start(self) -> Start:
        """The ``start`` event (seq 0, ``ts`` = the construction time)."""
        return Start(
            model=self.builder.model,
            request_id=self.request_id,
            meta=self.meta,
            parent=self.parent,
            stream_id=self.stream_id,
            seq=0,
            ts=self._start_ts,
        )

    def _now(self, now: float) -> float:
        if now < self._last_ts:
            return self._last_ts  # ts never goes backwards, even if the wall clock does
        self._last_ts = now
        return now

    def feed(self, part: object, now: float) -> Event | None:
        """Stamp one provider part; None when it is not an event to append.

        A ``str`` is a text delta. The provider's own ``Done``/``Error`` is recorded as
        :attr:`stop` (None is returned); so is anything that is not a part (``error``
        ``bad_provider_output``). Once :attr:`stop` is set every part is ignored.
        """
        if self.stop is not None:
            return None
        self._idle_since = None  # delivery starts: the provider is not being waited for
        if now < self._last_ts:
            now = self._last_ts  # ts never goes backwards, even if the wall clock does
        else:
            self._last_ts = now
        if part.__class__ is str:  # the hot path: one token of text, timing inlined
            self.seq = seq = self.seq + 1
            self.builder.text_parts.append(part)
            self._output(now, 1)
            return TextDelta(part, stream_id=self.stream_id, seq=seq, ts=now)
        if isinstance(part, Done | Error):
            self.stop = part
            return None
        if isinstance(part, Control):
            return None  # the engine's business (stop stays None)
        if not isinstance(part, EventBase) or isinstance(part, Start):
            self.stop = Error(
                code="bad_provider_output",
                message=(
                    f"the provider yielded {part!r:.200}; expected str, an event without envelope, Done or "
                    "Error (never Start: the engine emits it)"
                ),
                source="provider",
            )
            return None
        self.seq = seq = self.seq + 1
        event: Event = msgspec.structs.replace(part, stream_id=self.stream_id, seq=seq, ts=now)  # type: ignore[assignment]
        cls = event.__class__
        if cls is ReasoningDelta or cls is ToolCallDelta:
            self.metrics.output(now, 1)
        elif cls is ToolCallStart:
            self.metrics.output(now, 0)  # the call's start is output (ttft, gaps) but not a token
        try:
            self.builder.add(event)
        except InvalidStateDelta as exc:  # before any reader has it: the seq is not used
            self.seq -= 1
            self.stop = Error(code="bad_provider_output", message=str(exc), source="provider")
            return None
        return event

    def stats(self, end_ts: float) -> Stats:
        """The stream's timing from ``start`` to ``end_ts``."""
        usage = self.builder.usage
        if usage is not None:
            self.metrics.usage = (usage.input_tokens, usage.output_tokens)
        return self.metrics.stats(end_ts)

    def delivered(self, now: float) -> bool:
        """Every reader has the last event (or ``start``): the engine waits for the provider again.

        Restarts the stall clock; the first call (after ``start``) also starts the first-token
        clock. The token cap is applied here, after the delta that reached it was delivered (so
        an observer failing on that delta still decides the end in strict mode). Returns True
        when :attr:`deadline` may now be *earlier* than before (the first token switched from the
        first-token limit to the stall limit): re-arm the timer. A later deadline needs nothing: a
        timer that fires early finds nothing to do and re-arms.
        """
        self._idle_since = now
        if self.metrics.tokens >= self._max_tokens and self.stop is None:
            self.stop = Done(finish_reason="length", reason=f"max_output_tokens={self._max_tokens} reached")
        if self._saw_first:
            return False
        if self.metrics.first_ts is not None:
            self._saw_first = True
            return True
        if self._first_deadline is None and self.limits.first_token_timeout_s is not None:
            self._first_deadline = now + self.limits.first_token_timeout_s
        return False

    # -- limits --------------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """When :meth:`tick` must next be called (None: no limit can fire before the next event)."""
        if self.stop is not None:
            return None
        best = self._duration_deadline
        waiting_first = self.metrics.first_ts is None and self.limits.first_token_timeout_s is not None
        if waiting_first and self._first_deadline is not None and (best is None or self._first_deadline < best):
            best = self._first_deadline
        if self._stall is not None and self._idle_since is not None and not waiting_first:
            stall_at = self._idle_since + self._stall
            if best is None or stall_at < best:
                best = stall_at
        return best

    def tick(self, now: float) -> bool:
        """Apply the limits at ``now``; True when the stream must stop (:attr:`stop` is set)."""
        if self.stop is not None:
            return True
        limits = self.limits
        if self._duration_deadline is not None and now >= self._duration_deadline:
            self.stop = Error(
                code="timeout",
                message=f"stream exceeded max_duration_s={limits.max_duration_s}",
                retryable=True,
                source="limit",
            )
        elif self.metrics.first_ts is None and limits.first_token_timeout_s is not None:
            if self._first_deadline is not None and now >= self._first_deadline:
                self.stop = Error(
                    code="first_token_timeout",
                    message=f"no token within first_token_timeout_s={limits.first_token_timeout_s}",
                    retryable=True,
                    source="limit",
                )
        elif self._stall is not None and self._idle_since is not None:
            idle = now - self._idle_since
            if now >= self._idle_since + self._stall:  # the same sum as ``deadline``: no off-by-an-ulp re-arm
                self.stop = Error(
                    code="stalled",
                    message=f"no event from the provider for {idle:.3f} s (stall_timeout_s={self._stall})",
                    retryable=True,
                    source="limit",
                )
        return self.stop is not None

    # -- ending --------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> bool:
        """Decide to end with ``done(cancelled)``; False when the end was already decided."""
        if self.stop is not None or self.terminal is not None:
            return False
        self.stop = Done(finish_reason="cancelled", reason=reason)
        return True

    def fail(self, code: str, message: str, *, source: ErrorSource = "internal", retryable: bool = False) -> bool:
        """Decide to end with an ``error``; False when the end was already decided."""
        if self.stop is not None or self.terminal is not None:
            return False
        self.stop = Error(code=code, message=message, source=source, retryable=retryable)
        return True

    def provider_failed(self, exc: BaseException) -> None:
        """The provider raised: end with ``error`` (source ``provider``) unless the end was decided."""
        if isinstance(exc, ProviderError):
            self.fail(exc.code, str(exc), source="provider", retryable=exc.retryable)
        else:
            self.fail("provider_error", f"{type(exc).__name__}: {exc}", source="provider")

    def finish(self, now: float) -> Done | Error:
        """The one terminal event (the same object on every later call)."""
        if self.terminal is not None:
            return self.terminal
        now = self._now(now)
        b = self.builder
        stop = self.stop
        seq = self.seq + 1
        terminal: Done | Error
        if isinstance(stop, Error):
            terminal = msgspec.structs.replace(stop, stream_id=self.stream_id, seq=seq, ts=now)
        else:
            usage = stop.usage if stop is not None and stop.usage is not None else b.usage
            if usage is not None:
                b.usage = usage
            if stop is not None:
                reason = stop.finish_reason
            elif b.tool_calls:
                reason = "tool_calls"
            else:
                reason = "stop"
            terminal = Done(
                finish_reason=reason,
                usage=usage,
                stats=self.stats(now),
                reason=stop.reason if stop is not None else None,
                stream_id=self.stream_id,
                seq=seq,
                ts=now,
            )
        self.seq = seq
        b.stats = terminal.stats if isinstance(terminal, Done) else self.stats(now)
        self.terminal = b.terminal = terminal
        if self.stop is None:
            self.stop = terminal  # so every later feed() is ignored
        return terminal
