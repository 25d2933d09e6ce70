"""The lifecycle core under generated clocks: no sleeping, every rule and every blame checked.

Hypothesis drives :class:`tokenwire.core.lifecycle.Lifecycle` with random operations at random,
non-decreasing (and sometimes backwards) times, the way the engine would: feed parts, deliver
them (sometimes slowly), tick at arbitrary moments, cancel or fail. The properties say what a
stream is (gapless seq from 0, monotonic ts, one terminal, nothing after it) and, above all,
which layer a terminal blames: ``stalled`` only when the *provider* was awaited for the whole
window, never while a consumer held the delivery.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.core.lifecycle import Lifecycle
from tokenwire.events import Done, Error, Event, ReasoningDelta, TextDelta, ToolCall, ToolCallStart, Usage
from tokenwire.providers import Scripted

parts = st.one_of(
    st.text(min_size=1, max_size=3),
    st.builds(ReasoningDelta, st.text(max_size=3)),
    st.builds(lambda i: ToolCallStart(call_id=f"c{i}", name="t"), st.integers(0, 3)),
    st.builds(lambda i: ToolCall(call_id=f"c{i}", name="t", args={}), st.integers(0, 3)),
    st.builds(Usage, st.integers(0, 9), st.integers(0, 9)),
    st.just(Done(finish_reason="stop")),
    st.just(Error(code="upstream", message="x", source="provider")),
    st.just(42),  # not a part
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("part"), parts, st.floats(0, 3), st.floats(0, 3)),  # feed after dt, deliver after dt2
        st.tuples(st.just("tick"), st.floats(0, 6)),
        st.tuples(st.just("cancel"), st.floats(0, 1)),
        st.tuples(st.just("fail"), st.floats(0, 1)),
        st.tuples(st.just("clock_back"), st.floats(0, 5)),
    ),
    max_size=40,
)
limit_values = st.one_of(st.none(), st.floats(0.5, 5))


@dataclass
class Trace:
    """What the simulated engine saw, to check the blame of the terminal against."""

    events: list[Event] = field(default_factory=list)
    awaiting_provider_since: float | None = None  # None while a delivery is in progress
    first_token_at: float | None = None
    asked_first_at: float | None = None


@settings(max_examples=400, deadline=None)
@given(
    script=ops,
    stall=limit_values,
    first=limit_values,
    duration=st.one_of(st.none(), st.floats(1, 20)),
    cap=st.one_of(st.none(), st.integers(1, 6)),
)
def test_lifecycle_rules_and_blame(
    script: list[tuple[Any, ...]], stall: float | None, first: float | None, duration: float | None, cap: int | None
) -> None:
    limits = tokenwire.Limits(
        stall_timeout_s=stall, first_token_timeout_s=first, max_duration_s=duration, max_output_tokens=cap
    )
    t0 = 1000.0
    now = t0
    core = Lifecycle("s", model="m", now=now, limits=limits)
    trace = Trace()
    trace.events.append(core.start())
    core.delivered(now)
    trace.awaiting_provider_since = trace.asked_first_at = now
    deltas = 0

    def check_tick(at: float) -> None:
        stopped_before = core.stop is not None
        if core.tick(at) and not stopped_before:
            stop = core.stop
            assert isinstance(stop, Error) and stop.source == "limit"
            if stop.code == "timeout":
                assert duration is not None and at >= t0 + duration
            elif stop.code == "first_token_timeout":
                assert first is not None and trace.first_token_at is None
                assert trace.asked_first_at is not None and at >= trace.asked_first_at + first
            else:
                # The blame that matters: a stall is the provider idle for the whole window, while
                # the engine awaited it; never a delivery in progress, never before the first token
                # while the first-token limit governs.
                assert stop.code == "stalled"
                assert stall is not None and trace.awaiting_provider_since is not None
                assert at >= trace.awaiting_provider_since + stall
                assert first is None or trace.first_token_at is not None

    for op in script:
        if core.stop is not None:
            break
        kind = op[0]
        if kind == "part":
            _, part, dt, dt_deliver = op
            now += dt
            check_tick(now)  # the timer may fire right before the part arrives
            if core.stop is not None:
                break
            event = core.feed(part, now)
            if event is None:
                assert core.stop is not None  # the provider's own end, or a bad part
                break
            trace.events.append(event)
            if isinstance(event, TextDelta | ReasoningDelta) or event.type == "tool_call.delta":
                deltas += 1
            if trace.first_token_at is None and event.type in ("text.delta", "reasoning.delta", "tool_call.start"):
                trace.first_token_at = now
            trace.awaiting_provider_since = None  # a (possibly slow) consumer holds the delivery
            check_tick(now + dt_deliver)  # a timer firing during the delivery never blames the provider
            now += dt_deliver
            core.delivered(now)
            trace.awaiting_provider_since = now
        elif kind == "tick":
            check_tick(now + op[1])
        elif kind == "cancel":
            core.cancel("test")
        elif kind == "fail":
            core.fail("boom", "operator", source="internal")
        elif kind == "clock_back":
            now -= op[1]  # a wall clock stepping back: ts must not follow it
            trace.awaiting_provider_since = min(trace.awaiting_provider_since or now, now)
    terminal = core.finish(now)
    assert core.finish(now + 1) is terminal, "one terminal, the same on every call"
    assert core.feed("late", now + 2) is None, "nothing after the terminal"
    trace.events.append(terminal)

    events = trace.events
    assert [e.seq for e in events] == list(range(len(events))), "seq gapless from 0"
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events)), "ts never goes backwards"
    assert [e.type for e in events].count("done") + [e.type for e in events].count("error") == 1
    if isinstance(terminal, Done) and terminal.finish_reason == "length":
        assert cap is not None and deltas >= cap
    if cap is not None and deltas > cap:
        raise AssertionError(f"{deltas} deltas passed a cap of {cap}")
    response = core.builder.build()
    assert response.text == "".join(e.text for e in events if isinstance(e, TextDelta))
    assert response.stats is not None and response.stats.duration_s >= 0


def test_the_deadline_follows_the_provider_not_the_consumer() -> None:
    core = Lifecycle("s", model="m", now=0.0, limits=tokenwire.Limits(stall_timeout_s=2.0))
    core.start()
    core.delivered(0.0)
    assert core.deadline == 2.0
    core.feed("a", 1.0)
    assert core.deadline is None  # delivering: no stall can fire
    assert not core.tick(100.0)  # however long the consumer takes
    core.delivered(100.0)
    assert core.deadline == 102.0
    assert not core.tick(101.9)
    assert core.tick(102.0) and isinstance(core.stop, Error) and core.stop.code == "stalled"


def test_first_token_limit_counts_from_the_first_ask_then_hands_over_to_stall() -> None:
    core = Lifecycle("s", model="m", now=0.0, limits=tokenwire.Limits(first_token_timeout_s=10, stall_timeout_s=1))
    core.start()
    assert not core.tick(50.0)  # start is still being delivered: the provider was not asked yet
    core.delivered(50.0)
    assert core.deadline == 60.0
    assert not core.tick(55.0)  # before the first token the stall limit does not apply
    core.feed("a", 59.0)
    assert core.delivered(59.0) is True  # the deadline moved earlier: the engine re-arms
    assert core.deadline == 60.0
    assert core.tick(60.0) and isinstance(core.stop, Error) and core.stop.code == "stalled"


def test_an_error_during_the_capped_delta_wins_over_the_cap() -> None:
    core = Lifecycle("s", model="m", now=0.0, limits=tokenwire.Limits(max_output_tokens=1))
    core.start()
    core.delivered(0.0)
    core.feed("a", 1.0)
    core.fail("observer_failed", "strict observer raised")  # while the capped delta is delivered
    core.delivered(1.0)
    terminal = core.finish(2.0)
    assert isinstance(terminal, Error) and terminal.code == "observer_failed"


async def test_a_paused_reader_is_never_reported_as_a_stalled_provider() -> None:
    """The engine end to end: a reader that holds a full block cursor far longer than the stall
    timeout; the provider is instantaneous, so the stream must end normally."""
    items = [str(i) for i in range(8)]
    async with tokenwire.stream(Scripted(items), "hi", maxsize=1, limits=tokenwire.Limits(stall_timeout_s=0.02)) as s:
        seen = []
        async for event in s:
            seen.append(event)
            await asyncio.sleep(0.05)  # 2.5 stall windows per event: backpressure, not a stall
    assert seen[-1].type == "done" and seen[-1].finish_reason == "stop"
    assert "".join(e.text for e in seen if isinstance(e, TextDelta)) == "".join(items)


async def test_a_slow_async_observer_is_never_reported_as_a_stalled_provider() -> None:
    async def slow(event: Event) -> None:
        await asyncio.sleep(0.05)

    handle = tokenwire.generate(
        Scripted(["a", "b", "c"]), "hi", observers=[slow], limits=tokenwire.Limits(stall_timeout_s=0.02)
    )
    terminal = await handle.wait()
    assert terminal.type == "done" and terminal.finish_reason == "stop"


async def test_a_provider_idle_past_the_window_is_reported_as_stalled() -> None:
    from tokenwire.providers import Stall

    handle = tokenwire.generate(Scripted(["a", Stall()]), "hi", limits=tokenwire.Limits(stall_timeout_s=0.02))
    terminal = await handle.wait()
    assert isinstance(terminal, Error) and terminal.code == "stalled" and terminal.source == "limit"
