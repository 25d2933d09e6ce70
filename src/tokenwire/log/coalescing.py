"""Merging consecutive deltas: what a ``coalesce`` cursor does to a backlog (the same text or
arguments in fewer events, each carrying the newest envelope).

>>> from tokenwire.events import TextDelta
>>> coalesced([TextDelta("a", seq=1), TextDelta("b", seq=2)])
([TextDelta(text='ab', stream_id='', seq=2, ts=0.0)], 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tokenwire.events import Event, ReasoningDelta, TextDelta, ToolCallDelta

__all__ = ["MERGEABLE", "coalesced", "delta_text", "merge", "mergeable"]


def merge(a: Event, b: Event) -> Event | None:
    """Merge two consecutive deltas into one carrying ``b``'s envelope, or None if they don't merge."""
    cls = a.__class__
    if cls is not b.__class__:
        return None
    if cls is TextDelta or cls is ReasoningDelta:
        return msgspec.structs.replace(b, text=a.text + b.text)  # type: ignore[union-attr]
    if cls is ToolCallDelta and a.call_id == b.call_id:  # type: ignore[union-attr]
        return msgspec.structs.replace(b, args_delta=a.args_delta + b.args_delta)  # type: ignore[union-attr]
    return None


MERGEABLE = (TextDelta, ReasoningDelta, ToolCallDelta)


def mergeable(a: Event, b: Event) -> bool:
    cls = a.__class__
    return cls is b.__class__ and (cls is not ToolCallDelta or a.call_id == b.call_id)  # type: ignore[union-attr]


def delta_text(event: Event) -> str:
    return event.args_delta if event.__class__ is ToolCallDelta else event.text  # type: ignore[union-attr]


def coalesced(events: Sequence[Event]) -> tuple[list[Event], int]:
    """``events`` with consecutive mergeable deltas merged, and how many were merged away.

    Linear: each run of deltas is joined once (never re-concatenated per event).
    """
    out: list[Event] = []
    merged = 0
    i, n = 0, len(events)
    while i < n:
        first = events[i]
        j = i + 1
        while j < n and merge(events[j - 1], events[j]) is not None:
            j += 1
        if j - i == 1:
            out.append(first)
        else:
            last = events[j - 1]
            run = events[i:j]
            if first.__class__ is ToolCallDelta:
                out.append(msgspec.structs.replace(last, args_delta="".join(e.args_delta for e in run)))  # type: ignore[union-attr]
            else:
                out.append(msgspec.structs.replace(last, text="".join(e.text for e in run)))  # type: ignore[union-attr]
            merged += j - i - 1
        i = j
    return out, merged
