"""Test providers: Scripted, Replay (timing), Batch."""

from __future__ import annotations

import itertools
import time

import pytest

import tokenwire
from tokenwire.core.request import Request
from tokenwire.events import Done, Error, Start, TextDelta, Usage
from tokenwire.providers import Batch, Replay, Scripted
from tokenwire.testing import Transcript, assert_transcript

RECORDED = [
    Start(model="gemma", stream_id="old", seq=0, ts=100.0),
    TextDelta("Hel", stream_id="old", seq=1, ts=100.1),
    TextDelta("lo", stream_id="old", seq=2, ts=100.2),
    Usage(input_tokens=3, output_tokens=2, stream_id="old", seq=3, ts=100.2),
    Done(finish_reason="length", stream_id="old", seq=4, ts=100.25),
]


async def test_replay_reproduces_the_transcript_with_new_envelope() -> None:
    t = Transcript()
    await tokenwire.generate(Replay(RECORDED, speed=None), "ignored", observers=[t]).wait()
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "gemma"},
            {"type": "text.delta", "text": "Hel"},
            {"type": "text.delta", "text": "lo"},
            {"type": "usage", "output_tokens": 2},
            {"type": "done", "finish_reason": "length", "usage": {"input_tokens": 3, "output_tokens": 2}},
        ],
    )
    assert t.events[0].stream_id != "old" and t.events[1].ts > 1_000_000


@pytest.mark.parametrize("speed", [1.0, 5.0, None])
async def test_replay_keeps_the_recorded_pauses_scaled_by_speed(speed: float | None) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # the clock, injected: no real waiting
        pauses.append(seconds)

    await tokenwire.generate(Replay(RECORDED, speed=speed, sleep=sleep), "x").wait()
    recorded = [b.ts - a.ts for a, b in itertools.pairwise(RECORDED) if b.ts > a.ts]
    expected = [] if speed is None else [p / speed for p in recorded]
    assert pauses == pytest.approx(expected)


async def test_replay_from_a_transcript_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    recorded = Transcript(tmp_path / "run.jsonl")
    original = await tokenwire.generate(
        Scripted(["a", tokenwire.ProviderError("x", code="overloaded")]), "hi", observers=[recorded]
    ).wait()
    replayed = Transcript()
    terminal = await tokenwire.generate(Replay(tmp_path / "run.jsonl", speed=None), "hi", observers=[replayed]).wait()
    assert [e.type for e in replayed] == [e.type for e in recorded]
    assert (
        isinstance(terminal, Error) and isinstance(original, Error) and terminal.code == original.code == "overloaded"
    )


def test_replay_rejects_bad_speed() -> None:
    with pytest.raises(ValueError, match="speed must be > 0"):
        Replay(RECORDED, speed=0)


async def test_batch_is_start_one_delta_done() -> None:
    seen: list[Request] = []

    async def answer(request: Request) -> str:
        seen.append(request)
        return "The whole answer."

    t = Transcript()
    await tokenwire.generate(Batch(answer), "q?", observers=[t]).wait()
    assert_transcript(t.events, ["start", {"type": "text.delta", "text": "The whole answer."}, "done"])
    assert seen[0].messages[0].content == "q?"


async def test_batch_wrong_return_type_is_a_provider_error() -> None:
    async def wrong(request: Request) -> str:
        return 42  # type: ignore[return-value]

    terminal = await tokenwire.generate(Batch(wrong), "q").wait()
    assert isinstance(terminal, Error) and "must return str" in terminal.message


def test_scripted_rejects_unknown_items() -> None:
    with pytest.raises(TypeError, match="is not a str, event, Delay, Stall or exception"):
        Scripted([3.5])  # type: ignore[list-item]


async def test_scripted_interval_paces_items() -> None:
    t0 = time.perf_counter()
    await tokenwire.generate(Scripted(["a", "b", "c"], interval_s=0.02), "x").wait()
    assert time.perf_counter() - t0 >= 0.06
