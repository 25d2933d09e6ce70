"""The testing kit: assert_transcript, Transcript files, and the pytest plugin's fixtures."""

from __future__ import annotations

import pytest

import tokenwire
from tokenwire.events import Done, Start, TextDelta
from tokenwire.providers import Scripted, Stall
from tokenwire.testing import Transcript, assert_transcript

EVENTS = [Start(model="m", seq=0, ts=1.0), TextDelta("a", seq=1), TextDelta("b", seq=2), Done(seq=3)]


@pytest.mark.parametrize(
    "expected",
    [
        ["start", "text.delta", "text.delta", "done"],
        ["start", ..., "done"],
        [..., {"type": "text.delta", "text": "b"}, "done"],
        ["start", "text.delta", ..., "text.delta", "done"],
        [{"type": "start", "model": "m", "ts": 999.0}, ...],  # ts is never compared
        [...],
    ],
)
def test_matching(expected: list[object]) -> None:
    assert_transcript(EVENTS, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "expected",
    [
        ["start", "text.delta", "done"],
        ["start", "text.delta", "text.delta", "done", "done"],
        [..., {"type": "text.delta", "text": "zzz"}, ...],
        [{"type": "start", "missing_field": 1}, ...],
    ],
)
def test_mismatch_shows_a_diff(expected: list[object]) -> None:
    with pytest.raises(AssertionError) as info:
        assert_transcript(EVENTS, expected)  # type: ignore[arg-type]
    message = str(info.value)
    assert "--- expected" in message and "+++ actual" in message
    assert "#1 text.delta text='a'" in message


def test_matches_dict_events_from_json() -> None:
    assert_transcript([tokenwire.events.to_builtins(e) for e in EVENTS], ["start", ..., "done"])


def test_transcript_file_is_written_as_events_arrive_and_loads_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.jsonl"
    t = Transcript(path)
    tokenwire.run_sync(Scripted(["x", "y"]), "hi", observers=[t])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4
    loaded = Transcript.load(path)
    assert loaded.events == t.events and loaded.text == "xy" and len(loaded) == 4 and loaded[0].type == "start"
    copy = tmp_path / "copy.jsonl"
    loaded.save(copy)
    assert copy.read_bytes() == path.read_bytes()


async def test_scripted_fixture_and_transcript_fixture(scripted, transcript) -> None:  # type: ignore[no-untyped-def]
    provider = scripted(["a"])
    await tokenwire.generate(provider, "hi", observers=[transcript]).wait()
    assert transcript.types == ["start", "text.delta", "done"]


def test_scripted_fixture_fails_a_test_that_leaks_a_generator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from tokenwire.providers import Stall

        async def test_leak(scripted):
            gen = scripted(["a", Stall()]).stream(None)
            await gen.__anext__()   # started, never closed
        """
    )
    result = pytester.runpytest("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*provider generators left open*"])


def test_stall_transcript_example() -> None:
    t = Transcript()
    tokenwire.run_sync(Scripted(["Hi", Stall()]), "hello", observers=[t], limits=tokenwire.Limits(stall_timeout_s=0.05))
    assert_transcript(t.events, ["start", "text.delta", {"type": "error", "code": "stalled"}])
