"""How one stream is run, as one frozen value: where it is logged, how it is named, how its
observers are treated, and its limits. :func:`tokenwire.generate` builds it from its keywords;
the engine takes it whole (no keyword list repeated from layer to layer).

>>> RunOptions(stream_id="s1").drain_timeout_s
5.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tokenwire.consumers.observers import ObserverErrorHook
from tokenwire.core.limits import Limits
from tokenwire.events import Event, Parent
from tokenwire.log import EventLog

__all__ = ["RunOptions"]


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything about a stream but its provider, request and observers (see :func:`tokenwire.generate`)."""

    limits: Limits | None = None
    """Time, stall and token bounds; None: none."""
    log: EventLog | None = None
    """Where events are appended; None: the process's default log."""
    stream_id: str | None = None
    """The stream's id; None: a new one."""
    request_id: str | None = None
    """The caller's correlation id (in ``start``); None: a new one."""
    meta: dict[str, Any] | None = None
    """Application metadata carried in ``start``."""
    strict: bool = False
    """An observer's failure ends the stream with an error instead of being isolated."""
    on_observer_error: ObserverErrorHook | None = None
    """Called with (observer, event, exception) when an observer fails."""
    drain_timeout_s: float = 5.0
    """How long the end of the stream waits for its observers, in total."""
    lease_token: str | None = None
    """A durable run's producer token (:mod:`tokenwire.log.ownership`): other nodes may take
    the run over if this producer stops, and it may suspend. None: an ordinary stream."""
    parent: Parent | None = None
    """A child run's parent (named in its ``start``); None: a root run. Set by
    :func:`tokenwire.generate` when a tool of a running agent starts the run."""
    prior: Sequence[Event] = ()
    """Carry on a durable run from its log: every event it has so far (from ``start``). The
    stream continues at the next seq, with no second ``start``; empty: a new stream."""

    def __post_init__(self) -> None:
        if self.drain_timeout_s <= 0:
            raise ValueError(f"drain_timeout_s must be > 0, got {self.drain_timeout_s!r}")
