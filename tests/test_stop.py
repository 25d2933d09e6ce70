"""StopMatcher against ``str.find`` as the oracle, for every way of splitting the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.providers.stop import StopMatcher

alphabet = st.sampled_from("ab<>/s\n")
stops_st = st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3)


def reference(text: str, stops: list[str]) -> tuple[str, bool]:
    """What must come out: the text before the earliest stop sequence (str.find), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return text, False
    return text[: min(hits)], True


def run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    stopped = False
    for piece in pieces:
        emitted, stopped = m.feed(piece)
        out.append(emitted)
        if stopped:
            break
    if not stopped:
        out.append(m.flush())
    return "".join(out), m.stopped


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet, max_size=30), stops=stops_st, cuts=st.lists(st.integers(0, 30), max_size=10))
def test_matches_str_find_for_random_splits(text: str, stops: list[str], cuts: list[int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(pieces, stops) == reference(text, stops)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet, max_size=20), stops=stops_st)
def test_matches_str_find_one_character_at_a_time(text: str, stops: list[str]) -> None:
    assert run(list(text), stops) == reference(text, stops)


def test_emitted_text_never_contains_a_stop_and_is_never_taken_back() -> None:
    m = StopMatcher(["</s>"])
    assert m.feed("a</") == ("a", False)  # "</" might start the stop: held back, not emitted
    assert m.feed("b") == ("</b", False)  # it did not: released, in order
    assert m.feed("</s>tail") == ("", True)
    assert m.feed("more") == ("", True)
