"""The incremental partial-JSON parser: fuzzed against json.loads, linear in the input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.wire.partial_json import PartialJSON, PartialJSONError, parse_partial

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def is_prefix_like(partial: Any, final: Any) -> bool:
    """A partial value never contradicts the final one: containers hold a prefix of the members."""
    if isinstance(final, dict):
        return isinstance(partial, dict) and all(k in final and is_prefix_like(v, final[k]) for k, v in partial.items())
    if isinstance(final, list):
        return (
            isinstance(partial, list)
            and len(partial) <= len(final)
            and all(is_prefix_like(p, f) for p, f in zip(partial, final, strict=False))
        )
    if isinstance(final, str):
        return isinstance(partial, str) and final.startswith(partial)
    return True  # numbers can read differently while incomplete ("1" of "12")


@settings(max_examples=400, deadline=None)
@given(value=json_values, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]), data=st.data())
def test_every_split_of_valid_json_parses_to_json_loads(
    value: Any, ascii_only: bool, indent: int | None, data: Any
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=8))))
    parser = PartialJSON()
    prev = 0
    for cut in [*cuts, len(text)]:
        parser.feed(text[prev:cut])
        partial = parser.value
        prev = cut
        if partial is not None:
            assert is_prefix_like(json.loads(json.dumps(partial)), json.loads(text))
    assert parser.close() == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_every_prefix_fed_char_by_char_never_raises(value: Any) -> None:
    text = json.dumps(value)
    parser = PartialJSON()
    for ch in text:
        parser.feed(ch)
    assert parser.close() == value or (value != value)


def fed(p: PartialJSON, fragment: str) -> Any:
    p.feed(fragment)
    return p.value


def test_partial_values_ui_would_show() -> None:
    p = PartialJSON()
    assert fed(p, '{"query": "wea') == {"query": "wea"}
    assert fed(p, 'ther in \\"Par') == {"query": 'weather in "Par'}
    assert fed(p, 'is\\"", "limit": 1') == {"query": 'weather in "Paris"', "limit": 1}
    assert fed(p, '0, "tags": ["a", "b') == {"query": 'weather in "Paris"', "limit": 10, "tags": ["a", "b"]}
    assert fed(p, 'c"], "ok": tr') == {"query": 'weather in "Paris"', "limit": 10, "tags": ["a", "bc"]}
    assert fed(p, "ue}") == {"query": 'weather in "Paris"', "limit": 10, "tags": ["a", "bc"], "ok": True}
    assert p.complete


def test_unfinished_escapes_are_hidden_until_complete() -> None:
    p = PartialJSON()
    assert fed(p, '["caf\\u00') == ["caf"]
    assert fed(p, "e9 \\ud83d") == ["café "]
    assert fed(p, '\\ude00"]') == ["café 😀"]


@pytest.mark.parametrize("bad", ['{"a" 1}', "[1,,2]", '{"a": tru3}', "{1: 2}", '"x" "y"', "[1}", "nul!"])
def test_malformed_json_raises_a_clear_error(bad: str) -> None:
    with pytest.raises(PartialJSONError, match="invalid JSON at character"):
        p = PartialJSON()
        p.feed(bad)
        p.close()


@pytest.mark.parametrize("unfinished", ['{"a": [1', '"abc', "[1, 2", '{"a"', "tru"])
def test_close_on_unfinished_json_raises(unfinished: str) -> None:
    parser = PartialJSON()
    parser.feed(unfinished)  # the same parser that was fed is closed
    with pytest.raises(PartialJSONError, match="incomplete"):
        parser.close()


def test_close_of_a_parser_fed_nothing_raises() -> None:
    with pytest.raises(PartialJSONError, match="incomplete"):
        PartialJSON().close()


def test_parse_partial_one_shot() -> None:
    assert parse_partial('{"a": [1, {"b": "c') == {"a": [1, {"b": "c"}]}
    assert parse_partial("") is None


class Decoded:
    """Characters the parser handed to json.loads (every decode it makes goes through it)."""

    chars = 0


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Decoded:
    import tokenwire.wire.partial_json as module

    counter = Decoded()
    real_loads = json.loads

    def counting_loads(text: str) -> Any:
        counter.chars += len(text)
        return real_loads(text)

    monkeypatch.setattr(module.json, "loads", counting_loads)
    return counter


def test_work_is_linear_in_the_input(decoded: Decoded) -> None:
    """Characters decoded over a whole stream stay proportional to its length (no re-parsing).

    Counted, not timed.
    """
    for n in (200, 2000):
        decoded.chars = 0
        text = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(n)]})
        p = PartialJSON()
        for i in range(0, len(text), 4):
            p.feed(text[i : i + 4])
        assert p.close()["items"][-1] == {"id": n - 1, "name": f"item {n - 1}"}
        assert decoded.chars < 4 * len(text), f"decoded {decoded.chars} characters for a {len(text)}-character stream"


@pytest.mark.parametrize("fragment", [1, 8, 64])
def test_a_long_string_is_decoded_once(decoded: Decoded, fragment: int) -> None:
    """One long string value in small fragments: feeding decodes nothing until the string closes
    (the superlinear case: the whole string used to be re-joined and re-decoded per fragment)."""
    body = r"caf\u00e9 \"quoted\" " * 500
    text = '{"text": "' + body + '", "n": 12345}'
    p = PartialJSON()
    done = [p.feed(text[i : i + fragment]) for i in range(0, len(text), fragment)]
    assert done[-1] and not any(done[:-1])
    by_parser = decoded.chars  # (json.loads below is counted too: the patch is on the module)
    assert p.value == json.loads(text)
    assert by_parser <= len(text)


def test_feed_reports_completion_and_value_reads_the_partial_scalar() -> None:
    p = PartialJSON()
    assert p.feed('{"a": "x') is False
    assert p.value == {"a": "x"}
    assert p.feed('yz", "b": 4') is False
    assert p.value == {"a": "xyz", "b": 4}
    assert p.feed("2}") is True
    assert p.value == {"a": "xyz", "b": 42}
