"""SSEDecoder: unit cases, differential fuzzing against httpx-sse for every chunk split, linear time.

The oracle is httpx-sse's own line splitter and decoder fed the whole text at once. Where httpx-sse
knowingly departs from the WHATWG rules the comparison normalises it, and says so: it dispatches
events that had no ``data`` line (the spec, and we, do not), it does not drop a leading BOM, and
it parses ``retry`` with ``int()`` (the spec takes ASCII digits only: checked separately).
"""

from __future__ import annotations

import time

from httpx_sse._decoders import SSEDecoder as RefDecoder
from httpx_sse._decoders import SSELineDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.wire.sse import SSEDecoder, SSEEvent

# -- unit cases --------------------------------------------------------------------------------


def feed_all(chunks: list[bytes]) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out += d.feed(c)
    return out


def test_a_leading_byte_order_mark_is_dropped_even_split() -> None:
    body = "\ufeffdata: a\n\n".encode()
    for i in range(len(body) + 1):
        assert feed_all([body[:i], body[i:]]) == [SSEEvent("message", "a", None, None)]


def test_retry_takes_ascii_digits_only() -> None:
    assert [e.retry for e in feed_all([b"retry: 1500\ndata: x\n\n"])] == [1500]
    for bad in ("\u00b2", "\u0663", " 12", "+5", "1_0", "-1", ""):
        assert [e.retry for e in feed_all([f"retry: {bad}\ndata: x\n\n".encode()])] == [None], bad


def test_an_empty_feed_between_cr_and_lf_does_not_split_the_line_ending() -> None:
    # A stray blank line there would dispatch "a" alone and then "b".
    assert feed_all([b"data: a\r", b"", b"\ndata: b\r", b"", b"\n\n"]) == [SSEEvent("message", "a\nb", None, None)]
    assert feed_all([b"data: a\r\ndata: b\r\n\n"]) == [SSEEvent("message", "a\nb", None, None)]


def test_keepalives_and_fields_without_data_dispatch_nothing() -> None:
    assert feed_all([b": ping\n\nid: 4\n\nevent: x\n\nretry: 5\n\n"]) == []
    assert feed_all([b"id: 4\n\ndata: y\n\n"]) == [SSEEvent("message", "y", "4", None)]


# -- differential fuzzing against httpx-sse ----------------------------------------------------------

field_names = st.sampled_from(["data", "event", "id", "retry", "", "dat", "data ", ":"])
values = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6)
line_endings = st.sampled_from(["\n", "\r", "\r\n"])
lines = st.one_of(
    st.builds(lambda n, v, sp, e: f"{n}:{' ' if sp else ''}{v}{e}", field_names, values, st.booleans(), line_endings),
    st.builds(lambda n, e: f"{n}{e}", field_names, line_endings),  # a field without a colon
    line_endings,  # a blank line: dispatch
)
streams = st.builds(
    lambda bom, ls: ("\ufeff" if bom else "") + "".join(ls), st.booleans(), st.lists(lines, max_size=25)
)


class _Reference:
    """httpx-sse, normalised to the spec where it departs from it (see the module docstring)."""

    def __init__(self) -> None:
        self.decoder = RefDecoder()
        self.saw_data = False

    def events(self, text: str) -> list[tuple[str, str, str | None]]:
        if text.startswith("\ufeff"):
            text = text[1:]
        splitter = SSELineDecoder()
        out = []
        lines = splitter.decode(text) if text else []
        if text.endswith("\r"):
            # httpx-sse holds a final CR back in case an LF follows; a CR ends a line (we dispatch
            # at once and skip a following LF), so end the stream's last line here too.
            lines += splitter.flush()
        for line in lines:
            # ``saw_data`` mirrors the spec's "data buffer is not empty" (a data line was seen).
            if line.partition(":")[0] == "data":
                self.saw_data = True
            sse = self.decoder.decode(line)
            if sse is not None and not line:
                if self.saw_data:
                    out.append((sse.event or "message", sse.data, sse.id or None))
                self.saw_data = False
        return out


def ours(chunks: list[bytes]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id or None) for e in feed_all(chunks)]  # an empty id resets it: no id


@settings(max_examples=300, deadline=None)
@given(text=streams, cuts=st.lists(st.integers(0, 10_000), max_size=8), empties=st.booleans())
def test_matches_httpx_sse_for_random_splits(text: str, cuts: list[int], empties: bool) -> None:
    body = text.encode("utf-8")
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    if empties:
        chunks = [x for c in chunks for x in (c, b"")]
    assert ours(chunks) == _Reference().events(text)


@settings(max_examples=60, deadline=None)
@given(text=streams)
def test_matches_httpx_sse_for_every_single_split(text: str) -> None:
    body = text.encode("utf-8")
    expected = _Reference().events(text)
    for i in range(len(body) + 1):
        assert ours([body[:i], body[i:]]) == expected, i
    assert ours([body[i : i + 1] for i in range(len(body))]) == expected  # one byte at a time


# -- linear time -------------------------------------------------------------------------------------


def _cost(size: int) -> float:
    """CPU seconds to decode one ``size``-byte data line read 1 KiB at a time (best of 5)."""
    body = b"data: " + b"x" * size + b"\n\n"
    chunks = [body[i : i + 1024] for i in range(0, len(body), 1024)]
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        events = feed_all(chunks)
        best = min(best, time.process_time() - t0)
        assert len(events) == 1 and len(events[0].data) == size
    return best


def test_work_grows_linearly_with_a_long_line_read_in_small_chunks() -> None:
    """8x the input costs about 8x the work (a quadratic decoder costs 64x). A ratio of CPU times
    at sizes where one run takes milliseconds, not a wall-clock bound."""
    small, large = _cost(1 << 20), _cost(8 << 20)
    assert large / small < 24, f"8x input cost {large / small:.1f}x"
