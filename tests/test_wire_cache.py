"""Frames shared by a stream's readers: every reader of a format gets exactly the bytes one encoder
of its own would write (the golden streams are the oracle), and each event is encoded once per
format while the readers keep up with the window."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.events import Event, TextDelta
from tokenwire.testing import golden
from tokenwire.wire import FrameCache, SharedReader
from tokenwire.wire.ai_sdk import UIMessageStream
from tokenwire.wire.encoder import StreamEncoder

EVENTS = golden.transcript()


class Counting:
    """A format's encoder factory that counts the encoders it built and the events they were fed."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.built = 0
        self.fed = 0

    def __call__(self) -> StreamEncoder:
        self.built += 1
        enc = golden.encoder(self.fmt)
        feed = enc.feed

        def counted(event: Event) -> list[bytes]:
            self.fed += 1
            return feed(event)

        enc.feed = counted  # type: ignore[method-assign]
        return enc


def read_one(reader: SharedReader, event: Event) -> bytes:
    """What the server's loop does per event (the log is EVENTS here)."""
    frame = reader.frame(event)
    if frame is None:
        reader.catch_up(EVENTS[: event.seq])
        frame = reader.frame(event)
    assert frame is not None
    return frame


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(golden.FORMATS),
    window=st.integers(1, 40),
    readers=st.integers(1, 5),
    schedule=st.lists(st.integers(0, 4), max_size=400),
)
def test_every_reader_gets_the_golden_bytes_whatever_the_interleaving(
    fmt: str, window: int, readers: int, schedule: list[int]
) -> None:
    cache = FrameCache(shared_window=window)
    make = Counting(fmt)
    views = [cache.reader("golden", fmt, make) for _ in range(readers)]
    out: list[list[bytes]] = [[] for _ in range(readers)]
    # The schedule says who reads next; then everyone reads to the end (slowest last).
    order = [i % readers for i in schedule] + [i for i in range(readers) for _ in EVENTS]
    for i in order:
        if len(out[i]) < len(EVENTS):
            out[i].append(read_one(views[i], EVENTS[len(out[i])]))
    for frames in out:
        assert b"".join(frames) == golden.stream(fmt)
    if window >= len(EVENTS):  # nobody can fall behind: one encoder, each event encoded once
        assert (make.built, make.fed) == (1, len(EVENTS))


def test_a_reader_behind_the_window_continues_on_its_own_encoder() -> None:
    cache = FrameCache(shared_window=4)
    make = Counting("ai_sdk")
    fast, slow = cache.reader("golden", "ai_sdk", make), cache.reader("golden", "ai_sdk", make)
    fast_out = [read_one(fast, e) for e in EVENTS]
    slow_out = [read_one(slow, e) for e in EVENTS]
    assert fast_out == slow_out and b"".join(slow_out) == golden.stream("ai_sdk")
    assert make.built == 2 and make.fed == 2 * len(EVENTS)  # the slow one replayed what it had not read
    assert slow.private is not None and fast.private is None


def test_streams_and_formats_do_not_share_encoders() -> None:
    cache = FrameCache()
    events: list[Any] = [TextDelta("a", stream_id="s", seq=0)]
    a = cache.reader("s1", "ai_sdk", lambda: UIMessageStream("m1"))
    b = cache.reader("s2", "ai_sdk", lambda: UIMessageStream("m2"))
    c = cache.reader("s1", "other", lambda: UIMessageStream("m3"))
    assert len({id(a.shared), id(b.shared), id(c.shared)}) == 3
    assert a.frame(events[0]) != b.frame(events[0])  # different parts ids per stream
