"""Limits the stream engine enforces on every run, whatever the provider does.

>>> import tokenwire
>>> tokenwire.Limits(max_duration_s=30, stall_timeout_s=5, max_output_tokens=512).stall_timeout_s
5

What each limit ends a stream with (DESIGN.md):

============================  =================================================================
``max_duration_s``            ``error`` source ``limit``, code ``timeout``
``first_token_timeout_s``     ``error`` source ``limit``, code ``first_token_timeout``
``stall_timeout_s``           ``error`` source ``limit``, code ``stalled`` (no event from the
                              provider for this long; before the first token only when
                              ``first_token_timeout_s`` is unset)
``max_output_tokens``         ``done`` with finish_reason ``length``; also passed to the provider
                              as the request's ``max_tokens`` when that is unset
============================  =================================================================
"""

from __future__ import annotations

import msgspec

__all__ = ["Limits"]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on one model run. ``None`` means unbounded."""

    max_duration_s: float | None = None
    """Wall-clock bound on the whole run."""
    first_token_timeout_s: float | None = None
    """Bound on the wait for the first text, reasoning or tool-call event."""
    stall_timeout_s: float | None = None
    """Bound on the pause between two provider events."""
    max_output_tokens: int | None = None
    """Cap on output deltas (one delta is one token for every built-in provider)."""
    stall_gap_s: float = 1.0
    """A pause between deltas at least this long counts as a stall in ``done.stats.stalls``."""

    def __post_init__(self) -> None:
        for name in ("max_duration_s", "first_token_timeout_s", "stall_timeout_s", "max_output_tokens", "stall_gap_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be > 0 (or None for unbounded), got {value!r}")
