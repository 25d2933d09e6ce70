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
        """Add a piece; returns (text safe to emit, whether a stop sequence was reached).

        The stop that counts is the one that *starts* first in the whole text (as ``str.find``
        would pick it), so a complete match is not acted on while a longer stop that starts
        earlier may still complete with the next piece.
        """
        if self.stopped:
            return "", True
        if not self.stops:
            return piece, False
        buf = self._held + piece
        cut = self._earliest(buf)
        hold = self._partial(buf)  # where a stop may start that more text could complete
        if cut >= 0 and (hold < 0 or hold >= cut):
            self._held = ""
            self.stopped = True
            return buf[:cut], True
        if hold < 0:
            self._held = ""
            return buf, False
        self._held = buf[hold:]
        return buf[:hold], False

    def _earliest(self, text: str) -> int:
        return min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)

    def _partial(self, buf: str) -> int:
        """The earliest index whose suffix is a proper prefix of some stop (-1: none)."""
        for start in range(max(0, len(buf) - self._max + 1), len(buf)):
            tail = buf[start:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stops):
                return start
        return -1

    def flush(self) -> str:
        """The held-back text, at the end of generation (up to a stop it still contains)."""
        held, self._held = self._held, ""
        if self.stopped:
            return ""
        cut = self._earliest(held)
        if cut >= 0:
            self.stopped = True
            return held[:cut]
        return held
