"""Cost of telemetry per event: the same stream with telemetry off and on, in one run.

N scripted text deltas (a tool call every 100) through ``tokenwire.generate`` with one counting
observer (off), then adding OpenTelemetry's run observer (an SDK tracer and meter provider with
in-memory exporters: the SDK's own work is measured too), then a bare ``Metrics`` observer. CPU µs
per event, best of R. Target (issue #15): telemetry on adds ≤ 1 µs per event over off.

    python bench/telemetry.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tokenwire
from tokenwire.core.request import Request
from tokenwire.events import ToolCall, ToolResult
from tokenwire.telemetry import Metrics
from tokenwire.telemetry.otel import OTel


class Deltas:
    model = "bench"

    def __init__(self, n: int):
        self.n = n

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        for i in range(self.n):
            if i % 100 == 50:
                yield ToolCall(call_id=f"c{i}", name="t", args={})
                yield ToolResult(call_id=f"c{i}", name="t", result=1)
            yield "tok"


def otel() -> OTel:
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return OTel(tracer_provider=tracing, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))


class Count:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, event: Any) -> None:
        self.n += 1


async def one_run(provider: Deltas, observers: list[object]) -> None:
    await tokenwire.generate(provider, "bench", observers=observers).wait()


def cost(n: int, repeat: int, extra: Callable[[Deltas], list[object]]) -> float:
    best = float("inf")
    for _ in range(repeat):
        provider, count = Deltas(n), Count()
        observers = [count, *extra(provider)]
        gc.collect()
        t0 = time.process_time()
        asyncio.run(one_run(provider, observers))
        best = min(best, time.process_time() - t0)
        assert count.n > n
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    telemetry = otel()
    off = cost(args.events, args.repeat, lambda p: [])
    on = cost(args.events, args.repeat, lambda p: [telemetry.observer(p, "bench")])
    chunks = OTel(
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        per_chunk=True,
    )
    per_chunk = cost(args.events, args.repeat, lambda p: [chunks.observer(p, "bench")])
    metrics = cost(args.events, args.repeat, lambda p: [Metrics()])
    print(f"# {args.events:,} deltas, best of {args.repeat}; CPU µs per event")
    print("| telemetry | µs/event | over off |\n|---|---:|---:|")
    print(f"| off | {off:.2f} | |")
    print(f"| OpenTelemetry (spans, GenAI metrics) | {on:.2f} | {on - off:+.2f} |")
    print(f"| OpenTelemetry, per_chunk=True | {per_chunk:.2f} | {per_chunk - off:+.2f} |")
    print(f"| a Metrics observer | {metrics:.2f} | {metrics - off:+.2f} |")


if __name__ == "__main__":
    main()
