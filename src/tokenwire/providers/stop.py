"""Stop sequences over a stream of text pieces (sans-I/O).

Text that could be the start of a stop sequence is held back until the next piece decides; the
stop sequence itself is never emitted.

>>> m = StopMatcher(["</s>", "\\nUser:"])
>>> m.feed("Hello <"), m.feed("/"), m.feed("s> ignored")
(('Hello ', False), ('', False), ('', True))
>>> m = StopMatcher(["END"])
>>> m.feed("the EN"), m.flush()
(('the ', False), 'EN')
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopMatcher"]


class StopMatcher:
    """Finds the first stop sequence in streamed text."""

    __slots__ = ("_held", "_max", "stopped", "stops")

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(s for s in stops if s)
        self._max = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add a piece; returns (text safe to emit, whether a stop sequence was reached)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return piece, False
        buf = self._held + piece
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return buf[:cut], True
        # Hold back the longest suffix that is a proper prefix of some stop sequence.
        keep = 0
        for n in range(min(len(buf), self._max - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                keep = n
                break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The held-back text, at the end of generation without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
