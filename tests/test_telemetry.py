"""Telemetry: the one implementation of a stream's statistics (Metrics), checked against a
reference computed the obvious way from the same events, and where it is used."""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.events import (
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    encode,
)
from tokenwire.telemetry import TIME_PER_CHUNK_BUCKETS, Metrics

OUTPUT_KINDS = ("text", "reasoning", "args", "call_start")


def build(steps: list[tuple[str, float]], end: str) -> list[Event]:
    """A stream from (kind, pause before it) steps; ts accumulate from 100.0."""
    ts = 100.0
    events: list[Event] = [Start(model="m", ts=ts)]
    for i, (kind, pause) in enumerate(steps):
        ts += pause
        if kind == "text":
            events.append(TextDelta("t", ts=ts))
        elif kind == "reasoning":
            events.append(ReasoningDelta("r", ts=ts))
        elif kind == "args":
            events.append(ToolCallDelta(call_id="c", args_delta="{", ts=ts))
        elif kind == "call_start":
            events.append(ToolCallStart(call_id="c", name="f", ts=ts))
        elif kind == "call":
            events.append(ToolCall(call_id=f"k{i}", name="f", args={}, ts=ts))
        elif kind == "result":
            events.append(ToolResult(call_id=f"k{i - 1}", name="f", result=1, ts=ts))
    ts += 0.5
    events.append(Done(ts=ts) if end == "done" else Error(code="boom", message="x", ts=ts))
    return events


def reference(events: list[Event], stall_gap: float) -> dict[str, Any]:
    """The statistics the slow, obvious way: list the output times, then look at them."""
    start = events[0].ts
    out = [e.ts for e in events if isinstance(e, TextDelta | ReasoningDelta | ToolCallDelta | ToolCallStart)]
    gaps = [b - a for a, b in itertools.pairwise(out)]
    tokens = sum(1 for e in events if isinstance(e, TextDelta | ReasoningDelta | ToolCallDelta))
    hist = [0] * (len(TIME_PER_CHUNK_BUCKETS) + 1)
    for g in gaps:
        hist[next((i for i, b in enumerate(TIME_PER_CHUNK_BUCKETS) if g <= b), len(TIME_PER_CHUNK_BUCKETS))] += 1
    end = events[-1].ts
    return {
        "ttft": out[0] - start if out else None,
        "chunks": len(out),
        "tokens": tokens,
        "max_gap": max(gaps, default=0.0),
        "stalls": sum(g >= stall_gap for g in gaps),
        "hist": hist,
        "tps": tokens / (end - out[0]) if out and end > out[0] else 0.0,
        "by_type": {t: sum(e.type == t for e in events) for t in {e.type for e in events}},
    }


steps = st.lists(
    st.tuples(
        st.sampled_from([*OUTPUT_KINDS, "call", "result"]),
        st.one_of(st.floats(0, 0.02), st.floats(0, 3), st.sampled_from([*TIME_PER_CHUNK_BUCKETS, 0.0])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, end=st.sampled_from(["done", "error"]), stall_gap=st.sampled_from([0.005, 0.01, 0.3, 1.0]))
def test_metrics_match_the_obvious_computation(steps: list[tuple[str, float]], end: str, stall_gap: float) -> None:
    events = build(steps, end)
    m = Metrics(stall_gap_s=stall_gap, measure_bytes=True)
    for e in events:
        m(e)
    ref = reference(events, stall_gap)
    assert m.ttft_s == ref["ttft"]
    assert (m.chunks, m.tokens, m.stalls, m.gaps) == (ref["chunks"], ref["tokens"], ref["stalls"], ref["hist"])
    assert m.max_gap_s == ref["max_gap"]
    assert math.isclose(m.tokens_per_s(), ref["tps"])
    assert m.events == ref["by_type"]
    assert m.bytes == {t: sum(len(encode(e)) for e in events if e.type == t) for t in ref["by_type"]}
    assert m.outcome == ("stop" if end == "done" else "boom")
    stats = m.stats()
    assert (stats.ttft_s, stats.output_tokens, stats.stalls) == (ref["ttft"], ref["tokens"], ref["stalls"])


def test_tool_durations_usage_and_quantiles() -> None:
    m = Metrics()
    for e in [
        Start(model="m", ts=0.0),
        ToolCall(call_id="a", name="search", args={}, ts=1.0),
        ToolCall(call_id="b", name="fetch", args={}, ts=1.0),
        ToolResult(call_id="b", name="fetch", result="x", ts=1.5, is_error=True),
        ToolResult(call_id="a", name="search", result="y", ts=3.0),
        TextDelta("a", ts=3.1),
        TextDelta("b", ts=3.12),
        TextDelta("c", ts=3.14),
        TextDelta("d", ts=4.0),
        Done(ts=4.0, usage=TokenUsage(5, 40)),
    ]:
        m(e)
    assert m.tools == [("fetch", 0.5, True), ("search", 2.0, False)]
    assert m.output_tokens() == 40 and m.usage == (5, 40)  # the provider's count wins over deltas
    assert m.gap_quantile(0.5) == 0.025 and m.gap_quantile(1.0) == 1.0  # bucket upper bounds
    assert Metrics().gap_quantile(0.5) is None
    summary = m.summary()
    assert summary["tools"][0] == {"name": "fetch", "duration_s": 0.5, "is_error": True}
    assert summary["outcome"] == "stop" and summary["chunks"] == 4


def test_done_stats_come_from_the_same_metrics() -> None:
    """The engine's done.stats and a Metrics observer of the same stream agree."""
    import tokenwire
    from tokenwire.providers import Delay, Scripted

    observed = Metrics()
    response = tokenwire.run_sync(Scripted(["a", Delay(0.05), "b", "c"]), "x", observers=[observed])
    done = response.stats
    assert done is not None
    ours = observed.stats()
    assert (done.output_tokens, done.stalls) == (ours.output_tokens, ours.stalls) == (3, 0)
    assert done.ttft_s == ours.ttft_s and done.max_gap_s == ours.max_gap_s >= 0.05


def test_the_cli_footer_reads_the_metrics_against_an_injected_clock() -> None:
    from tokenwire.cli.view import LiveView

    now = [100.0]
    view = LiveView(stall_after_s=1.0, clock=lambda: now[0])
    for e in [Start(model="m", ts=100.0), TextDelta("a", ts=100.5), TextDelta("b", ts=101.0)]:
        view.on_event(e)
    now[0] = 101.5
    assert view.footer().plain == "ttft 0.50s · 2.0 tok/s · 2 tokens · 1.5s · streaming"
    now[0] = 103.0
    assert "stalled 2.0s" in view.footer().plain
    view.on_event(Done(ts=103.0))
    assert view.footer().plain == "ttft 0.50s · 0.8 tok/s · 2 tokens · 3.0s · stop"


# -- Prometheus: GET /metrics, read with Prometheus' own text parser ---------------------------------


def scrape(url: str, token: str) -> dict[str, Any]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            samples[key] = s.value
    return samples


def test_metrics_endpoint_counts_runs_connections_bytes_and_timing() -> None:
    import httpx

    from tokenwire.log import MemoryLog
    from tokenwire.providers import Delay, Scripted, Stall
    from tokenwire.server import ServerConfig, create_app
    from wire import serve

    key, token = "metrics-api-key", "metrics-scrape-token"
    app = create_app(
        providers={"ok": Scripted(["a", Delay(0.03), "b", "c"]), "stuck": Scripted(["x", Stall()])},
        api_keys=[key],
        log=MemoryLog(),
        config=ServerConfig(metrics_token=token),
    )
    auth = {"Authorization": f"Bearer {key}"}
    with serve(app) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth).status_code == 401  # an API key is not the token
        before = scrape(url, token)
        assert before["tokenwire_runs_live"] == 0 and before["tokenwire_time_to_first_chunk_seconds_count"] == 0
        read = 0
        for _ in range(2):
            info = httpx.post(f"{url}/v1/runs", json={"prompt": "x", "provider": "ok"}, headers=auth).json()
            with httpx.stream(
                "GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}
            ) as r:
                read += len(b"".join(r.iter_bytes()))
        stuck = httpx.post(f"{url}/v1/runs", json={"prompt": "x", "provider": "stuck"}, headers=auth).json()
        live = scrape(url, token)
        cancel = f"{url}/v1/streams/{stuck['stream_id']}/cancel"
        httpx.post(cancel, headers={"Authorization": f"Bearer {stuck['token']}"})
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "ok", "messages": [{"role": "user", "content": "x"}], "stream": True},
            headers=auth,
        )
        assert r.status_code == 200
        after = scrape(url, token)
    assert live["tokenwire_runs_live"] == 1 and live["tokenwire_runs_total{outcome=stop}"] == 2
    assert after["tokenwire_runs_live"] == 0
    assert after["tokenwire_runs_total{outcome=stop}"] == 3 and after["tokenwire_runs_total{outcome=cancelled}"] == 1
    assert after["tokenwire_events_appended_total"] == 3 * 5 + 3  # start, 3 deltas, done; start, x, done
    assert after["tokenwire_bytes_out_total{transport=sse}"] == read
    assert after["tokenwire_bytes_out_total{transport=openai.chat}"] == len(r.content)
    assert after["tokenwire_connections{transport=sse}"] == 0
    assert after["tokenwire_time_to_first_chunk_seconds_count"] == 4
    gaps = after["tokenwire_time_per_output_chunk_seconds_count"]
    assert gaps == 3 * 2  # two gaps per three-delta run
    assert after["tokenwire_time_per_output_chunk_seconds_bucket{le=0.01}"] <= gaps - 3  # the 30 ms pauses
    assert after["tokenwire_time_per_output_chunk_seconds_sum"] >= 3 * 0.03


def test_metrics_are_off_without_a_token() -> None:
    import httpx

    from tokenwire.providers import Scripted
    from tokenwire.server import create_app
    from wire import serve

    with serve(create_app(providers={"s": Scripted(["a"])}, api_keys=["k-123456"])) as url:
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k-123456"}).status_code == 404


# -- OpenTelemetry: spans and GenAI metrics, read back with the SDK's in-memory exporters --------------


class Otel:
    """An OTel wired to in-memory exporters."""

    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from tokenwire.telemetry.otel import OTel

        self.spans = InMemorySpanExporter()
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.otel = OTel(tracer_provider=tracing, meter_provider=MeterProvider(metric_readers=[self.reader]), **kwargs)

    def metrics(self) -> dict[str, list[Any]]:
        """Histogram data points by metric name."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


async def test_an_agent_run_is_a_chat_span_with_tool_spans_and_genai_metrics() -> None:
    import tokenwire
    from tokenwire.core.request import Message, Request
    from tokenwire.events import Usage
    from tokenwire.providers import Delay, Scripted
    from tokenwire.telemetry.metrics import FIRST_CHUNK_BUCKETS
    from tokenwire.tools import tool
    from tokenwire.tools.agent import Agent

    @tool
    def weather(city: str) -> str:
        """The weather."""
        return f"sunny in {city}"

    @tool
    def broken() -> str:
        """Fails."""
        raise RuntimeError("no")

    o = Otel()
    model = Scripted.turns(
        [ToolCall(call_id="c1", name="weather", args={"city": "Oslo"}), ToolCall(call_id="c2", name="broken", args={})],
        ["It ", Delay(0.01), "is ", "sunny.", Usage(input_tokens=12, output_tokens=3)],
        model="tiny",
    )
    agent = Agent(model, [weather, broken])
    request = Request([Message("user", "Weather?")], max_tokens=50, temperature=0.5)
    response = await tokenwire.generate(agent, request, observers=[o.otel.observer(agent, request)])
    assert response.text == "It is sunny."
    spans = {s.name: s for s in o.spans.get_finished_spans()}
    assert set(spans) == {"chat tiny", "execute_tool weather", "execute_tool broken"}
    run = spans["chat tiny"]
    a = dict(run.attributes or {})
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "tokenwire.scripted"
    assert a["gen_ai.request.model"] == "tiny" and a["gen_ai.request.stream"] is True
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"]) == (50, 0.5)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 3)
    assert a["gen_ai.response.time_to_first_chunk"] > 0 and a["gen_ai.response.id"] == response.stream_id
    for name in ("execute_tool weather", "execute_tool broken"):
        tool_span = spans[name]
        assert tool_span.parent is not None and tool_span.parent.span_id == run.context.span_id
        assert tool_span.context.trace_id == run.context.trace_id
        assert run.start_time <= tool_span.start_time <= tool_span.end_time <= run.end_time
    assert spans["execute_tool broken"].status.status_code.name == "ERROR"
    assert spans["execute_tool weather"].attributes["gen_ai.tool.call.id"] == "c1"
    metrics = o.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert list(duration.explicit_bounds) == list(FIRST_CHUNK_BUCKETS) and duration.count == 1
    assert duration.attributes["gen_ai.provider.name"] == "tokenwire.scripted"
    (ttfc,) = metrics["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.count == 1
    (per_chunk,) = metrics["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == 1  # once per run by default: the run's mean gap (see OTel's docstring)
    usage = {p.attributes["gen_ai.token.type"]: p.sum for p in metrics["gen_ai.client.token.usage"]}
    assert usage == {"input": 12, "output": 3}


async def test_a_child_run_s_chat_span_is_under_the_execute_tool_span_of_the_call_that_started_it() -> None:
    """Three levels (lead -> research -> leaf): each child's ``chat`` span is a child of its
    parent's ``execute_tool`` span for that call, one trace, each span inside its parent's time."""
    import tokenwire
    from tokenwire.providers import Scripted

    o = Otel()
    leaf = tokenwire.sub_agent(Scripted(["leaf answer"], model="leaf"), name="leaf", description="Leaf.")
    research_model = Scripted.turns([ToolCall(call_id="m1", name="leaf", args={"task": "t"})], ["found"], model="mid")
    research = tokenwire.sub_agent(research_model, name="research", description="Research.", tools=[leaf])
    lead = Scripted.turns([ToolCall(call_id="r1", name="research", args={"task": "t"})], ["done"], model="lead")
    response = await tokenwire.generate(lead, "go", tools=[research], observers=[o.otel.observer(lead, "go")])
    assert response.text == "done"
    spans = {s.name: s for s in o.spans.get_finished_spans()}
    assert set(spans) == {"chat lead", "execute_tool research", "chat mid", "execute_tool leaf", "chat leaf"}
    chain = ["chat lead", "execute_tool research", "chat mid", "execute_tool leaf", "chat leaf"]
    for parent, child in itertools.pairwise(chain):
        p, c = spans[parent], spans[child]
        assert c.parent is not None and c.parent.span_id == p.context.span_id, (parent, child)
        assert c.context.trace_id == spans["chat lead"].context.trace_id
        assert p.start_time <= c.start_time <= c.end_time <= p.end_time, (parent, child)
    assert spans["chat leaf"].attributes["tokenwire.stream_id"] != response.stream_id


async def test_a_failed_run_is_an_error_span_and_per_chunk_records_every_gap() -> None:
    import tokenwire
    from tokenwire.providers import Scripted

    o = Otel(per_chunk=True)
    model = Scripted(["a", "b", "c", RuntimeError("backend fell over")], model="m")
    await tokenwire.generate(model, "x", observers=[o.otel.observer(model, "x")]).wait()
    (span,) = o.spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR" and span.attributes["error.type"] == "provider_error"
    metrics = o.metrics()
    assert metrics["gen_ai.client.operation.time_per_output_chunk"][0].count == 2  # b and c
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "provider_error"


def test_the_server_continues_the_callers_trace_and_propagates_it_to_the_provider() -> None:
    import httpx

    from tokenwire.log import MemoryLog
    from tokenwire.providers import OpenAICompatible
    from tokenwire.server import create_app
    from wire import Faults, serve

    o = Otel()
    faults = Faults()
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traceparent = f"00-{trace_id}-{parent_id}-01"
    with serve(faults.app) as upstream:
        provider = OpenAICompatible(upstream + "/v1", model="up")
        app = create_app(providers={"up": provider}, api_keys=["otel-key-1"], log=MemoryLog(), otel=o.otel)
        auth = {"Authorization": "Bearer otel-key-1", "traceparent": traceparent}
        with serve(app) as url:
            info = httpx.post(f"{url}/v1/runs", json={"prompt": "hi"}, headers=auth).json()
            with httpx.stream(
                "GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}
            ) as r:
                assert b"event: done" in b"".join(r.iter_bytes())
            body = {"model": "up", "messages": [{"role": "user", "content": "x"}]}
            chat = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth)
            assert chat.status_code == 200
    spans = [s for s in o.spans.get_finished_spans() if s.name == "chat up"]
    assert len(spans) == 2
    for span in spans:
        assert format(span.context.trace_id, "032x") == trace_id  # the caller's trace goes on
        assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    sent = [h.get("traceparent", "") for h in faults.headers]
    assert len(sent) == 2
    for header, span in zip(sent, spans, strict=True):  # the provider's request is a child of the run
        assert header == f"00-{trace_id}-{format(span.context.span_id, '016x')}-01"


def test_a_server_without_otel_adds_no_telemetry_observers() -> None:
    from tokenwire.core.request import Request
    from tokenwire.providers import Scripted
    from tokenwire.server import create_app

    app = create_app(providers={"s": Scripted(["a"])})
    assert app.state.tokenwire.telemetry(Scripted(["a"]), Request([]), {"traceparent": "x"}) == []
