"""Lifecycle invariants under random providers, cancels, limits, observer failures and policies."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.events import TERMINAL_TYPES, Event, ReasoningDelta, TextDelta, ToolCall
from tokenwire.providers import Delay, Scripted, Stall

items = st.lists(
    st.one_of(
        st.text(max_size=5),
        st.builds(ReasoningDelta, st.text(max_size=5)),
        st.builds(lambda i: ToolCall(call_id=f"c{i}", name="t", args={"i": i}), st.integers(0, 9)),
        st.builds(Delay, st.floats(0, 0.003)),
        st.just(Stall()),
        st.builds(RuntimeError, st.text(max_size=5)),
    ),
    max_size=30,
)
policies = st.sampled_from(["inline", "block", "drop_oldest", "coalesce", "disconnect", "iterator"])


class Checker:
    """Inline observer that fails at chosen seqs and checks ordering as it goes."""

    def __init__(self, fail_at: set[int]):
        self.events: list[Event] = []
        self.fail_at = fail_at

    def on_event(self, e: Event) -> None:
        self.events.append(e)
        if e.seq in self.fail_at:
            raise ValueError(f"observer failure at {e.seq}")


def check_invariants(events: list[Event]) -> None:
    assert events, "no events"
    assert events[0].type == "start"
    assert [e.seq for e in events] == list(range(len(events))), "seq must be gapless from 0"
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
    terminals = [i for i, e in enumerate(events) if e.__class__ in TERMINAL_TYPES]
    assert terminals == [len(events) - 1], "exactly one terminal event, last"


def check_subsequence(seen: list[Event], full: list[Event], policy: str) -> None:
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs)), f"{policy}: seqs must increase strictly"
    if policy in ("block", "iterator"):
        assert seen == full
    elif policy in ("drop_oldest", "coalesce"):
        assert seen[-1] == full[-1], f"{policy}: terminal must arrive"
        if policy == "coalesce":
            text = "".join(e.text for e in seen if isinstance(e, TextDelta))
            assert text == "".join(e.text for e in full if isinstance(e, TextDelta))
            assert [e for e in seen if isinstance(e, ToolCall)] == [e for e in full if isinstance(e, ToolCall)]
    elif policy == "disconnect":
        assert seen == full or seen == full[: len(seen)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=items,
    cancel_after=st.one_of(st.none(), st.floats(0, 0.01)),
    stall_timeout=st.one_of(st.none(), st.floats(0.002, 0.02)),
    max_tokens=st.one_of(st.none(), st.integers(1, 10)),
    fail_at=st.sets(st.integers(0, 20), max_size=3),
    policy=policies,
    maxsize=st.integers(1, 4),
    slow_consumer=st.booleans(),
    strict=st.booleans(),
)
def test_lifecycle_invariants(
    script: list[Any],
    cancel_after: float | None,
    stall_timeout: float | None,
    max_tokens: int | None,
    fail_at: set[int],
    policy: str,
    maxsize: int,
    slow_consumer: bool,
    strict: bool,
) -> None:
    async def scenario() -> None:
        provider = Scripted(script)
        checker = Checker(fail_at)
        seen: list[Event] = []

        async def consumer(e: Event) -> None:
            if slow_consumer:
                await asyncio.sleep(0.0005)
            seen.append(e)

        observers: list[object] = [checker]
        iterator = None
        if policy == "iterator":
            iterator = tokenwire.EventIterator(maxsize=maxsize)
            observers.append(iterator)
        elif policy == "inline":
            observers.append(consumer)
        else:
            observers.append(tokenwire.queued(consumer, maxsize=maxsize, overflow=policy))  # type: ignore[arg-type]
        # Everything is bounded in time: a Stall with no limit and no cancel gets a max duration.
        limits = tokenwire.Limits(stall_timeout_s=stall_timeout, max_output_tokens=max_tokens, max_duration_s=0.05)
        handle = tokenwire.generate(
            provider, "hi", observers=observers, limits=limits, strict=strict, on_observer_error=lambda *a: None
        )

        async def iterate() -> None:
            assert iterator is not None
            async for e in iterator:
                if slow_consumer:
                    await asyncio.sleep(0.0005)
                seen.append(e)

        reader = asyncio.create_task(iterate()) if iterator is not None else None
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            handle.cancel("random cancel")
        terminal = await asyncio.wait_for(handle.wait(), 2)
        if reader is not None:
            await asyncio.wait_for(reader, 2)

        check_invariants(checker.events)
        assert terminal == checker.events[-1]
        check_subsequence(seen, checker.events, policy)
        if strict and any(seq in fail_at for seq in range(len(checker.events) - 1)):
            assert terminal.type == "error" and terminal.code == "observer_failed"
        assert provider.started == provider.closed
        assert handle.done()
        assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()
        result = handle.result()
        assert result.text == "".join(e.text for e in checker.events if isinstance(e, TextDelta))

    asyncio.run(scenario())
