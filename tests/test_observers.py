"""Observers: every method kind, isolation of failures, delivery policies, the observe() bridge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tokenwire
from tokenwire.events import (
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)
from tokenwire.providers import Delay, Scripted, Stall
from tokenwire.testing import Transcript, assert_transcript

EVERYTHING: list[Any] = [
    ReasoningDelta("r"),
    "t",
    ToolCallStart(call_id="c", name="n"),
    ToolCallDelta(call_id="c", args_delta="{}"),
    ToolCall(call_id="c", name="n", args={}),
    ToolResult(call_id="c", name="n", result=1),
    Step(name="s", status="started"),
    Usage(input_tokens=1, output_tokens=1),
]


class Recorder:
    """Implements every specific method, half of them async."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_start(self, e: Start) -> None:
        self.calls.append("on_start")

    async def on_delta(self, e: TextDelta) -> None:
        await asyncio.sleep(0)
        self.calls.append("on_delta")

    def on_reasoning(self, e: ReasoningDelta) -> None:
        self.calls.append("on_reasoning")

    async def on_tool_call_start(self, e: ToolCallStart) -> None:
        self.calls.append("on_tool_call_start")

    def on_tool_call_delta(self, e: ToolCallDelta) -> None:
        self.calls.append("on_tool_call_delta")

    async def on_tool_call(self, e: ToolCall) -> None:
        self.calls.append("on_tool_call")

    def on_tool_result(self, e: ToolResult) -> None:
        self.calls.append("on_tool_result")

    async def on_step(self, e: Step) -> None:
        self.calls.append("on_step")

    def on_usage(self, e: Usage) -> None:
        self.calls.append("on_usage")

    async def on_done(self, e: Done) -> None:
        self.calls.append("on_done")

    def on_error(self, e: Error) -> None:
        self.calls.append("on_error")


async def test_every_method_is_called_in_order_sync_and_async() -> None:
    rec = Recorder()
    await tokenwire.generate(Scripted(EVERYTHING), "hi", observers=[rec]).wait()
    assert rec.calls == [
        "on_start",
        "on_reasoning",
        "on_delta",
        "on_tool_call_start",
        "on_tool_call_delta",
        "on_tool_call",
        "on_tool_result",
        "on_step",
        "on_usage",
        "on_done",
    ]
    rec2 = Recorder()
    await tokenwire.generate(Scripted([RuntimeError("x")]), "hi", observers=[rec2]).wait()
    assert rec2.calls == ["on_start", "on_error"]


async def test_on_event_is_called_for_every_event_after_the_specific_method() -> None:
    calls: list[str] = []

    class Both:
        def on_delta(self, e: TextDelta) -> None:
            calls.append("delta")

        def on_event(self, e: Event) -> None:
            calls.append(e.type)

    await tokenwire.generate(Scripted(["a"]), "hi", observers=[Both()]).wait()
    assert calls == ["start", "delta", "text.delta", "done"]


async def test_plain_functions_and_coroutine_functions_are_observers() -> None:
    seen_sync: list[str] = []
    seen_async: list[str] = []

    async def async_fn(e: Event) -> None:
        seen_async.append(e.type)

    await tokenwire.generate(Scripted(["a"]), "hi", observers=[lambda e: seen_sync.append(e.type), async_fn]).wait()
    assert seen_sync == seen_async == ["start", "text.delta", "done"]


async def test_observers_are_called_in_registration_order() -> None:
    order: list[str] = []

    async def first(e: Event) -> None:
        await asyncio.sleep(0)
        order.append(f"1:{e.seq}")

    await tokenwire.generate(Scripted(["a"]), "hi", observers=[first, lambda e: order.append(f"2:{e.seq}")]).wait()
    assert order == ["1:0", "2:0", "1:1", "2:1", "1:2", "2:2"]


def test_not_an_observer_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(TypeError, match="is not an observer"):
        tokenwire.consumers.observers.Dispatcher([42])


async def test_failing_observer_is_isolated_and_reported_once() -> None:
    reports: list[tuple[object, str | None, str]] = []

    class Flaky:
        def on_delta(self, e: TextDelta) -> None:
            raise ValueError(f"bad delta {e.text}")

    async def async_flaky(e: Event) -> None:
        if e.type == "start":
            raise RuntimeError("async failure")

    good = Transcript()
    flaky = Flaky()
    handle = tokenwire.generate(
        Scripted(["a", "b", "c"]),
        "hi",
        observers=[flaky, async_flaky, good],
        on_observer_error=lambda obs, ev, exc: reports.append((obs, ev.type if ev else None, str(exc))),
    )
    terminal = await handle.wait()
    assert terminal.type == "done"
    assert good.types == ["start", "text.delta", "text.delta", "text.delta", "done"]
    assert reports == [(async_flaky, "start", "async failure"), (flaky, "text.delta", "bad delta a")]
    assert handle._dispatcher.failures == 4  # three deltas + one start; only the first of each reported


async def test_default_hook_logs(caplog: pytest.LogCaptureFixture) -> None:
    def boom(e: Event) -> None:
        raise ValueError("nope")

    await tokenwire.generate(Scripted(["a"]), "hi", observers=[boom]).wait()
    assert len(caplog.records) == 1
    assert "failed on start event seq 0" in caplog.records[0].getMessage()


async def test_strict_turns_an_observer_failure_into_a_stream_error() -> None:
    t = Transcript()

    def boom(e: Event) -> None:
        if isinstance(e, TextDelta) and e.text == "b":
            raise ValueError("renderer crashed")

    provider = Scripted(["a", "b", "c", "d"])
    await tokenwire.generate(provider, "hi", observers=[boom, t], strict=True).wait()
    assert_transcript(
        t.events,
        ["start", "text.delta", {"type": "text.delta", "text": "b"}, {"type": "error", "code": "observer_failed"}],
    )
    assert "renderer crashed" in t.events[-1].message
    assert provider.closed == 1


async def test_strict_with_async_observer_mid_stall() -> None:
    t = Transcript()

    async def boom(e: Event) -> None:
        if e.type == "text.delta":
            raise ValueError("x")

    await asyncio.wait_for(
        tokenwire.generate(Scripted(["a", Stall()]), "hi", observers=[t, boom], strict=True).wait(), 2
    )
    assert_transcript(t.events, ["start", "text.delta", {"type": "error", "source": "internal"}])


# -- queued delivery -----------------------------------------------------------------------------


async def test_queued_observer_does_not_slow_the_producer() -> None:
    slow_seen: list[str] = []
    gate, ended = asyncio.Event(), asyncio.Event()

    async def slow(e: Event) -> None:
        await gate.wait()  # held until the producer has finished: no timing involved
        slow_seen.append(e.type)

    def end(e: Event) -> None:
        if e.type == "done":
            ended.set()

    fast = Transcript()
    observers = [tokenwire.queued(slow, maxsize=10), fast, end]
    handle = tokenwire.generate(Scripted(["a", "b", "c"]), "hi", observers=observers)
    # The producer and the fast inline observer reach the terminal while the queued one is held ...
    await asyncio.wait_for(ended.wait(), 30)
    assert fast.types[-1] == "done" and slow_seen == [] and not handle.done()
    # ... and wait() returns only once the queued observer drained: no task outlives the stream.
    gate.set()
    await handle.wait()
    assert slow_seen == ["start", "text.delta", "text.delta", "text.delta", "done"]


async def test_queued_block_policy_keeps_every_event() -> None:
    seen: list[Event] = []

    async def slow(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e)

    items = [str(i) for i in range(200)]
    await tokenwire.generate(Scripted(items), "hi", observers=[tokenwire.queued(slow, maxsize=4)]).wait()
    assert [e.seq for e in seen] == list(range(202))


async def test_queued_drop_oldest_keeps_the_newest() -> None:
    seen: list[Event] = []
    gate = asyncio.Event()

    async def stuck_then_fast(e: Event) -> None:
        await gate.wait()
        seen.append(e)

    handle = tokenwire.generate(
        Scripted([str(i) for i in range(50)]),
        "hi",
        observers=[tokenwire.queued(stuck_then_fast, maxsize=5, overflow="drop_oldest")],
    )
    await asyncio.sleep(0.01)
    gate.set()
    await handle.wait()
    assert seen[-1].type == "done"
    assert len(seen) <= 7  # the one being handled when the gate closed + the queue + the terminal
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert seen[-2].seq == 50  # the newest delta survived


async def test_queued_coalesce_merges_text_and_never_drops_tool_or_terminal_events() -> None:
    seen: list[Event] = []
    gate = asyncio.Event()

    async def ui(e: Event) -> None:
        await gate.wait()
        seen.append(e)

    items: list[Any] = [
        *"hello ",
        ToolCall(call_id="c", name="n", args={}),
        *"world",
        ReasoningDelta("r1"),
        ReasoningDelta("r2"),
    ]
    handle = tokenwire.generate(Scripted(items), "hi", observers=[tokenwire.queued(ui, maxsize=3, overflow="coalesce")])
    await asyncio.sleep(0.01)
    gate.set()
    await handle.wait()
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text == "hello world"
    assert [e.type for e in seen if e.type not in ("text.delta", "reasoning.delta")] == ["start", "tool_call", "done"]
    assert "".join(e.text for e in seen if isinstance(e, ReasoningDelta)) == "r1r2"
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert len(seen) < len(items) + 2


async def test_queued_disconnect_detaches_and_reports_overflow() -> None:
    reports: list[BaseException] = []
    seen: list[Event] = []
    gate = asyncio.Event()

    async def stuck(e: Event) -> None:
        await gate.wait()
        seen.append(e)

    other = Transcript()
    handle = tokenwire.generate(
        Scripted([str(i) for i in range(20)]),
        "hi",
        observers=[tokenwire.queued(stuck, maxsize=3, overflow="disconnect"), other],
        on_observer_error=lambda o, ev, exc: reports.append(exc),
    )
    await asyncio.sleep(0.01)
    gate.set()
    await handle.wait()
    assert len(other) == 22  # the others were not slowed or affected
    assert len(reports) == 1 and isinstance(reports[0], tokenwire.errors.ObserverOverflow)
    assert "resume from the event log" in str(reports[0])
    assert len(seen) <= 1 and all(e.type != "done" for e in seen)


async def test_event_iterator_with_disconnect_raises_overflow() -> None:
    it = tokenwire.EventIterator(maxsize=2, overflow="disconnect")
    tokenwire.generate(Scripted(["a", "b", "c", "d"]), "hi", observers=[it])
    with pytest.raises(tokenwire.errors.ObserverOverflow):
        async for _ in it:
            pass


def test_queue_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="overflow must be one of"):
        tokenwire.queued(print, overflow="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        tokenwire.EventIterator(maxsize=0)


async def test_stuck_queued_observer_is_cancelled_after_the_drain_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def forever(e: Event) -> None:
        await asyncio.Event().wait()

    dispatcher = tokenwire.consumers.observers.Dispatcher([tokenwire.queued(forever)], drain_timeout_s=0.05)
    writer = tokenwire.MemoryLog().open("s")
    dispatcher.attach(writer)
    writer.append(Start(model="m", stream_id="s", seq=0))
    await asyncio.sleep(0)
    await dispatcher.aclose()
    assert "did not drain" in caplog.text
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


# -- observe(): the bridge from any async iterable -----------------------------------------------


async def test_observe_dedupes_by_seq_and_returns_the_terminal() -> None:
    events: list[Event] = [
        Start(model="m", stream_id="s", seq=0),
        TextDelta("a", stream_id="s", seq=1),
        TextDelta("a", stream_id="s", seq=1),  # a resumed source repeats what it sent
        Start(model="m", stream_id="s", seq=0),
        TextDelta("b", stream_id="s", seq=2),
        Done(stream_id="s", seq=3),
        TextDelta("after the end", stream_id="s", seq=4),
    ]

    async def source() -> Any:
        for e in events:
            yield e

    t = Transcript()
    terminal = await tokenwire.observe(source(), t)
    assert t.types == ["start", "text.delta", "text.delta", "done"]
    assert terminal is not None and terminal.seq == 3


async def test_observe_strict_raises_and_truncated_source_returns_none() -> None:
    async def source() -> Any:
        yield Start(model="m", seq=0)
        yield TextDelta("a", seq=1)

    def boom(e: Event) -> None:
        if e.type == "text.delta":
            raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        await tokenwire.observe(source(), boom, strict=True)
    assert await tokenwire.observe(source(), lambda e: None) is None


async def test_observe_a_live_stream_from_the_log() -> None:
    handle = tokenwire.generate(Scripted(["x", Delay(0.01), "y"]), "hi")
    t = Transcript()
    terminal = await tokenwire.observe(handle.events(), tokenwire.queued(t))
    assert t.text == "xy" and terminal is not None and terminal.type == "done"


# -- observers cannot hang or hijack a stream ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_observer_raising_cancelled_error_is_isolated_like_any_failure(kind: str) -> None:
    reports: list[BaseException] = []
    after = Transcript()

    def sync_obs(e: Event) -> None:
        if e.type == "text.delta":
            raise asyncio.CancelledError("observer bug")

    async def async_obs(e: Event) -> None:
        await asyncio.sleep(0)
        if e.type == "text.delta":
            raise asyncio.CancelledError("observer bug")

    handle = tokenwire.generate(
        Scripted(["a", "b", "c"]),
        "hi",
        observers=[sync_obs if kind == "sync" else async_obs, after],
        on_observer_error=lambda o, ev, exc: reports.append(exc),
    )
    terminal = await handle.wait()  # the caller was never cancelled: wait() must not raise
    assert terminal.type == "done" and terminal.finish_reason == "stop"
    assert_transcript(after.events, ["start", "text.delta", "text.delta", "text.delta", "done"])
    assert len(reports) == 1 and isinstance(reports[0], asyncio.CancelledError)


async def test_an_observer_blocking_on_the_terminal_cannot_hang_the_stream() -> None:
    reports: list[tuple[Event | None, BaseException]] = []
    after = Transcript()

    async def stuck_on_done(e: Event) -> None:
        if e.type == "done":
            await asyncio.Event().wait()  # never returns

    handle = tokenwire.generate(
        Scripted(["a"]),
        "hi",
        observers=[stuck_on_done, after],
        on_observer_error=lambda o, ev, exc: reports.append((ev, exc)),
        drain_timeout_s=0.05,
    )
    terminal = await asyncio.wait_for(handle.wait(), 10)  # without the bound: forever
    assert terminal.type == "done"
    assert_transcript(after.events, ["start", "text.delta", "done"])  # the observer after it still got the end
    assert len(reports) == 1
    event, exc = reports[0]
    assert event is not None and event.type == "done" and isinstance(exc, TimeoutError)
    assert "did not return within 0.05 s" in str(exc)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_a_cancel_that_interrupts_a_delivery_still_ends_the_stream_within_the_drain_budget() -> None:
    """#30 item 1: two observers blocking on a delta; the limit interrupts the first, the finish
    step hands the delta to the second, which blocks too: the stream still ends, and both are
    reported."""
    reports: list[tuple[object, Event | None, BaseException]] = []

    async def blocks(ev: Event) -> None:
        if ev.type == "text.delta":
            await asyncio.Event().wait()

    async def blocks_too(ev: Event) -> None:
        if ev.type == "text.delta":
            await asyncio.Event().wait()

    handle = tokenwire.generate(
        Scripted(["a", "b"], interval_s=0.01),
        "x",
        observers=[blocks, blocks_too],
        on_observer_error=lambda o, ev, exc: reports.append((o, ev, exc)),
        drain_timeout_s=1,
        limits=tokenwire.Limits(max_duration_s=0.3),
    )
    terminal = await asyncio.wait_for(handle.wait(), 30)  # before the fix: never
    assert terminal.type == "error" and terminal.source == "limit"  # max_duration_s ended it
    assert {o for o, _, _ in reports} == {blocks, blocks_too}  # every stuck observer, once each
    assert all(isinstance(exc, TimeoutError) for _, _, exc in reports)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_one_observer_blocking_on_every_event_after_start_cannot_hang_a_cancelled_stream() -> None:
    reports: list[object] = []

    async def blocks(ev: Event) -> None:
        if ev.type != "start":
            await asyncio.Event().wait()

    handle = tokenwire.generate(
        Scripted(["a", "b"], interval_s=0.01),
        "x",
        observers=[blocks],
        on_observer_error=lambda o, ev, exc: reports.append(o),
        drain_timeout_s=1,
        limits=tokenwire.Limits(max_duration_s=0.3),
    )
    await asyncio.sleep(0.5)
    handle.cancel()
    terminal = await asyncio.wait_for(handle.wait(), 30)
    assert terminal.type == "error" and terminal.source == "limit" and reports == [blocks]


async def test_the_drain_budget_is_for_the_whole_end_not_per_observer() -> None:
    """#30 item 2: three observers stuck on done, plus a queued one that never drains: the end
    waits drain_timeout_s in all (it waited that long per observer), and reports each of them."""
    reports: list[object] = []

    def stuck_on_done() -> Any:
        async def observer(ev: Event) -> None:
            if ev.type == "done":
                await asyncio.Event().wait()

        return observer

    stuck = [stuck_on_done() for _ in range(3)]

    class NeverDrains:
        async def on_event(self, ev: Event) -> None:
            await asyncio.Event().wait()

    never = NeverDrains()
    loop = asyncio.get_running_loop()
    began = loop.time()
    handle = tokenwire.generate(
        Scripted(["a"]),
        "x",
        observers=[*stuck, tokenwire.queued(never)],
        on_observer_error=lambda o, ev, exc: reports.append(o),
        drain_timeout_s=2,
    )
    await asyncio.wait_for(handle.wait(), 60)
    elapsed = loop.time() - began
    assert sorted(map(id, reports)) == sorted(map(id, [*stuck, never]))  # each one reported once
    # Per stage or per observer it would be 4 x 2 s = 8 s; the budget is 2 s for the whole end.
    assert elapsed < 5, f"the end took {elapsed:.1f} s with drain_timeout_s=2"


async def test_a_queued_observer_that_raises_then_overflows_is_reported_once_as_itself() -> None:
    """#30 item 4: reported as the observer the user gave (not the Queued wrapper), once."""
    reports: list[tuple[object, BaseException]] = []
    gate = asyncio.Event()

    class Fails:
        def __init__(self) -> None:
            self.calls = 0

        async def on_event(self, ev: Event) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            if self.calls == 2:
                await gate.wait()  # then falls behind: disconnected (overflow)

    observer = Fails()
    handle = tokenwire.generate(
        Scripted([str(i) for i in range(50)], interval_s=0.01),
        "x",
        observers=[tokenwire.queued(observer, maxsize=2, overflow="disconnect")],
        on_observer_error=lambda o, ev, exc: reports.append((o, exc)),
    )
    await handle.wait()
    gate.set()
    await asyncio.sleep(0)
    assert [o for o, _ in reports] == [observer]
    assert isinstance(reports[0][1], RuntimeError)


def test_drain_timeout_must_be_positive() -> None:
    async def main() -> None:
        tokenwire.generate(Scripted([]), "hi", drain_timeout_s=0)

    with pytest.raises(ValueError, match="drain_timeout_s must be > 0"):
        asyncio.run(main())


def ended_at_append(flag: asyncio.Event) -> Any:
    """An inline observer that sets ``flag`` when the terminal event is appended."""
    return lambda ev: flag.set() if ev.type in ("done", "error") else None


async def test_coalesce_keeps_a_backlog_longer_than_the_log_retains() -> None:
    """#30 item 3: a stalled coalescing observer behind 3,000 deltas and a tool call, on a log
    that keeps 1,000 events: it still gets all 12,000 characters, the tool call and the end."""
    gate = asyncio.Event()
    seen: list[Event] = []
    reports: list[BaseException] = []

    async def stalled(ev: Event) -> None:
        await gate.wait()
        seen.append(ev)

    parts: list[Any] = ["abcd"] * 1500 + [ToolCall(call_id="c1", name="f", args={})] + ["abcd"] * 1500
    log = tokenwire.MemoryLog(max_events=1000)
    handle = tokenwire.generate(
        Scripted(parts),
        "x",
        log=log,
        observers=[tokenwire.queued(stalled, overflow="coalesce"), ended_at_append(produced := asyncio.Event())],
        on_observer_error=lambda o, ev, exc: reports.append(exc),
        drain_timeout_s=30,
    )
    await produced.wait()  # the producer ran far past the log's retention
    gate.set()
    await handle.wait()
    assert reports == []
    assert "".join(e.text for e in seen if isinstance(e, TextDelta)) == "abcd" * 3000
    assert [e.type for e in seen if e.type not in ("text.delta",)] == ["start", "tool_call", "done"]
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


async def test_coalesce_reports_what_it_cannot_merge_past_its_bound_instead_of_losing_it() -> None:
    gate = asyncio.Event()
    reports: list[BaseException] = []

    async def stalled(ev: Event) -> None:
        await gate.wait()

    parts: list[Any] = [x for i in range(30) for x in ("ab", ToolCall(call_id=f"c{i}", name="f", args={}))]
    handle = tokenwire.generate(
        Scripted(parts),
        "x",
        log=tokenwire.MemoryLog(max_events=8),
        observers=[
            tokenwire.queued(stalled, maxsize=4, overflow="coalesce"),
            ended_at_append(produced := asyncio.Event()),
        ],
        on_observer_error=lambda o, ev, exc: reports.append(exc),
        drain_timeout_s=30,
    )
    await produced.wait()
    gate.set()
    await handle.wait()
    assert len(reports) == 1 and isinstance(reports[0], tokenwire.errors.ObserverOverflow)
