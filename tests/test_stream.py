"""The engine: lifecycle guarantees, cancellation, provider failures and limits."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import tokenwire
from conftest import other_tasks
from tokenwire.core.request import Request
from tokenwire.events import Done, Error, ReasoningDelta, Step, TextDelta, ToolCall, ToolCallDelta, ToolCallStart, Usage
from tokenwire.providers import Delay, Scripted, Stall
from tokenwire.testing import Transcript, assert_transcript

Factory = Callable[..., Scripted]


def check_lifecycle(events: list[tokenwire.Event]) -> None:
    assert events[0].type == "start"
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
    assert len({e.stream_id for e in events}) == 1
    assert events[-1].type in ("done", "error")
    assert sum(e.type in ("done", "error") for e in events) == 1


async def test_happy_path_transcript(scripted: Factory) -> None:
    t = Transcript()
    provider = scripted(
        [
            ReasoningDelta("think"),
            "Hel",
            "lo",
            ToolCallStart(call_id="c1", name="clock"),
            ToolCallDelta(call_id="c1", args_delta="{}"),
            ToolCall(call_id="c1", name="clock", args={}),
            Step(name="turn", status="finished"),
            Usage(input_tokens=5, output_tokens=4),
        ]
    )
    handle = tokenwire.generate(provider, "hi", observers=[t], meta={"user": "u1"}, request_id="req-1")
    terminal = await handle.wait()
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "scripted", "request_id": "req-1", "meta": {"user": "u1"}, "seq": 0},
            {"type": "reasoning.delta", "text": "think"},
            {"type": "text.delta", "text": "Hel", "seq": 2},
            {"type": "text.delta", "text": "lo"},
            {"type": "tool_call.start", "call_id": "c1", "name": "clock"},
            {"type": "tool_call.delta", "call_id": "c1", "args_delta": "{}"},
            {"type": "tool_call", "call_id": "c1", "args": {}},
            {"type": "step", "name": "turn", "status": "finished"},
            {"type": "usage", "input_tokens": 5, "output_tokens": 4},
            {"type": "done", "finish_reason": "tool_calls", "usage": {"input_tokens": 5, "output_tokens": 4}},
        ],
    )
    check_lifecycle(t.events)
    assert terminal == t.events[-1]
    result = handle.result()
    assert (result.text, result.reasoning, result.finish_reason) == ("Hello", "think", "tool_calls")
    assert [c.call_id for c in result.tool_calls] == ["c1"]
    assert result.usage == tokenwire.events.TokenUsage(5, 4)
    assert terminal.stats.output_tokens == 4 and terminal.stats.ttft_s is not None
    assert result.stream_id == handle.stream_id == t.events[0].stream_id
    assert handle.done() and not other_tasks()


async def test_stats_measure_gaps_and_stalls() -> None:
    handle = tokenwire.generate(Scripted(["a", Delay(0.08), "b", "c"]), "hi", limits=tokenwire.Limits(stall_gap_s=0.05))
    done = await handle.wait()
    assert isinstance(done, Done)
    stats = done.stats
    assert 0.07 <= stats.max_gap_s < 1
    assert stats.stalls == 1
    assert stats.output_tokens == 3
    assert stats.duration_s >= stats.max_gap_s
    assert stats.tokens_per_s > 0


async def test_await_handle_returns_response() -> None:
    response = await tokenwire.generate(Scripted(["4", "2"]), "q")
    assert response.text == "42" and response.ok and response.raise_for_error() is response


async def test_provider_exception_becomes_error_with_partial_output(scripted: Factory) -> None:
    t = Transcript()
    handle = tokenwire.generate(scripted(["par", "tial", ValueError("upstream broke")]), "hi", observers=[t])
    terminal = await handle.wait()
    assert_transcript(
        t.events,
        [
            "start",
            "text.delta",
            "text.delta",
            {"type": "error", "source": "provider", "code": "provider_error", "retryable": False},
        ],
    )
    assert isinstance(terminal, Error) and "ValueError: upstream broke" in terminal.message
    result = handle.result()
    assert result.text == "partial" and result.error == terminal and not result.ok
    with pytest.raises(tokenwire.StreamFailed, match="provider/provider_error"):
        result.raise_for_error()


async def test_provider_error_supplies_code_and_retryable() -> None:
    err = tokenwire.ProviderError("slow down", code="rate_limited", retryable=True)
    terminal = await tokenwire.generate(Scripted([err]), "hi").wait()
    assert isinstance(terminal, Error)
    assert (terminal.code, terminal.retryable, terminal.source, terminal.message) == (
        "rate_limited",
        True,
        "provider",
        "slow down",
    )


async def test_provider_reports_its_own_terminal(scripted: Factory) -> None:
    """A provider's Done/Error part ends the stream; the engine stamps it and closes the provider."""
    t = Transcript()
    provider = scripted(["a", Done(finish_reason="length", usage=tokenwire.events.TokenUsage(1, 1)), "never"])
    await tokenwire.generate(provider, "hi", observers=[t]).wait()
    assert_transcript(t.events, ["start", "text.delta", {"type": "done", "finish_reason": "length", "seq": 2}])
    assert t.events[-1].usage == tokenwire.events.TokenUsage(1, 1)

    t2 = Transcript()
    overloaded = Error(code="overloaded_error", message="Overloaded", retryable=True, source="provider")
    await tokenwire.generate(scripted(["a", overloaded, "never"]), "hi", observers=[t2]).wait()
    assert_transcript(t2.events, ["start", "text.delta", {"type": "error", "code": "overloaded_error", "seq": 2}])


async def test_bad_provider_output_is_an_error_not_a_crash(scripted: Factory) -> None:
    for bad in (42, tokenwire.events.Start(model="x")):

        class Bad:
            model = "bad"

            async def stream(self, request: Request, bad: object = bad) -> AsyncIterator[object]:
                yield "ok"
                yield bad

        t = Transcript()
        await tokenwire.generate(Bad(), "hi", observers=[t]).wait()  # type: ignore[arg-type]
        assert_transcript(t.events, ["start", "text.delta", {"type": "error", "code": "bad_provider_output"}])


async def test_cancel_is_fast_closes_provider_and_ends_with_cancelled(scripted: Factory) -> None:
    t = Transcript()
    provider = scripted(["a", Stall()])
    handle = tokenwire.generate(provider, "hi", observers=[t])
    await asyncio.sleep(0.05)
    handle.cancel("user pressed stop")
    handle.cancel("twice is fine")
    # The provider is stalled for good: only an interrupting cancel can end it (no time bound needed).
    terminal = await asyncio.wait_for(handle.wait(), 10)
    assert_transcript(
        t.events, ["start", "text.delta", {"type": "done", "finish_reason": "cancelled", "reason": "user pressed stop"}]
    )
    assert terminal.type == "done"
    assert provider.closed == provider.started == 1
    assert not other_tasks()


async def test_cancel_before_the_run_starts_still_gives_start_and_terminal(scripted: Factory) -> None:
    provider = scripted(["a"])
    t = Transcript()
    handle = tokenwire.generate(provider, "hi", observers=[t])
    handle.cancel("changed my mind")
    await handle.wait()
    assert_transcript(t.events, ["start", {"type": "done", "finish_reason": "cancelled"}])
    assert provider.started == 0


async def test_cancel_from_another_thread(scripted: Factory) -> None:
    handle = tokenwire.generate(scripted([Stall()]), "hi")
    await asyncio.sleep(0.01)
    threading.Thread(target=handle.cancel, args=("from a thread",)).start()
    terminal = await asyncio.wait_for(handle.wait(), 1)
    assert isinstance(terminal, Done) and terminal.reason == "from a thread"


async def test_cancelling_a_waiter_does_not_cancel_the_stream() -> None:
    handle = tokenwire.generate(Scripted(["a", Delay(0.05), "b"]), "hi")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handle.wait(), 0.01)
    assert (await handle).text == "ab"


@pytest.mark.parametrize(
    ("items", "limits", "code"),
    [
        (["a", Stall()], tokenwire.Limits(max_duration_s=0.05), "timeout"),
        ([Stall()], tokenwire.Limits(first_token_timeout_s=0.05), "first_token_timeout"),
        (["a", Stall()], tokenwire.Limits(stall_timeout_s=0.05), "stalled"),
        ([Stall()], tokenwire.Limits(stall_timeout_s=0.05), "stalled"),
        (["a", Stall()], tokenwire.Limits(first_token_timeout_s=5, stall_timeout_s=0.05), "stalled"),
    ],
)
async def test_limits_end_the_stream_with_a_limit_error(
    scripted: Factory, items: list[object], limits: tokenwire.Limits, code: str
) -> None:
    t = Transcript()
    provider = scripted(items)
    # Stalled providers: without the limit firing these would never end.
    terminal = await asyncio.wait_for(tokenwire.generate(provider, "hi", observers=[t], limits=limits).wait(), 10)
    assert isinstance(terminal, Error)
    assert (terminal.source, terminal.code, terminal.retryable) == ("limit", code, True)
    check_lifecycle(t.events)
    assert provider.closed == 1


async def test_slow_but_steady_stream_is_not_stalled() -> None:
    items: list[object] = []
    for word in ["one", "two", "three", "four", "five", "six"]:
        items += [word, Delay(0.02)]
    limits = tokenwire.Limits(stall_timeout_s=0.05, first_token_timeout_s=0.05)
    response = await tokenwire.generate(Scripted(items), "hi", limits=limits)  # type: ignore[arg-type]
    assert response.finish_reason == "stop" and response.text == "onetwothreefourfivesix"


async def test_first_token_timeout_does_not_fire_after_first_token() -> None:
    response = await tokenwire.generate(
        Scripted(["a", Delay(0.08), "b"]), "hi", limits=tokenwire.Limits(first_token_timeout_s=0.05)
    )
    assert response.finish_reason == "stop"


async def test_max_output_tokens_ends_with_length(scripted: Factory) -> None:
    t = Transcript()
    provider = scripted(["a", "b", "c", "d"])
    handle = tokenwire.generate(provider, "hi", observers=[t], limits=tokenwire.Limits(max_output_tokens=2))
    await handle.wait()
    assert_transcript(t.events, ["start", "text.delta", "text.delta", {"type": "done", "finish_reason": "length"}])
    assert provider.last_request is not None and provider.last_request.max_tokens == 2
    assert provider.closed == 1


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match=r"Limits\.stall_timeout_s must be > 0"):
        tokenwire.Limits(stall_timeout_s=0)


async def test_stream_context_iterates_every_event_and_cancels_on_exit(scripted: Factory) -> None:
    provider = scripted(["a", "b", Stall()])
    async with tokenwire.stream(provider, "hi") as s:
        seen = []
        async for event in s:
            seen.append(event.type)
            if len(seen) == 3:
                break
    assert seen == ["start", "text.delta", "text.delta"]
    assert s.result().finish_reason == "cancelled"
    assert provider.closed == 1 and not other_tasks()


async def test_stream_iterator_applies_backpressure() -> None:
    """1,000 instant deltas through a 16-slot iterator: nothing lost, the producer waited."""
    items = [str(i % 10) for i in range(1000)]
    async with tokenwire.stream(Scripted(items), "hi", maxsize=16) as s:
        texts = [e.text async for e in s if isinstance(e, TextDelta)]
    assert "".join(texts) == "".join(items)


async def test_stream_body_exception_propagates_and_cleans_up(scripted: Factory) -> None:
    provider = scripted([Stall()])
    with pytest.raises(KeyError):
        async with tokenwire.stream(provider, "hi") as s:
            async for _ in s:
                await asyncio.sleep(0.01)
                raise KeyError("app bug")
    assert provider.started == provider.closed == 1 and not other_tasks()
    assert s.result().finish_reason == "cancelled"


async def test_late_subscriber_reads_the_log_from_seq_zero() -> None:
    handle = tokenwire.generate(Scripted(["a", Delay(0.02), "b"]), "hi")
    await asyncio.sleep(0.01)
    live = [e.type async for e in handle]
    again = [e.seq async for e in handle.events(from_seq=2)]
    assert live == ["start", "text.delta", "text.delta", "done"]
    assert again == [2, 3]


async def test_shared_log_holds_many_streams() -> None:
    log = tokenwire.MemoryLog()
    h1 = tokenwire.generate(Scripted(["one"]), "a", log=log)
    h2 = tokenwire.generate(Scripted(["two"]), "b", log=log)
    await h1.wait()
    await h2.wait()
    assert [e.type async for e in log.read(h1.stream_id)] == ["start", "text.delta", "done"]
    texts = [e.text async for e in log.read(h2.stream_id) if isinstance(e, TextDelta)]
    assert texts == ["two"]


async def test_generate_rejects_what_is_not_a_provider() -> None:
    with pytest.raises(TypeError, match="is not a provider"):
        tokenwire.generate(object(), "hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"request must be a str prompt or a tokenwire\.Request"):
        tokenwire.generate(Scripted([]), 42)  # type: ignore[arg-type]


def test_generate_without_a_loop_says_what_to_use() -> None:
    with pytest.raises(RuntimeError, match="stream_sync"):
        tokenwire.generate(Scripted([]), "hi")


def test_stream_sync_yields_the_transcript(no_thread_leaks: None) -> None:
    events = list(tokenwire.stream_sync(Scripted(["Hi", "!"]), "hello"))
    assert_transcript(events, ["start", {"type": "text.delta", "text": "Hi"}, "text.delta", "done"])
    check_lifecycle(events)


def test_stream_sync_break_cancels_and_joins(no_thread_leaks: None) -> None:
    provider = Scripted(["a", Stall()])
    with tokenwire.stream_sync(provider, "hi") as events:
        for event in events:
            if event.type == "text.delta":
                break
    assert events.result().finish_reason == "cancelled"
    assert provider.closed == 1


def test_stream_sync_cancel_then_drain(no_thread_leaks: None) -> None:
    with tokenwire.stream_sync(Scripted(["a", Stall()]), "hi") as events:
        seen = []
        for event in events:
            seen.append(event.type)
            if event.type == "text.delta":
                events.cancel("enough")
    assert seen == ["start", "text.delta", "done"]


async def test_stream_sync_works_inside_a_running_loop(no_thread_leaks: None) -> None:
    """Jupyter runs user code inside an event loop; sync iteration must still work there."""
    response = tokenwire.run_sync(Scripted(["in", " loop"]), "hi")
    assert response.text == "in loop"


EXIT_WITH_OPEN_SYNC_STREAM = """
import sys, tokenwire
from tokenwire.providers import Scripted
from tokenwire.testing import Transcript
provider = Scripted(["w "] * 3000, interval_s=0.01)
events = iter(tokenwire.stream_sync(provider, "hi", observers=[Transcript(sys.argv[1])]))
next(events), next(events)
print("leaving", flush=True)
"""


def test_a_script_exiting_with_a_sync_stream_open_ends_the_stream_and_exits(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_OPEN_SYNC_STREAM, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 15  # the script would stream for 30 s; before the fix it hung for good
    assert_transcript(
        Transcript.load(path).events,
        ["start", "text.delta", ..., {"type": "done", "finish_reason": "cancelled", "reason": "sync iterator closed"}],
    )


def test_run_sync_with_limits(no_thread_leaks: None) -> None:
    response = tokenwire.run_sync(Scripted(["a", Stall()]), "hi", limits=tokenwire.Limits(stall_timeout_s=0.05))
    assert response.error is not None and response.error.code == "stalled" and response.text == "a"


async def test_a_provider_that_never_awaits_does_not_hold_the_event_loop() -> None:
    """Other streams and connections keep flowing while a replay-like provider streams."""

    class NeverAwaits:
        model = "fast"

        async def stream(self, request: object) -> AsyncIterator[str]:
            for _ in range(20_000):
                yield "t"

    ticks = 0
    ticks_seen_mid_stream: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def observer(event: tokenwire.Event) -> None:
        if event.seq == 10_000:
            ticks_seen_mid_stream.append(ticks)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await tokenwire.generate(NeverAwaits(), "hi", observers=[observer]).wait()
    tick.cancel()
    # Without yielding, the ticker would not run at all between seq 1 and the end.
    assert ticks_seen_mid_stream and ticks_seen_mid_stream[0] >= 10_000 // 256 - 1


def test_a_wrapper_holding_its_model_in_model_starts_with_that_model_s_name() -> None:
    """A provider wrapper that keeps the wrapped provider in ``.model`` (a common shape) used to put
    the object into ``start.model``, which no observer could encode."""

    class Wrapper:
        def __init__(self, inner: Scripted):
            self.model = inner

        async def stream(self, request: Request) -> AsyncIterator[object]:
            async for part in self.model.stream(request):
                yield part

    t = Transcript()
    tokenwire.run_sync(Wrapper(Scripted(["a"], model="inner-name")), "x", observers=[t])
    assert t.events[0].model == "inner-name"
    assert tokenwire.events.decode(tokenwire.events.encode(t.events[0])) == t.events[0]
