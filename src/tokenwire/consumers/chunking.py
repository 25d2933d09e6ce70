"""Coalescers: turn token deltas into user-visible units (sans-I/O core plus two thin shells).

A :class:`Coalescer` takes text and the current time and returns the chunks to emit; it has no
clock, no timer and no ``await``. Four units:

- :func:`words` — a chunk per word: it ends before the whitespace that follows a word (chunks
  never end in a space) and keeps punctuation runs (``...``, ``?!``) whole; in scripts written
  without spaces (Chinese, Japanese, Thai …) every grapheme is a word, with punctuation attached
  to the character before it;
- :func:`sentences` — a chunk per sentence (after ``.``, ``!``, ``?``, ``…`` and a following space,
  or after ``。！？`` directly, or after a newline): the unit text-to-speech wants;
- :func:`lines` — a chunk per line, newline included;
- :func:`code_blocks` — words outside fenced code blocks, whole lines inside them.

Every coalescer bounds latency: text that has waited ``max_delay_s`` (default one frame, 16 ms)
goes out on the next :meth:`Coalescer.poll`, except a trailing whitespace or punctuation run and an
unfinished grapheme cluster, which wait for the next text so no chunk ends in a space or splits
``"..."``. ``max_delay_s=None`` disables the bound (sentences for TTS). ``min_chars`` merges short
units. Without a time bound no chunk boundary ever falls inside a grapheme cluster (combining
marks, emoji ZWJ sequences, flags, Hangul syllables). With one, a timed flush can split a
cluster whose next part had not arrived yet when it looked complete (``👨`` flushed, then
``\u200d👩``): what the flush left is then kept with the text after it, never a chunk of its own.
:meth:`Coalescer.flush` returns the rest at the end: the concatenated chunks always equal the
concatenated input. Work is linear in the input however it is split (each break between two
clusters is examined once; a unit looks at most ``LOOKBACK`` characters back).

>>> c = words(max_delay_s=None)
>>> c.feed("Hel", now=0.0), c.feed("lo wor", now=0.01), c.feed("ld...", now=0.02), c.flush()
([], ['Hello'], [], [' world...'])
>>> s = sentences(max_delay_s=None)
>>> s.feed("Hi there. How are", now=0), s.feed(" you?", now=0), s.flush()
(['Hi there.'], [], [' How are you?'])

Shells: :func:`coalesce` wraps an observer, :func:`coalesce_events` transforms an async iterator
of events.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from typing import Literal, TypeAlias

import regex

__all__ = [
    "Coalescer",
    "Unit",
    "code_blocks",
    "coalescer",
    "lines",
    "sentences",
    "words",
]

Unit: TypeAlias = Literal["words", "sentences", "lines", "code_blocks"]

_CLUSTER = regex.compile(r"\X")
_TERMINAL_PUNCT = frozenset(".!?…")
_CJK_TERMINAL = frozenset("。！？｡")
_CLOSERS = frozenset("\"')]}»”’」』）】〉》")
_RUN_PUNCT = frozenset(".!?…,;:") | _CJK_TERMINAL


def _no_space_script(ch: str) -> bool:
    """Scripts written without spaces between words: each grapheme is a word."""
    cp = ord(ch)
    return (
        0x2E80 <= cp <= 0x9FFF  # CJK radicals, kana, CJK unified ideographs
        or 0xF900 <= cp <= 0xFAFF  # CJK compatibility ideographs
        or 0x20000 <= cp <= 0x3FFFF  # CJK extensions
        or 0x0E00 <= cp <= 0x0EFF  # Thai, Lao
        or 0x1000 <= cp <= 0x109F  # Myanmar
        or 0x1780 <= cp <= 0x17FF  # Khmer
        or 0xFF66 <= cp <= 0xFF9F  # half-width katakana
    )


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "P" or ch in _CLOSERS


class Coalescer:
    """Sans-I/O coalescer; subclasses define where a unit may end (:meth:`boundary`)."""

    def __init__(self, *, max_delay_s: float | None = 0.016, min_chars: int = 1):
        if max_delay_s is not None and max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0 or None, got {max_delay_s!r}")
        if min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {min_chars!r}")
        self.max_delay_s = max_delay_s
        self.min_chars = min_chars
        self._buf = ""
        self._arrivals: deque[tuple[int, float]] = deque()  # (offset in _buf where a feed began, time)
        self._last: tuple[int, int] | None = None  # span of the last cluster examined (it may grow)
        self._at = 0

    # -- the unit ------------------------------------------------------------------------------

    def boundary(self, prev: str, nxt: str, before: str) -> bool:
        """May a chunk end between grapheme clusters ``prev`` and ``nxt``?

        ``before`` is the text before the break: at most the last ``LOOKBACK`` characters, so that
        deciding a break costs the same however long the pending text is.
        """
        raise NotImplementedError

    # -- feeding -------------------------------------------------------------------------------

    @property
    def pending(self) -> str:
        """Text received but not emitted yet."""
        return self._buf

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` should run next (None: nothing waits, or no time bound)."""
        if not self._buf or self.max_delay_s is None or not self._arrivals:
            return None
        return self._arrivals[0][1] + self.max_delay_s

    def feed(self, text: str, now: float) -> list[str]:
        """Add text received at ``now``; returns the complete units to emit."""
        if not text:
            return []
        buf = self._buf
        self._arrivals.append((len(buf), now))
        # Append through a local holding the only reference: CPython then grows the string in
        # place (amortised O(len(text))); ``self._buf += text`` copies the whole pending text on
        # every feed, quadratic while a long sentence waits for its end.
        self._buf = ""
        buf += text
        self._buf = buf
        del buf
        return self._emit_units()

    def poll(self, now: float) -> list[str]:
        """Emit what has waited ``max_delay_s`` (all but an unfinished tail)."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        cut = self._safe_cut(self._buf)
        return self._take(cut) if cut > 0 else []

    def flush(self) -> list[str]:
        """Everything that is left (the stream ended or a non-text event arrived)."""
        if not self._buf:
            return []
        units = self._emit_units()
        return [*units, *self._take(len(self._buf))] if self._buf else units

    # -- internals -----------------------------------------------------------------------------

    def _emit_units(self) -> list[str]:
        # Linear in the input: each break between two clusters is examined once. Only the last
        # cluster seen is segmented again (new text may extend it); a break, once the character
        # after it is known, is final (UAX #29 decides breaks from the text before them).
        buf = self._buf
        out: list[str] = []
        start = 0
        last = self._last
        it = _CLUSTER.finditer(buf, last[0] if last is not None else 0)
        first = next(it, None)
        if first is None:
            return out
        prev = first.span()
        for m in it:
            pos = m.start()
            if pos - start >= self.min_chars:
                prev_text = buf[prev[0] : prev[1]]
                # A cluster of only extending characters is what a timed flush left of a cluster
                # it split: it belongs to what follows, never a chunk of its own.
                if not _only_extenders(prev_text) or prev[0] != start:
                    self._at = pos  # where the break is, for units that keep state along the text
                    if self.boundary(prev_text, m.group(), buf[max(0, pos - LOOKBACK) : pos]):
                        out.append(buf[start:pos])
                        start = pos
            prev = m.span()
        self._last = prev
        if start:
            self._consume(start)
        return out

    def _take(self, n: int) -> list[str]:
        chunk = self._buf[:n]
        self._consume(n)
        return [chunk]

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        last = self._last
        self._last = None if last is None or last[0] < n else (last[0] - n, last[1] - n)
        arrivals = self._arrivals
        # Keep the arrival time of the feed that holds the first remaining character.
        while len(arrivals) > 1 and arrivals[1][0] <= n:
            arrivals.popleft()
        if not self._buf:
            arrivals.clear()
        else:
            shifted = deque((max(off - n, 0), ts) for off, ts in arrivals)
            self._arrivals = shifted

    def _safe_cut(self, buf: str) -> int:
        """Length of the prefix that may go out on a time flush."""
        clusters = [m.group() for m in _CLUSTER.finditer(buf)]
        end = len(buf)
        # An unfinished cluster (trailing ZWJ, lone regional indicator) waits for its next part.
        if clusters and (clusters[-1].endswith("\u200d") or _lone_regional_indicator(clusters[-1])):
            end -= len(clusters.pop())
        # A trailing punctuation or whitespace run waits: it may continue ("..", "?!", "  ").
        while clusters and (clusters[-1].isspace() or clusters[-1] in _RUN_PUNCT):
            end -= len(clusters.pop())
        # What is left of a cluster an earlier flush split (a ZWJ, a combining mark) never goes
        # out alone: it waits for the cluster that follows it.
        if all(_only_extenders(c) for c in clusters):
            return 0
        return end


def _lone_regional_indicator(cluster: str) -> bool:
    """A cluster with an odd number of regional indicators ends with half a flag (a prepended
    mark may stand before it: ``\u0600🇺``)."""
    return sum(1 for ch in cluster if 0x1F1E6 <= ord(ch) <= 0x1F1FF) % 2 == 1


def _only_extenders(cluster: str) -> bool:
    """Only combining marks, ZWJ or variation selectors: the tail of a cluster split by a timed flush."""
    return all(_extends(ch) for ch in cluster)


def _extends(ch: str) -> bool:
    return ch == "\u200d" or 0xFE00 <= ord(ch) <= 0xFE0F or unicodedata.category(ch) in ("Mn", "Me", "Mc")


LOOKBACK = 64
"""How many characters before a break a unit's rule may look at (words, sentence ends, fences)."""


class _Words(Coalescer):
    def boundary(self, prev: str, nxt: str, before: str) -> bool:
        a = prev[-1]
        b = nxt[0]
        if b in "\r\n":
            return False  # a line break ends the chunk it follows
        if a == "\n":
            return True
        if b.isspace():
            return not a.isspace()
        if a.isspace() or _is_punct(b):
            return False
        return _no_space_script(a) or _no_space_script(b)


class _Sentences(Coalescer):
    def boundary(self, prev: str, nxt: str, before: str) -> bool:
        a = prev[-1]
        b = nxt[0]
        if a == "\n":
            return True
        if b in _TERMINAL_PUNCT or b in _CJK_TERMINAL or b in _CLOSERS:
            return False
        # Walk back over closing quotes/brackets to the terminator: 'He said "Stop."' ends there.
        end = before.rstrip("".join(_CLOSERS))
        if not end:
            return False
        last = end[-1]
        if last in _CJK_TERMINAL:
            return True
        return last in _TERMINAL_PUNCT and b.isspace() and not _decimal_or_abbreviation(end)


def _decimal_or_abbreviation(text: str) -> bool:
    """``e.g.`` / ``Mr.`` / ``3.`` (a list number) are not sentence ends."""
    word = text.rsplit(None, 1)[-1] if text.split() else text
    core = word.rstrip(".")
    return (len(core) <= 2 and core.isalpha() and core[:1].isupper()) or "." in core or core.isdigit()


class _Lines(Coalescer):
    def boundary(self, prev: str, nxt: str, before: str) -> bool:
        return prev.endswith("\n")


class _CodeBlocks(_Words):
    """Words outside fenced code, whole lines inside (the fence lines included).

    The fence state is kept along the text (each character looked at once), not recomputed from
    the start of the pending text at every break.
    """

    def __init__(self, *, max_delay_s: float | None = 0.016, min_chars: int = 1):
        super().__init__(max_delay_s=max_delay_s, min_chars=min_chars)
        self._in_code = False  # fence state after the complete lines before _line_start
        self._line_start = 0  # offset in the pending text of the line being read
        self._scanned = 0  # offset up to which newlines were processed
        self._carry = ""  # the start of the current line, when a cut already emitted it

    def _code_state(self, pos: int) -> tuple[bool, bool]:
        """(inside a code block, on a line that starts or may start with a fence) at ``pos``."""
        buf = self._buf
        nl = buf.find("\n", self._scanned, pos)
        while nl != -1:
            if _is_fence(self._carry + buf[self._line_start : min(nl, self._line_start + LOOKBACK)]):
                self._in_code = not self._in_code
            self._line_start, self._carry = nl + 1, ""
            nl = buf.find("\n", nl + 1, pos)
        self._scanned = max(self._scanned, pos)
        current = (self._carry + buf[self._line_start : min(pos, self._line_start + LOOKBACK)]).lstrip()
        maybe_fence = current == "" or "```".startswith(current) or "~~~".startswith(current) or _is_fence(current)
        return self._in_code, maybe_fence

    def boundary(self, prev: str, nxt: str, before: str) -> bool:
        in_code, maybe_fence = self._code_state(self._at)
        if prev.endswith("\n"):
            return True
        if in_code or maybe_fence:
            return False
        return super().boundary(prev, nxt, before)

    def _consume(self, n: int) -> None:
        self._code_state(n)  # complete the state up to the cut before forgetting the text
        if self._line_start < n:  # the cut falls inside the current line: keep its start
            self._carry = (self._carry + self._buf[self._line_start : n])[:LOOKBACK]
            self._line_start = 0
        else:
            self._line_start -= n
        self._scanned = max(self._scanned - n, 0)
        super()._consume(n)


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(("```", "~~~"))


_UNITS: dict[str, type[Coalescer]] = {
    "words": _Words,
    "sentences": _Sentences,
    "lines": _Lines,
    "code_blocks": _CodeBlocks,
}


def words(*, max_delay_s: float | None = 0.016, min_chars: int = 1) -> Coalescer:
    """A coalescer that emits whole words (graphemes in scripts without spaces)."""
    return _Words(max_delay_s=max_delay_s, min_chars=min_chars)


def sentences(*, max_delay_s: float | None = 0.016, min_chars: int = 1) -> Coalescer:
    """A coalescer that emits whole sentences; use ``max_delay_s=None`` for text-to-speech."""
    return _Sentences(max_delay_s=max_delay_s, min_chars=min_chars)


def lines(*, max_delay_s: float | None = 0.016, min_chars: int = 1) -> Coalescer:
    """A coalescer that emits whole lines."""
    return _Lines(max_delay_s=max_delay_s, min_chars=min_chars)


def code_blocks(*, max_delay_s: float | None = 0.016, min_chars: int = 1) -> Coalescer:
    """Words outside fenced code blocks, whole lines inside them."""
    return _CodeBlocks(max_delay_s=max_delay_s, min_chars=min_chars)


def coalescer(by: Unit, *, max_delay_s: float | None = 0.016, min_chars: int = 1) -> Coalescer:
    """A coalescer for a unit by name: ``"words"``, ``"sentences"``, ``"lines"``, ``"code_blocks"``."""
    try:
        cls = _UNITS[by]
    except KeyError:
        raise ValueError(f"unknown unit {by!r}; choose one of {', '.join(_UNITS)}") from None
    return cls(max_delay_s=max_delay_s, min_chars=min_chars)
