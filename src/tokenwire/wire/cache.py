"""Encoded frames per (stream, wire format), shared by every connection that reads them.

Fan-out costs one encode per event per format: the first reader of a seq in a format encodes it,
every other reader of that format reuses the bytes. Only a window of each stream's most recent
frames is kept (live readers read there); a reader resuming further back gets its frames encoded
on the fly without filling the cache. So the server stores each event once (in the log) plus a
bounded window of frames per stream and format, never a frame per retained event.

Stateless formats (one event → one frame: ours) are a :class:`WireFormat`. The other ecosystems'
formats are stateful (open parts, item indexes): their encoder must see every event once, in seq
order, from 0. :meth:`FrameCache.reader` gives each reader of such a format a :class:`SharedReader` over the
stream's one :class:`SharedEncoder`: the reader at the live edge feeds it, the others reuse its
window, and a reader that fell behind the window continues with a private encoder of its own.

>>> from tokenwire.events import TextDelta
>>> calls = []
>>> fmt = WireFormat("upper", lambda ev: calls.append(ev.seq) or ev.text.upper())
>>> cache = FrameCache(window=2)
>>> events = [TextDelta(t, stream_id="s", seq=i) for i, t in enumerate("abc")]
>>> cache.frames("s", fmt, events), cache.frames("s", fmt, events[1:]), calls
(['A', 'B', 'C'], ['B', 'C'], [0, 1, 2])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from tokenwire.events import Event
from tokenwire.wire.encoder import StreamEncoder

__all__ = ["FrameCache", "SharedEncoder", "SharedReader", "WireFormat"]


class WireFormat(NamedTuple):
    """A wire format: a name (the cache key) and the encoder of one event into one frame."""

    name: str
    encode: Callable[[Event], Any]


class _Window:
    """The most recent frames of one stream in one format, aligned with seq."""

    __slots__ = ("frames", "next_seq")

    def __init__(self, size: int):
        self.frames: deque[Any] = deque(maxlen=size)
        self.next_seq = 0

    def get(self, event: Event, encode: Callable[[Event], Any]) -> Any:
        seq = event.seq
        frames = self.frames
        if seq == self.next_seq:  # the live edge: encode once, keep for the other readers
            frame = encode(event)
            frames.append(frame)
            self.next_seq = seq + 1
            return frame
        offset = seq - (self.next_seq - len(frames))
        if 0 <= offset < len(frames):
            return frames[offset]
        if seq > self.next_seq:  # nobody read the seqs between: restart the window here
            frames.clear()
            frame = encode(event)
            frames.append(frame)
            self.next_seq = seq + 1
            return frame
        return encode(event)  # older than the window: a resuming reader, encoded on the fly


class SharedEncoder(_Window):
    """A stateful encoder shared by one stream's readers, with the window of its recent frames.

    >>> from tokenwire.events import Start, TextDelta
    >>> from tokenwire.wire.ai_sdk import UIMessageStream
    >>> shared = SharedEncoder(UIMessageStream("m1"), window=8)
    >>> events = [Start(model="x", seq=0), TextDelta("a", seq=1)]
    >>> first = [shared.frame(e) for e in events]            # the live edge: encoded once
    >>> [shared.frame(e) for e in events] == first            # a second reader: the same bytes
    True
    """

    __slots__ = ("encoder", "start")

    def __init__(self, encoder: StreamEncoder, *, window: int = 1024, start: int = 0):
        super().__init__(window)
        self.encoder = encoder
        self.start = self.next_seq = start
        """The first seq it encodes (a response that continues a run from its middle)."""

    def frame(self, event: Event) -> bytes | None:
        """The event's frames joined (``b""`` when the format writes none); ``None`` when
        ``event`` is older than the window (or skips ahead of the encoder, which must not
        happen for a reader that reads from 0): encode it with a private encoder."""
        seq = event.seq
        if seq == self.next_seq:
            frame = b"".join(self.encoder.feed(event))
            self.frames.append(frame)
            self.next_seq = seq + 1
            return frame
        offset = seq - (self.next_seq - len(self.frames))
        if 0 <= offset < len(self.frames):
            cached: bytes = self.frames[offset]
            return cached
        return None


class SharedReader:
    """One reader's view of a :class:`SharedEncoder`: the shared frames while it keeps up with the
    window, its own encoder once it fell behind (sans-I/O: the caller supplies the events).

    ``frame(event)`` returns the event's bytes, or ``None`` when the reader just fell behind: the
    caller then passes the events before ``event`` (from seq 0) to :meth:`catch_up` and asks again.
    """

    __slots__ = ("make", "private", "shared")

    def __init__(self, shared: SharedEncoder, make: Callable[[], StreamEncoder]):
        self.shared = shared
        self.make = make
        self.private: StreamEncoder | None = None

    def frame(self, event: Event) -> bytes | None:
        if self.private is None:
            return self.shared.frame(event)
        return b"".join(self.private.feed(event))

    def catch_up(self, earlier: Iterable[Event]) -> None:
        """Continue with a private encoder fed ``earlier`` (every event before the current one
        from the shared encoder's start)."""
        self.private = private = self.make()
        start = self.shared.start
        for event in earlier:
            if event.seq >= start:
                private.feed(event)

    def ended(self, seq: int) -> bool:
        """Whether the frames up to ``seq`` that this reader was given end the format's response
        (after its terminal, or where the format ends a response early: a suspended run)."""
        if self.private is not None:
            return self.private.finished
        end = self.shared.encoder.finished_at
        return end is not None and seq >= end


class FrameCache:
    """Frames of the last ``window`` events per stream and format, for at most ``max_streams`` streams.

    A stateless format's window is short (64): the readers at a stream's live edge share it,
    and one further behind encodes its own frames (one ``msgspec`` encode each) rather than every
    live run keeping a thousand frames. A stateful format's (``shared_window``, 1,024) is long: a
    reader that falls behind it replays the stream into an encoder of its own.

    Streams are dropped oldest first (by when their frames were first cached; or with
    :meth:`drop`); a dropped stream's frames are simply encoded again if read again. No
    bookkeeping per read: with 1,000 readers of one stream this is called 1,000 times per event.
    """

    def __init__(self, *, window: int = 64, shared_window: int = 1024, max_streams: int = 1024):
        if window < 1 or max_streams < 1 or shared_window < 1:
            sizes = f"{window}, {shared_window}, {max_streams}"
            raise ValueError(f"window, shared_window and max_streams must be >= 1, got {sizes}")
        self.window = window
        self.shared_window = shared_window
        self.max_streams = max_streams
        self._streams: dict[str, dict[str, _Window]] = {}  # insertion-ordered: oldest first

    def frames(self, stream_id: str, fmt: WireFormat, events: Sequence[Event]) -> list[Any]:
        """The frames of ``events`` (consecutive events of one stream) in ``fmt``."""
        windows = self._streams.get(stream_id)
        if windows is None:
            windows = self._streams[stream_id] = {}
            if len(self._streams) > self.max_streams:
                del self._streams[next(iter(self._streams))]
        window = windows.get(fmt.name)
        if window is None:
            window = windows[fmt.name] = _Window(self.window)
        get = window.get
        encode = fmt.encode
        return [get(event, encode) for event in events]

    def frame(self, stream_id: str, fmt: WireFormat, event: Event) -> Any:
        """The frame of one event in ``fmt`` (the fan-out fast path: no list per call)."""
        windows = self._streams.get(stream_id)
        window = windows.get(fmt.name) if windows is not None else None
        if window is None:
            return self.frames(stream_id, fmt, (event,))[0]
        return window.get(event, fmt.encode)

    def reader(self, stream_id: str, name: str, make: Callable[[], StreamEncoder], *, start: int = 0) -> SharedReader:
        """A new reader of the stream in the stateful format ``name`` (``make`` builds its
        encoder), from seq ``start`` (a response that continues a run: readers of one start share)."""
        return SharedReader(self.shared(stream_id, name if not start else f"{name}@{start}", make, start), make)

    def shared(self, stream_id: str, name: str, make: Callable[[], StreamEncoder], start: int = 0) -> SharedEncoder:
        """The stream's shared encoder for the stateful format ``name`` (``make`` builds it once)."""
        windows = self._streams.get(stream_id)
        if windows is None:
            windows = self._streams[stream_id] = {}
            if len(self._streams) > self.max_streams:
                del self._streams[next(iter(self._streams))]
        window = windows.get(name)
        if not isinstance(window, SharedEncoder):
            window = windows[name] = SharedEncoder(make(), window=self.shared_window, start=start)
        return window

    def drop(self, stream_id: str) -> None:
        """Forget a stream's frames (it was evicted from the log)."""
        self._streams.pop(stream_id, None)
