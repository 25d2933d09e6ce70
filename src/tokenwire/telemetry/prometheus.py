"""The server's metrics in Prometheus' text format (extra ``prometheus``: ``prometheus-client``).

``tokenwire serve --metrics-token T`` (or ``ServerConfig.metrics_token``) turns on
``GET /metrics``, readable with ``Authorization: Bearer T`` — a credential of its own, so a scraper
holds no key that creates runs. Every figure is read from the server's
:class:`~tokenwire.telemetry.server.ServerStats` and its runs at scrape time: nothing is exported
per event. Names follow Prometheus' conventions (``_total`` counters, ``_seconds`` units):

- ``tokenwire_runs_live``, ``tokenwire_runs_total{outcome}`` (finish reason or error code)
- ``tokenwire_events_appended_total``, ``tokenwire_output_tokens_total``
- ``tokenwire_connections{transport}``, ``tokenwire_bytes_out_total{transport}``
- ``tokenwire_lag_disconnects_total``
- ``tokenwire_broadcast_events_total``
- ``tokenwire_log_append_seconds`` (a networked log's batch writes)
- ``tokenwire_time_to_first_chunk_seconds``, ``tokenwire_time_per_output_chunk_seconds``,
  ``tokenwire_run_duration_seconds`` (the GenAI conventions' buckets)

>>> from tokenwire.telemetry.server import ServerStats
>>> body, content_type = render(ServerStats(), live_runs=3)
>>> b"tokenwire_runs_live 3.0" in body, content_type.split(";")[0]
(True, 'text/plain')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tokenwire.telemetry.server import Histogram, ServerStats

__all__ = ["render"]


def _histogram(name: str, doc: str, h: Histogram) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in h.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


class _Collector:
    def __init__(self, stats: ServerStats, live_runs: int, live_events: int):
        self.stats = stats
        self.live_runs = live_runs
        self.live_events = live_events

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        yield GaugeMetricFamily("tokenwire_runs_live", "Runs generating now.", value=self.live_runs)
        runs = CounterMetricFamily("tokenwire_runs", "Finished runs by outcome.", labels=["outcome"])
        for outcome, n in sorted(s.runs_by_outcome.items()):
            runs.add_metric([outcome], n)
        yield runs
        yield CounterMetricFamily(
            "tokenwire_events_appended", "Events appended to the log.", value=s.events_appended + self.live_events
        )
        yield CounterMetricFamily("tokenwire_output_tokens", "Output tokens of finished runs.", value=s.output_tokens)
        conns = GaugeMetricFamily("tokenwire_connections", "Streaming connections open.", labels=["transport"])
        for transport, n in sorted(s.connections.items()):
            conns.add_metric([transport], n)
        yield conns
        out = CounterMetricFamily("tokenwire_bytes_out", "Bytes written to streaming clients.", labels=["transport"])
        for transport, n in sorted(s.bytes_out.items()):
            out.add_metric([transport], n)
        yield out
        yield CounterMetricFamily(
            "tokenwire_lag_disconnects", "Readers cut off for lagging a live stream.", value=s.lag_disconnects
        )
        yield CounterMetricFamily(
            "tokenwire_broadcast_events", "Events written to readers by fan-out broadcasts.", value=s.broadcast_events
        )
        yield _histogram("tokenwire_log_append_seconds", "Batch writes to a networked log.", s.append_latency)
        yield _histogram("tokenwire_time_to_first_chunk_seconds", "Time to the first output chunk.", s.ttft)
        yield _histogram("tokenwire_time_per_output_chunk_seconds", "Gaps between output chunks.", s.chunk_gap)
        yield _histogram("tokenwire_run_duration_seconds", "Run duration, start to terminal.", s.duration)


def render(stats: ServerStats, *, live_runs: int = 0, live_events: int = 0) -> tuple[bytes, str]:
    """The exposition text of ``stats`` (plus the live figures the server passes) and its content type.

    ``prometheus-client`` is imported here, on the first scrape: a server without the extra
    serves everything else."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, live_runs, live_events))
    return generate_latest(registry), CONTENT_TYPE_LATEST
