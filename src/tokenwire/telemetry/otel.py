"""OpenTelemetry for tokenwire runs (extra ``otel``): GenAI spans and metrics, W3C trace context.

Off by default and free when off: nothing here runs unless an :class:`OTel` exists. With one, each
run gets an observer (:meth:`OTel.observer`) that

- opens a span ``chat {model}`` (kind CLIENT) when the stream starts, as a child of ``parent``
  (the server passes the ``traceparent`` of the HTTP / WebSocket request that created the run),
  and makes it current in the run's task, so the provider's outgoing HTTP request carries it
  (:func:`trace_headers`);
- adds a span ``execute_tool {name}`` per tool call (from its ``tool_call`` to its
  ``tool_result``, with the events' own times); a run that tool starts (a child run,
  :mod:`tokenwire.tools.tree`) gets an observer of its own whose ``chat`` span is a child of
  that ``execute_tool`` span (:func:`child_observer`), and so on down the tree;
- ends the run span at the terminal event with the GenAI attributes (``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.stream``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.usage.*``, time to first chunk as
  ``gen_ai.response.time_to_first_chunk``; ``error.type`` and an ERROR status on an error);
- records ``gen_ai.client.operation.duration``, ``gen_ai.client.operation.time_to_first_chunk``,
  ``gen_ai.client.operation.time_per_output_chunk`` and ``gen_ai.client.token.usage`` with the
  conventions' advised buckets.

Cost: the SDK's ``Histogram.record`` takes 3 to 6 µs, more than a whole event costs tokenwire. So by
default time per output chunk is recorded once per run, as the run's mean gap between chunks
(the way the server-side ``gen_ai.server.time_per_output_token`` is); ``per_chunk=True`` records
every gap, as the client convention says, at that price. The exact per-chunk distribution is in
the Prometheus histogram either way (merged from each run's :class:`Metrics` at no per-event cost).

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
>>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> spans = InMemorySpanExporter()
>>> tracing = TracerProvider()
>>> tracing.add_span_processor(SimpleSpanProcessor(spans))
>>> otel = OTel(tracer_provider=tracing)
>>> model = Scripted(["Hel", "lo"], model="m")
>>> _ = tokenwire.run_sync(model, "hi", observers=[otel.observer(model, "hi")])
>>> [(s.name, s.attributes["gen_ai.response.finish_reasons"]) for s in spans.get_finished_spans()]
[('chat m', ('stop',))]
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from tokenwire import __version__
from tokenwire.core.request import Request, as_request
from tokenwire.events import Done, Error, Event, Start, TextDelta, ToolCall, ToolResult
from tokenwire.telemetry.metrics import FIRST_CHUNK_BUCKETS, TIME_PER_CHUNK_BUCKETS, TOKEN_BUCKETS, Metrics

__all__ = ["OTel", "RunTelemetry", "child_observer", "trace_headers"]

_enabled = False
_RUN: ContextVar[RunTelemetry | None] = ContextVar("tokenwire_otel_run", default=None)


def child_observer(provider: object, request: Request | str, call_id: str) -> RunTelemetry | None:
    """The observer of a run started inside tool call ``call_id`` of the run whose telemetry is
    current in this task (None without one): its ``chat`` span is a child of that call's
    ``execute_tool`` span (or of the run's own, before the call's span exists)."""
    if not _enabled:
        return None
    run = _RUN.get()
    if run is None or run._span is None:
        return None
    from opentelemetry import trace

    span = run._calls.get(call_id, run._span)
    return RunTelemetry(run._otel, provider, as_request(request), trace.set_span_in_context(span))


def trace_headers() -> dict[str, str]:
    """The W3C trace-context headers of the current span, for an outgoing provider request ({}
    unless an :class:`OTel` exists: one check per request when telemetry is off)."""
    if not _enabled:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _ns(ts: float) -> int:
    return int(ts * 1e9)


_PROVIDER_NAMES = {
    "OpenAIChat": "openai",
    "OpenAIResponses": "openai",
    "OpenAICompatible": "openai",
    "Anthropic": "anthropic",
    "LlamaCpp": "llama.cpp",
}


def provider_name(provider: object) -> str:
    """``gen_ai.provider.name`` of a provider: its ``provider_name`` attribute, a well-known name
    for tokenwire's own backends, else ``tokenwire.<class name>``."""
    name = getattr(provider, "provider_name", None)
    if isinstance(name, str):
        return name
    inner = getattr(provider, "provider", None)  # an Agent wraps the model's provider
    if inner is not None and inner is not provider:
        return provider_name(inner)
    cls = type(provider).__name__
    return _PROVIDER_NAMES.get(cls, f"tokenwire.{cls.lower()}")


class OTel:
    """Spans and GenAI metrics for tokenwire runs (see the module docstring).

    ``tracer_provider`` / ``meter_provider``: the SDK's providers (default: the global ones set
    with ``opentelemetry.trace.set_tracer_provider`` …). Give the server one with
    ``create_app(otel=OTel())``; for your own runs, pass :meth:`observer` in ``observers``.
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None, per_chunk: bool = False):
        from opentelemetry import metrics, trace

        global _enabled
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("tokenwire", __version__)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("tokenwire", __version__)
        self.per_chunk = per_chunk
        histograms = {
            "duration": ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", FIRST_CHUNK_BUCKETS),
            "time_to_first_chunk": (
                "gen_ai.client.operation.time_to_first_chunk",
                "s",
                "Time to receive the first chunk in a streaming operation.",
                FIRST_CHUNK_BUCKETS,
            ),
            "time_per_output_chunk": (
                "gen_ai.client.operation.time_per_output_chunk",
                "s",
                "Time between consecutive output chunks in a streaming operation.",
                TIME_PER_CHUNK_BUCKETS,
            ),
            "token_usage": (
                "gen_ai.client.token.usage",
                "{token}",
                "Number of input and output tokens used.",
                TOKEN_BUCKETS,
            ),
        }
        made = {
            attr: meter.create_histogram(
                name, unit=unit, description=doc, explicit_bucket_boundaries_advisory=[float(b) for b in buckets]
            )
            for attr, (name, unit, doc, buckets) in histograms.items()
        }
        self.duration = made["duration"]
        self.time_to_first_chunk = made["time_to_first_chunk"]
        self.time_per_output_chunk = made["time_per_output_chunk"]
        self.token_usage = made["token_usage"]
        _enabled = True

    @staticmethod
    def extract(headers: Mapping[str, str]) -> Any:
        """The trace context carried by incoming request headers (``traceparent``, ``tracestate``)."""
        from opentelemetry import propagate

        return propagate.extract(dict(headers))

    def observer(
        self, provider: object = None, request: Request | str | None = None, *, parent: Any = None
    ) -> RunTelemetry:
        """An observer for one run of ``provider`` with ``request`` (a child of ``parent``)."""
        return RunTelemetry(self, provider, None if request is None else as_request(request), parent)


class RunTelemetry:
    """The observer of one run (made by :meth:`OTel.observer`)."""

    __slots__ = (
        "_calls",
        "_current",
        "_last_chunk",
        "_otel",
        "_parent",
        "_provider",
        "_request",
        "_span",
        "_token",
        "metrics",
    )

    def __init__(self, otel: OTel, provider: object, request: Request | None, parent: Any):
        self._otel = otel
        self._provider = provider
        self._request = request
        self._parent = parent
        self._span: Any = None
        self._token: Any = None
        self._current: Any = None
        self._calls: dict[str, Any] = {}
        self._last_chunk: float | None = None
        self.metrics = Metrics()
        """The run's statistics, fed by this observer."""

    def __call__(self, event: Event) -> None:
        self.metrics(event)
        cls = event.__class__
        if cls is TextDelta:
            if self._otel.per_chunk:
                self._chunk(event.ts)
            return
        if cls is Start:
            self._start(event)  # type: ignore[arg-type]
        elif cls is ToolCall:
            self._tool_call(event)  # type: ignore[arg-type]
        elif cls is ToolResult:
            self._tool_result(event)  # type: ignore[arg-type]
        elif cls is Done or cls is Error:
            self._end(event)  # type: ignore[arg-type]
        elif self._otel.per_chunk and self.metrics.last_ts == event.ts and event.type.endswith((".delta", ".start")):
            self._chunk(event.ts)

    def _attributes(self) -> dict[str, Any]:
        request = self._request
        model = (request.model if request is not None else None) or getattr(self._provider, "model", None)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(self._provider),
        }
        if model:
            attrs["gen_ai.request.model"] = str(model)
        if self.metrics.model:
            attrs["gen_ai.response.model"] = self.metrics.model
        return attrs

    def _start(self, event: Start) -> None:
        from opentelemetry import context, trace

        otel = self._otel
        attrs = self._attributes()
        model = attrs.get("gen_ai.request.model") or event.model
        span_attrs = {**attrs, "gen_ai.request.stream": True, "tokenwire.stream_id": event.stream_id}
        request = self._request
        if request is not None:
            for key, value in (
                ("gen_ai.request.max_tokens", request.max_tokens),
                ("gen_ai.request.temperature", request.temperature),
                ("gen_ai.request.seed", request.seed),
            ):
                if value is not None:
                    span_attrs[key] = value
            if request.stop:
                span_attrs["gen_ai.request.stop_sequences"] = list(request.stop)
        self._span = otel.tracer.start_span(
            f"chat {model}",
            context=self._parent,
            kind=trace.SpanKind.CLIENT,
            start_time=_ns(event.ts),
            attributes=span_attrs,
        )
        # Current in the run's task from here: the provider's request carries this span's context,
        # and a run one of its tools starts finds this observer (child_observer).
        self._token = context.attach(trace.set_span_in_context(self._span))
        self._current = _RUN.set(self)

    def _chunk(self, ts: float) -> None:
        if self._last_chunk is not None:
            self._otel.time_per_output_chunk.record(ts - self._last_chunk, self._attributes())
        self._last_chunk = ts

    def _tool_call(self, event: ToolCall) -> None:
        if self._span is None:
            return
        from opentelemetry import trace

        self._calls[event.call_id] = self._otel.tracer.start_span(
            f"execute_tool {event.name}",
            context=trace.set_span_in_context(self._span),
            kind=trace.SpanKind.INTERNAL,
            start_time=_ns(event.ts),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.name,
                "gen_ai.tool.call.id": event.call_id,
                "gen_ai.tool.type": "function",
            },
        )

    def _tool_result(self, event: ToolResult) -> None:
        span = self._calls.pop(event.call_id, None)
        if span is None:
            return
        if event.is_error:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, str(event.result)[:200]))
        span.end(end_time=_ns(event.ts))

    def _end(self, event: Done | Error) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        m, otel = self.metrics, self._otel
        attrs = self._attributes()
        metric_attrs = dict(attrs)
        if isinstance(event, Error):
            metric_attrs["error.type"] = event.code
        if m.start_ts is not None:
            otel.duration.record(max(0.0, event.ts - m.start_ts), metric_attrs)
        ttft = m.ttft_s
        if ttft is not None:
            otel.time_to_first_chunk.record(ttft, attrs)
            if not otel.per_chunk and m.chunks > 1 and m.first_ts is not None:
                otel.time_per_output_chunk.record((m.last_ts - m.first_ts) / (m.chunks - 1), attrs)
        if m.usage is not None:
            otel.token_usage.record(m.usage[0], {**attrs, "gen_ai.token.type": "input"})
            otel.token_usage.record(m.usage[1], {**attrs, "gen_ai.token.type": "output"})
        span = self._span
        if span is None:
            return
        for call in self._calls.values():  # calls the run ended without a result
            call.set_status(Status(StatusCode.ERROR, "the run ended before the tool answered"))
            call.end(end_time=_ns(event.ts))
        self._calls.clear()
        if m.model:
            span.set_attribute("gen_ai.response.model", m.model)
        span.set_attribute("gen_ai.response.id", event.stream_id)
        if ttft is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", ttft)
        if m.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", m.usage[0])
            span.set_attribute("gen_ai.usage.output_tokens", m.usage[1])
        if isinstance(event, Done):
            span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
        else:
            span.set_attribute("error.type", event.code)
            span.set_status(Status(StatusCode.ERROR, event.message[:200]))
        span.end(end_time=_ns(event.ts))
        if self._token is not None:
            context.detach(self._token)
            self._token = None
        if self._current is not None:
            with contextlib.suppress(ValueError):  # ended in another context than it started in
                _RUN.reset(self._current)
            self._current = None
