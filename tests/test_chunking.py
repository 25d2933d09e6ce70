"""Coalescers: units, grapheme safety, time bounds, and the concatenation invariant."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.consumers.chunking import Coalescer, coalescer, code_blocks, lines, sentences, words
from tokenwire.consumers.coalesce import coalesce_events
from tokenwire.events import Event, TextDelta
from tokenwire.providers import Delay, Scripted
from tokenwire.testing import Transcript

UNITS = ["words", "sentences", "lines", "code_blocks"]


def run(c: Coalescer, deltas: list[str], now: float = 0.0) -> list[str]:
    out: list[str] = []
    for d in deltas:
        out += c.feed(d, now)
    return [*out, *c.flush()]


def grapheme_boundaries(text: str) -> set[int]:
    return {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["Hel", "lo wor", "ld"], ["Hello", " world"]),
        (["Wait", "..", ". what", "?!", " ok"], ["Wait...", " what?!", " ok"]),
        (["a  ", " b"], ["a", "   b"]),
        (["你好", "世界。", "再见"], ["你", "好", "世", "界。", "再", "见"]),
        (["สวัสดี", "ครับ"], ["ส", "วั", "ส", "ดี", "ค", "รั", "บ"]),
        (["I said 你好 to", " you"], ["I", " said", " 你", "好", " to", " you"]),
        (["e\u0301", "\u0301x y"], ["e\u0301\u0301x", " y"]),
        (["hi 👨\u200d", "👩\u200d👧 yo"], ["hi", " 👨\u200d👩\u200d👧", " yo"]),
    ],
)
def test_words(deltas: list[str], expected: list[str]) -> None:
    assert run(words(max_delay_s=None), deltas) == expected


def test_words_min_chars_merges_short_words() -> None:
    assert run(words(max_delay_s=None, min_chars=8), ["a b c d e f g h i j"]) == ["a b c d e", " f g h i", " j"]


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["Hi there. How", " are you? Fine", "!"], ["Hi there.", " How are you?", " Fine!"]),
        (['He said "Stop." Then', " left."], ['He said "Stop."', " Then left."]),
        (["Pi is 3.14 and e.g. this. Done"], ["Pi is 3.14 and e.g. this.", " Done"]),
        (["Line one\nLine two"], ["Line one\n", "Line two"]),
        (["你好。我很好！", "谢谢"], ["你好。", "我很好！", "谢谢"]),
        (["Wait... what?! Yes."], ["Wait...", " what?!", " Yes."]),
    ],
)
def test_sentences(deltas: list[str], expected: list[str]) -> None:
    assert run(sentences(max_delay_s=None), deltas) == expected


def test_lines() -> None:
    assert run(lines(max_delay_s=None), ["a b\nc", "d\n", "e"]) == ["a b\n", "cd\n", "e"]


def test_code_blocks_emit_whole_lines_inside_fences_and_words_outside() -> None:
    text = "Here is code:\n```py\nx = 1  # one\ny = 2\n```\nDone now"
    deltas = [text[i : i + 3] for i in range(0, len(text), 3)]
    out = run(code_blocks(max_delay_s=None), deltas)
    assert "".join(out) == text
    assert "```py\n" in out and "x = 1  # one\n" in out and "y = 2\n" in out and "```\n" in out
    assert out[:3] == ["Here", " is", " code:\n"]
    assert " now" in out


def test_time_bound_flushes_but_keeps_an_unfinished_tail() -> None:
    c = words(max_delay_s=0.016)
    assert c.feed("Hello wor", now=0.0) == ["Hello"]
    assert c.deadline == pytest.approx(0.016)
    assert c.poll(now=0.01) == []
    assert c.poll(now=0.02) == [" wor"]
    assert c.feed("ld...", now=0.03) == []
    assert c.poll(now=0.05) == ["ld"]  # the "..." may grow: it waits for the next text
    assert c.pending == "..."
    c.feed("!", now=0.06)
    assert c.flush() == ["...!"]


def test_time_flush_never_ends_in_a_space_or_an_open_zwj_sequence() -> None:
    c = words(max_delay_s=0.0)
    assert c.feed("hi ", now=0.0) == ["hi"]
    assert c.poll(now=1.0) == []  # a lone space never goes out on its own
    c.feed(" 👨\u200d", now=1.0)
    assert c.poll(now=2.0) == []  # " " + an emoji waiting for its ZWJ partner
    c.feed("👩", now=2.0)
    assert c.flush() == ["  👨\u200d👩"]


def test_unknown_unit_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown unit 'paragraphs'"):
        coalescer("paragraphs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_chars must be >= 1"):
        words(min_chars=0)


text_with_hard_cases = st.lists(
    st.sampled_from(
        [*"ab .?!,\n`", "e\u0301", "你", "好", "。", "ส", "วั", "👨\u200d👩", "\u200d", "🇫", "🇷", "```", "한"],
    ),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    text=text_with_hard_cases,
    cuts=st.lists(st.integers(0, 60), max_size=12),
    unit=st.sampled_from(UNITS),
    min_chars=st.integers(1, 6),
    max_delay=st.sampled_from([None, 0.0, 0.01]),
    times=st.lists(st.floats(0, 0.05), min_size=13, max_size=13),
)
def test_concatenation_and_grapheme_invariants(
    text: str, cuts: list[int], unit: str, min_chars: int, max_delay: float | None, times: list[float]
) -> None:
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    deltas = [text[a:b] for a, b in itertools.pairwise(points)]
    c = coalescer(unit, max_delay_s=max_delay, min_chars=min_chars)  # type: ignore[arg-type]
    out: list[str] = []
    now = 0.0
    for d, dt in zip(deltas, times, strict=False):
        now += dt
        out += c.feed(d, now)
        out += c.poll(now + dt)
    out += c.flush()
    assert "".join(out) == text
    assert all(out), "no empty chunks"
    if max_delay is None:
        ends = set()
        pos = 0
        for chunk in out:
            pos += len(chunk)
            ends.add(pos)
        assert ends <= grapheme_boundaries(text), "a chunk boundary split a grapheme cluster"
        if unit == "words":
            assert all(not chunk.endswith(" ") for chunk in out[:-1])


def test_a_timed_flush_never_sends_the_split_tail_of_a_cluster_alone() -> None:
    # '🤝' went out on a flush before its ZWJ arrived; the ZWJ that follows must wait for the
    # cluster after it ('🧑…' had already arrived), not go out as a lone '\u200d' chunk.
    c = words(max_delay_s=0.0)
    assert c.poll(0.0) == [] and c.feed("🤝", 0.0) == [] and c.poll(1.0) == ["🤝"]
    assert c.feed("\u200d", 1.0) == [] and c.poll(2.0) == []
    assert c.feed("🧑\u200d", 2.0) == []
    assert c.poll(3.0) == []  # '\u200d' + '🧑\u200d' (open): nothing complete to send
    c.feed("\u0301🇺", 3.0)
    out = c.poll(4.0) + c.flush()
    assert out[0].startswith("\u200d🧑") and "".join(out) == "\u200d🧑\u200d\u0301🇺"


zwj_heavy_text = st.lists(
    st.sampled_from(["🧑", "🤝", "\u200d", "a", " ", ".", "e", "\u0301", "🇺", "🇸", "\n"]), max_size=14
).map("".join)


@settings(max_examples=1500, deadline=None)
@example(  # found by a fuzzer: '\u200d' went out alone after '🤝' had been flushed
    text="🤝\u200d🧑\u200d\u0301🇺", cuts=[1, 2, 4], unit="words", min_chars=1, gaps=[0.0] * 13, polls=[True] * 13
)
@given(
    text=zwj_heavy_text,
    cuts=st.lists(st.integers(0, 14), max_size=6),
    unit=st.sampled_from(UNITS),
    min_chars=st.integers(1, 3),
    gaps=st.lists(st.sampled_from([0.0, 0.01, 0.02]), min_size=13, max_size=13),
    polls=st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_timed_flushes_split_only_what_the_text_seen_so_far_ends(
    text: str, cuts: list[int], unit: str, min_chars: int, gaps: list[float], polls: list[bool]
) -> None:
    """Oracle: a chunk emitted while more text had arrived ends on a grapheme boundary of the
    text seen so far (regex's UAX #29 segmentation); only what had not arrived may be split."""
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    c = coalescer(unit, max_delay_s=0.016, min_chars=min_chars)  # type: ignore[arg-type]
    now, fed, emitted = 0.0, 0, 0
    splits: list[tuple[int, int]] = []

    def took(chunks: list[str]) -> None:
        nonlocal emitted
        for chunk in chunks:
            emitted += len(chunk)
            splits.append((emitted, fed))

    for (a, b), gap, poll in zip(itertools.pairwise(points), gaps, polls, strict=False):
        now += gap
        took(c.poll(now))
        fed = b
        took(c.feed(text[a:b], now))
        if poll:
            took(c.poll(now + 0.02))
    took(c.flush())
    for end, seen in splits[:-1]:
        if seen > end:
            assert end in grapheme_boundaries(text[:seen]), f"split at {end} inside a cluster of {text[:seen]!r}"


async def test_coalesce_observer_wrapper_times_out_partial_words() -> None:
    got: list[Event] = []
    provider = Scripted(["Hel", Delay(0.05), "lo wo", "rld", Delay(0.05), "!"])
    await tokenwire.generate(provider, "hi", observers=[tokenwire.coalesce(got.append, max_delay_s=0.016)]).wait()
    texts = [e.text for e in got if isinstance(e, TextDelta)]
    assert "".join(texts) == "Hello world!"
    assert texts[0] == "Hel"  # waited 16 ms, then went out: nothing waits longer than that
    assert got[0].type == "start" and got[-1].type == "done"


async def test_coalesce_events_transform_keeps_order_around_other_events() -> None:
    items: list[object] = ["a", "b c", tokenwire.events.Step(name="s", status="started"), "d e", "f"]
    async with tokenwire.stream(Scripted(items), "hi") as s:  # type: ignore[arg-type]
        events = [e async for e in coalesce_events(s, max_delay_s=None)]
    assert [(e.type, getattr(e, "text", None)) for e in events] == [
        ("start", None),
        ("text.delta", "ab"),
        ("text.delta", " c"),
        ("step", None),
        ("text.delta", "d"),
        ("text.delta", " ef"),
        ("done", None),
    ]


def test_coalesced_transcript_keeps_the_same_text(transcript: Transcript) -> None:
    tokenwire.run_sync(Scripted(["x y", " z"]), "q", observers=[tokenwire.coalesce(transcript, by="sentences")])
    assert transcript.text == "x y z" and transcript.types[-1] == "done"


def test_async_loop_not_required_for_the_core() -> None:
    assert asyncio.iscoroutinefunction(Coalescer.feed) is False


# -- incremental state, split clusters, linear time --------------------------------------------------

code_text = st.lists(
    st.sampled_from(["word ", "two words. ", "```py\n", "```\n", "  ```\n", "x = 1\n", "~~~\n", "\n", "a.b ", "é "]),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=code_text, cuts=st.lists(st.integers(0, 300), max_size=15), unit=st.sampled_from(UNITS))
def test_without_a_time_bound_the_chunks_do_not_depend_on_how_the_text_was_split(
    text: str, cuts: list[int], unit: str
) -> None:
    """The state kept along the text (breaks examined once, the fence state) is the state a
    single feed of the whole text computes: the oracle is the same unit fed everything at once."""
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    whole = run(coalescer(unit, max_delay_s=None), [text])  # type: ignore[arg-type]
    assert run(coalescer(unit, max_delay_s=None), pieces) == whole  # type: ignore[arg-type]


def test_code_block_lines_stay_whole_however_the_fence_arrives() -> None:
    deltas = ["Intro te", "xt.\n`", "``py", "thon\nx = ", "1\ny = 2\n``", "`\nafter words"]
    out = run(code_blocks(max_delay_s=None), deltas)
    assert out == ["Intro", " text.\n", "```python\n", "x = 1\n", "y = 2\n", "```\n", "after", " words"]


def test_the_rest_of_a_cluster_a_timed_flush_split_is_never_a_chunk_of_its_own() -> None:
    c = words(max_delay_s=0.01)
    assert c.feed("hi 👨", now=0.0) == ["hi"]
    assert c.poll(now=1.0) == [" 👨"]  # the time bound: the cluster looked complete
    out = c.feed("\u200d ok", now=1.0) + c.flush()  # the ZWJ came after the flush, then a space
    assert "".join(out) == "\u200d ok"
    assert "\u200d" not in out, out  # a lone ZWJ chunk would render as garbage


def test_a_prepended_mark_does_not_defeat_the_flag_hold() -> None:
    c = words(max_delay_s=0.01)
    c.feed("\u0600\U0001f1fa", now=0.0)  # a prepended mark, then the first half of a flag
    assert c.poll(now=1.0) == []  # half a flag waits for its other half
    assert "".join(c.feed("\U0001f1f8 ok", now=1.0) + c.flush()) == "\u0600\U0001f1fa\U0001f1f8 ok"


def _coalesce_cost(unit: str, size: int) -> float:
    """CPU seconds to coalesce ``size`` characters fed 4 at a time with no time bound (best of 3)."""
    text = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    if unit == "sentences":
        text = text.replace(".", "")  # one long sentence: nothing is emitted until the end
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    best = float("inf")
    for _ in range(3):
        c = coalescer(unit, max_delay_s=None)  # type: ignore[arg-type]
        t0 = time.process_time()
        for p in pieces:
            c.feed(p, 0.0)
        c.flush()
        best = min(best, time.process_time() - t0)
    return best


@pytest.mark.parametrize("unit", ["sentences", "code_blocks", "words"])
def test_coalescing_work_grows_linearly_with_the_input(unit: str) -> None:
    """8x the input costs about 8x the work (re-segmenting the pending text per feed cost 64x+).
    A ratio of CPU times at sizes where one run takes milliseconds, not a wall-clock bound."""
    small, large = _coalesce_cost(unit, 20_000), _coalesce_cost(unit, 160_000)
    assert large / small < 24, f"{unit}: 8x input cost {large / small:.1f}x"
