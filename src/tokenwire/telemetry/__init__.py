"""Telemetry: the stream statistics (:class:`Metrics`) and what exports them.

:mod:`tokenwire.telemetry.metrics` is the one implementation of a stream's statistics (sans-I/O,
no dependency); the exporters build on it and on the server's counters.
"""

from tokenwire.telemetry.metrics import FIRST_CHUNK_BUCKETS, TIME_PER_CHUNK_BUCKETS, TOKEN_BUCKETS, Metrics

__all__ = ["FIRST_CHUNK_BUCKETS", "TIME_PER_CHUNK_BUCKETS", "TOKEN_BUCKETS", "Metrics"]
