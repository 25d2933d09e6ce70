"""Transcript-style assertions: compare a stream with the expected sequence of events.

>>> from tokenwire.events import Start, TextDelta, Done
>>> events = [Start(model="m", seq=0), TextDelta("Hi", seq=1), Done(seq=2)]
>>> assert_transcript(events, ["start", {"type": "text.delta", "text": "Hi"}, "done"])
>>> assert_transcript(events, ["start", ..., {"type": "done", "finish_reason": "stop"}])

Expected items: a type string, a dict with ``type`` and the fields to compare, or ``...`` (any run
of events, including none). ``ts`` and ``stream_id`` are never compared. On mismatch the
AssertionError shows a diff of the two transcripts, one event per line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from types import EllipsisType
from typing import Any, TypeAlias

from tokenwire.events import EventBase, to_builtins

__all__ = ["Expected", "assert_transcript", "render"]

Expected: TypeAlias = "str | Mapping[str, Any] | EllipsisType"
_IGNORED = ("ts", "stream_id")


def _as_dict(event: EventBase | Mapping[str, Any]) -> dict[str, Any]:
    d = to_builtins(event) if isinstance(event, EventBase) else dict(event)
    for key in _IGNORED:
        d.pop(key, None)
    return d


def render(event: EventBase | Mapping[str, Any] | EllipsisType | str) -> str:
    """One transcript line: ``type key=value …`` (seq first when present)."""
    if event is ...:
        return "..."
    if isinstance(event, str):
        return event
    d = _as_dict(event)
    head = d.pop("type", "?")
    seq = d.pop("seq", None)
    fields = " ".join(f"{k}={v!r}" for k, v in d.items())
    prefix = f"#{seq} " if seq is not None else ""
    return f"{prefix}{head} {fields}".rstrip()


def _matches(actual: dict[str, Any], expected: str | Mapping[str, Any]) -> bool:
    if isinstance(expected, str):
        return actual.get("type") == expected
    return all(key in _IGNORED or actual.get(key, _MISSING) == value for key, value in expected.items())


_MISSING = object()


def _match(actual: list[dict[str, Any]], expected: list[Expected], i: int = 0, j: int = 0) -> bool:
    while j < len(expected):
        item = expected[j]
        if item is ...:
            return any(_match(actual, expected, k, j + 1) for k in range(i, len(actual) + 1))
        if i >= len(actual) or not _matches(actual[i], item):
            return False
        i += 1
        j += 1
    return i == len(actual)


def assert_transcript(events: Iterable[EventBase | Mapping[str, Any]], expected: Iterable[Expected]) -> None:
    """Assert that ``events`` match ``expected`` in order (see the module docstring)."""
    actual_list = list(events)
    actual = [_as_dict(e) for e in actual_list]
    wanted = list(expected)
    if _match(actual, wanted):
        return
    diff = "\n".join(
        difflib.unified_diff(
            [render(e) for e in wanted],
            [render(e) for e in actual_list],
            fromfile="expected",
            tofile="actual",
            lineterm="",
        )
    )
    raise AssertionError(f"transcript does not match ({len(actual)} events):\n{diff}")
