"""The server's own counters: runs by outcome, events, connections and bytes by transport, lag
disconnects, log write latency, and the streams' timing merged into histograms.

Sans-I/O and dependency-free: the server updates a :class:`ServerStats` where things happen (a run
ends, a connection opens or writes, a reader is cut off for lagging, the log writes a batch), and
exporters read it (:mod:`tokenwire.telemetry.prometheus`). Nothing here runs per event: a run's
timing is merged from its :class:`~tokenwire.telemetry.Metrics` once, when it ends.

>>> from tokenwire.events import Done
>>> from tokenwire.telemetry import Metrics
>>> stats, m = ServerStats(), Metrics()
>>> m.start(0.0); m.output(0.2); m.output(0.25)
>>> stats.run_finished(m, Done(seq=3))
>>> stats.runs_by_outcome, stats.events_appended, stats.ttft.count, stats.chunk_gap.cumulative()[2]
({'stop': 1}, 4, 1, (0.05, 1))
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from tokenwire.events import Done, Error
from tokenwire.telemetry.metrics import FIRST_CHUNK_BUCKETS, TIME_PER_CHUNK_BUCKETS, Metrics

__all__ = ["APPEND_BUCKETS", "Histogram", "ServerStats"]

APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds per write of a batch of events to a networked log (Redis: one round trip)."""


class Histogram:
    """Counts per bucket (``counts[i]``: values ≤ ``bounds[i]``, not cumulative; the last: above
    every bound), with the sum and count of the values."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def merge(self, counts: Sequence[int], total: float) -> None:
        """Add another histogram's bucket counts (same bounds) and the sum of its values."""
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.count += sum(counts)
        self.sum += total

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, values ≤ it), ending with (inf, count): Prometheus' and OpenTelemetry's form."""
        out, seen = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += n
            out.append((bound, seen))
        return out


class ServerStats:
    """What a server counts about itself (read by the exporters)."""

    def __init__(self) -> None:
        self.runs_by_outcome: dict[str, int] = {}
        """Finished runs by finish reason (``stop``, ``length``, ``cancelled`` …) or error code."""
        self.events_appended = 0
        """Events of finished runs (a live run's count so far is read from the run)."""
        self.connections: dict[str, int] = {}
        """Streaming connections open now, by transport (``sse``, ``websocket``, ``openai.chat`` …)."""
        self.bytes_out: dict[str, int] = {}
        """Bytes written to streaming connections, by transport."""
        self.lag_disconnects = 0
        """Readers cut off for falling ``max_lag_events`` behind a live stream (they resume)."""
        self.broadcast_events = 0
        """Events a stream's fan-out broadcast wrote to its readers, one per event per reader
        (:mod:`tokenwire.server.fanout`): the readers wrote the rest themselves."""
        self.append_latency = Histogram(APPEND_BUCKETS)
        self.ttft = Histogram(FIRST_CHUNK_BUCKETS)
        self.duration = Histogram(FIRST_CHUNK_BUCKETS)
        self.chunk_gap = Histogram(TIME_PER_CHUNK_BUCKETS)
        self.output_tokens = 0

    def run_finished(self, metrics: Metrics, terminal: Done | Error) -> None:
        """A run ended: count its outcome and events, merge its timing."""
        outcome = terminal.finish_reason if isinstance(terminal, Done) else terminal.code
        self.runs_by_outcome[outcome] = self.runs_by_outcome.get(outcome, 0) + 1
        self.events_appended += terminal.seq + 1
        ttft = metrics.ttft_s
        if ttft is not None:
            self.ttft.observe(ttft)
            # The gaps between consecutive chunks add up to last - first: no per-event sum needed.
            self.chunk_gap.merge(metrics.gaps, metrics.last_ts - (metrics.first_ts or 0.0))
        if metrics.start_ts is not None:
            self.duration.observe(max(0.0, terminal.ts - metrics.start_ts))
        self.output_tokens += metrics.output_tokens()

    def opened(self, transport: str) -> None:
        self.connections[transport] = self.connections.get(transport, 0) + 1

    def closed(self, transport: str) -> None:
        self.connections[transport] -= 1

    def wrote(self, transport: str, size: int) -> None:
        self.bytes_out[transport] = self.bytes_out.get(transport, 0) + size

    def log_wrote(self, seconds: float, events: int) -> None:
        """A networked log wrote a batch of ``events`` in ``seconds`` (the log's hook)."""
        self.append_latency.observe(seconds)
