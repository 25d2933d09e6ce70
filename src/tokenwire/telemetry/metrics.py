"""Stream statistics, computed once: time to first token, time per output chunk, stalls,
tokens/s, events and bytes per type, tool durations.

One implementation serves everything that reports on a stream: the engine's ``done.stats``
(through :class:`~tokenwire.core.lifecycle.Lifecycle`), the CLI's live footer, ``tokenwire stats``,
and the Prometheus and OpenTelemetry exporters. Sans-I/O: :class:`Metrics` is fed events and reads
their ``ts`` (as an observer), or is told the time directly (:meth:`Metrics.start`,
:meth:`Metrics.output`: the engine's clock).

>>> from tokenwire.events import Start, TextDelta, Done
>>> m = Metrics(stall_gap_s=1.0)
>>> for e in [Start(model="m", ts=0.0), TextDelta("a", ts=0.5), TextDelta("b", ts=0.6),
...           TextDelta("c", ts=2.0), Done(ts=2.5)]:
...     m(e)
>>> m.ttft_s, m.chunks, m.stalls, round(m.max_gap_s, 2), m.events["text.delta"], m.outcome
(0.5, 3, 1, 1.4, 3, 'stop')
>>> m.gap_histogram()[-2:]      # (upper bound, count): one gap under 0.15 s, one under 2.5 s
[(2.5, 1), (inf, 0)]
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from tokenwire.events import (
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    Stats,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    encode,
)

__all__ = [
    "FIRST_CHUNK_BUCKETS",
    "TIME_PER_CHUNK_BUCKETS",
    "TOKEN_BUCKETS",
    "Metrics",
]

# The OpenTelemetry GenAI semantic conventions' advised bucket boundaries (seconds; tokens).
TIME_PER_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
"""``gen_ai.client.operation.time_per_output_chunk``: the gap before each chunk after the first."""
FIRST_CHUNK_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""``gen_ai.client.operation.time_to_first_chunk`` and ``gen_ai.client.operation.duration``."""
TOKEN_BUCKETS = tuple(4**i for i in range(14))
"""``gen_ai.client.token.usage``: 1, 4, 16, … 67,108,864."""

_FIRST_BOUND = TIME_PER_CHUNK_BUCKETS[0]
_OUTPUT = {ReasoningDelta: 1, ToolCallDelta: 1, ToolCallStart: 0}  # text deltas are checked first


class Metrics:
    """The statistics of one stream (see the module docstring); an observer: ``metrics(event)``.

    Output chunks are text, reasoning and tool-argument deltas and tool-call starts (the start of
    a call is output the user sees, not a token). A gap is the time between two consecutive
    chunks; one of at least ``stall_gap_s`` is a stall. ``measure_bytes`` adds each event's JSON
    size to :attr:`bytes` (an encode per event; the server counts the bytes it writes instead).
    """

    __slots__ = (
        "_calls",
        "_fast_gap",
        "bytes",
        "chunks",
        "end_ts",
        "events",
        "first_ts",
        "gaps",
        "last_ts",
        "max_gap_s",
        "measure_bytes",
        "model",
        "outcome",
        "reported_output_tokens",
        "stall_gap_s",
        "stalls",
        "start_ts",
        "tokens",
        "tools",
        "usage",
    )

    def __init__(self, *, stall_gap_s: float = 1.0, measure_bytes: bool = False):
        self.stall_gap_s = stall_gap_s
        self.measure_bytes = measure_bytes
        self._fast_gap = _FIRST_BOUND if stall_gap_s > _FIRST_BOUND else -1.0
        self.start_ts: float | None = None
        self.first_ts: float | None = None
        """When the first output chunk came."""
        self.last_ts = 0.0
        """When the latest output chunk came."""
        self.end_ts: float | None = None
        """When the terminal event came."""
        self.chunks = 0
        self.tokens = 0
        """Output deltas counted as tokens (text, reasoning, tool arguments)."""
        self.max_gap_s = 0.0
        self.stalls = 0
        self.gaps = [0] * (len(TIME_PER_CHUNK_BUCKETS) + 1)
        """Gap counts per bucket of :data:`TIME_PER_CHUNK_BUCKETS` (the last: above it)."""
        self.events: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.tools: list[tuple[str, float, bool]] = []
        """Finished tool calls: (name, seconds from its ``tool_call`` to its result, is_error)."""
        self._calls: dict[str, tuple[str, float]] = {}
        self.model = ""
        self.usage: tuple[int, int] | None = None
        """(input, output) tokens the provider reported, if it did."""
        self.reported_output_tokens: int | None = None
        self.outcome: str | None = None
        """The finish reason, or the error code, once the stream ended."""

    # -- told the time (the engine's clock) ----------------------------------------------------------

    def start(self, now: float) -> None:
        self.start_ts = now

    def output(self, now: float, tokens: int = 1) -> None:
        """One output chunk at ``now`` (the hot path: a few comparisons and one bisect)."""
        if self.first_ts is None:
            self.first_ts = now
        else:
            gap = now - self.last_ts
            if gap > self.max_gap_s:
                self.max_gap_s = gap
            if gap <= self._fast_gap:  # the common case on a fast stream: no search, no stall
                self.gaps[0] += 1
            else:
                if gap >= self.stall_gap_s:
                    self.stalls += 1
                self.gaps[bisect_left(TIME_PER_CHUNK_BUCKETS, gap)] += 1
        self.last_ts = now
        self.chunks += 1
        self.tokens += tokens

    # -- fed events (an observer) -----------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        kind = event.type
        events = self.events
        events[kind] = events.get(kind, 0) + 1
        if self.measure_bytes:
            self.bytes[kind] = self.bytes.get(kind, 0) + len(encode(event))
        cls = event.__class__
        if cls is TextDelta:
            self.output(event.ts, 1)
            return
        tokens = _OUTPUT.get(cls)
        if tokens is not None:
            self.output(event.ts, tokens)
        elif cls is Start:
            self.start_ts = event.ts
            self.model = event.model  # type: ignore[union-attr]
        elif cls is ToolCall:
            self._calls[event.call_id] = (event.name, event.ts)  # type: ignore[union-attr]
        elif cls is ToolResult:
            started = self._calls.pop(event.call_id, None)  # type: ignore[union-attr]
            if started is not None:
                self.tools.append((started[0], event.ts - started[1], event.is_error))  # type: ignore[union-attr]
        elif cls is Usage:
            self.usage = (event.input_tokens, event.output_tokens)  # type: ignore[union-attr]
        elif cls is Done:
            self.end_ts = event.ts
            self.outcome = event.finish_reason  # type: ignore[union-attr]
            if event.usage is not None:  # type: ignore[union-attr]
                self.usage = (event.usage.input_tokens, event.usage.output_tokens)  # type: ignore[union-attr]
        elif cls is Error:
            self.end_ts = event.ts
            self.outcome = event.code  # type: ignore[union-attr]

    # -- derived ----------------------------------------------------------------------------------

    @property
    def ttft_s(self) -> float | None:
        """Time to first token (first output chunk), from ``start``."""
        if self.first_ts is None or self.start_ts is None:
            return None
        return self.first_ts - self.start_ts

    def output_tokens(self) -> int:
        """The provider's output token count when it reported one, else the deltas counted."""
        return self.usage[1] if self.usage is not None else self.tokens

    def tokens_per_s(self, now: float | None = None) -> float:
        """Output tokens per second after the first token, up to the end (or ``now``, live)."""
        end = self.end_ts if self.end_ts is not None else now if now is not None else self.last_ts
        if self.first_ts is None or end <= self.first_ts:
            return 0.0
        return self.output_tokens() / (end - self.first_ts)

    def stats(self, end_ts: float | None = None) -> Stats:
        """The :class:`~tokenwire.events.Stats` of ``done`` (``end_ts``: the end, if not fed one)."""
        end = end_ts if end_ts is not None else self.end_ts if self.end_ts is not None else self.last_ts
        start = self.start_ts if self.start_ts is not None else end
        first = self.first_ts
        tokens = self.output_tokens()
        gen_time = end - first if first is not None else 0.0
        return Stats(
            duration_s=end - start,
            ttft_s=None if first is None else first - start,
            output_tokens=tokens,
            tokens_per_s=tokens / gen_time if gen_time > 0 else 0.0,
            max_gap_s=self.max_gap_s,
            stalls=self.stalls,
        )

    def gap_histogram(self) -> list[tuple[float, int]]:
        """(upper bound, count) per bucket of :data:`TIME_PER_CHUNK_BUCKETS`, then (inf, count)."""
        return list(zip((*TIME_PER_CHUNK_BUCKETS, math.inf), self.gaps, strict=True))

    def gap_quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile of gaps (None: no gaps)."""
        total = sum(self.gaps)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bound, count in self.gap_histogram():
            seen += count
            if seen >= rank:
                return bound if bound != math.inf else self.max_gap_s
        return self.max_gap_s

    def summary(self) -> dict[str, Any]:
        """Everything as plain data (``tokenwire stats --format json``)."""
        return {
            "model": self.model,
            "outcome": self.outcome,
            "duration_s": self.stats().duration_s,
            "ttft_s": self.ttft_s,
            "output_tokens": self.output_tokens(),
            "tokens_per_s": self.tokens_per_s(),
            "chunks": self.chunks,
            "gap_p50_s": self.gap_quantile(0.5),
            "gap_p90_s": self.gap_quantile(0.9),
            "gap_p99_s": self.gap_quantile(0.99),
            "max_gap_s": self.max_gap_s,
            "stalls": self.stalls,
            "events": dict(self.events),
            "bytes": dict(self.bytes),
            "tools": [{"name": n, "duration_s": d, "is_error": e} for n, d, e in self.tools],
        }
