"""TreeCursor (tokenwire.log.tree), the sans-I/O core of reading a run tree: property tests
against an oracle (each stream's events, whole), over random trees, random read interleavings,
overlapping re-reads and drops resumed from the cursor or from its token; and linear time."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.errors import InvalidRequest
from tokenwire.events import TERMINAL_TYPES, Done, Error, Event, Start, Step, TextDelta
from tokenwire.log import TreeCursor


def mark(status: str, child: str, **detail: Any) -> Step:
    return Step(name="child", status=status, detail={"stream_id": child, **detail})


def build(rng: random.Random, sid: str, depth: int, streams: dict[str, list[Event]]) -> bool:
    """Stream ``sid`` and its subtree into ``streams``; False when it suspends (no terminal)."""
    body: list[Any] = [Start(model="m")]
    open_children: list[tuple[str, bool]] = []
    for i in range(rng.randint(0, 6)):
        roll = rng.random()
        if roll < 0.3 and depth < 3:
            child = f"{sid}.{i}"
            body.append(mark("started", child))
            open_children.append((child, build(rng, child, depth + 1, streams)))
        elif roll < 0.45 and open_children:
            child, ended = open_children.pop(rng.randrange(len(open_children)))
            body.append(mark("finished", child, outcome="done" if ended else "suspended"))
        elif roll < 0.5:
            body.append(mark("finished", f"{sid}.unknown", outcome="done"))  # never started: never waited for
        else:
            body.append(TextDelta(text=str(i)))
    for child, ended in open_children:
        body.append(mark("finished", child, outcome="done" if ended else "suspended"))
    suspends = depth > 0 and rng.random() < 0.1
    if not suspends:
        body.append(Error(code="x", message="x") if rng.random() < 0.2 else Done())
    streams[sid] = [msgspec.structs.replace(e, stream_id=sid, seq=n) for n, e in enumerate(body)]
    return not suspends


def read(streams: dict[str, list[Event]], rng: random.Random, *, reparse: bool) -> tuple[list[Event], TreeCursor]:
    """Everything delivered over a tree read with random batches, overlaps and drops."""
    cursor = TreeCursor("r")
    delivered: list[Event] = []
    while True:
        readers = {sid: max(0, cursor.positions[sid] - rng.randint(0, 2)) for sid in cursor.opening}
        cursor.opening.clear()
        dropped = False
        while not dropped:
            ready = [sid for sid, at in readers.items() if at < len(streams[sid])]
            if not ready:
                return delivered, cursor
            sid = rng.choice(ready)
            at = readers[sid]
            batch = streams[sid][at : at + rng.randint(1, 4)]
            readers[sid] = at + len(batch)
            drop_at = rng.randint(0, 12) if rng.random() < 0.15 else None
            for n, event in enumerate(cursor.feed(sid, batch)):
                delivered.append(event)
                if n == drop_at:
                    dropped = True
                    break
            for new in cursor.opening:
                readers[new] = cursor.positions[new]
            cursor.opening.clear()
        if reparse:
            cursor = TreeCursor.parse(cursor.token())
        else:
            cursor.reopen()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_a_tree_read_delivers_every_event_once_in_order_with_children_ended_before_their_marks(
    seed: int, reparse: bool
) -> None:
    rng = random.Random(seed)
    streams: dict[str, list[Event]] = {}
    build(rng, "r", 0, streams)
    delivered, cursor = read(streams, rng, reparse=reparse)

    for sid, events in streams.items():  # the oracle: each stream whole, once, in order
        assert [e for e in delivered if e.stream_id == sid] == events, sid
    assert len(delivered) == sum(map(len, streams.values()))
    at = {(e.stream_id, e.seq): i for i, e in enumerate(delivered)}
    for i, event in enumerate(delivered):
        if isinstance(event, Step) and event.status == "finished" and event.detail["outcome"] == "done":
            child = event.detail["stream_id"]
            if child in streams:  # a child's terminal comes before its parent's mark of its end
                assert at[(child, len(streams[child]) - 1)] < i
    assert cursor.ended
    assert cursor.token().startswith(f"{len(streams['r'])}e@r")


def test_the_token_names_the_root_and_the_streams_still_running() -> None:
    cursor = TreeCursor("root/1")  # quoted: any stream id fits
    started = msgspec.structs.replace(mark("started", "a,b"), stream_id="root/1", seq=1)
    list(cursor.feed("root/1", [Start(model="m", stream_id="root/1", seq=0), started]))
    assert cursor.token() == "2@root%2F1,0@a%2Cb"
    again = TreeCursor.parse(cursor.token())
    assert again.root == "root/1" and again.positions == {"root/1": 2, "a,b": 0}
    assert again.opening == ["root/1", "a,b"]


@pytest.mark.parametrize("token", ["", "x", "1@", "@a", "-1@a", "1@a,,2@b", "١@a"])
def test_a_malformed_token_is_a_clear_error(token: str) -> None:
    with pytest.raises(InvalidRequest, match="not a tree cursor"):
        TreeCursor.parse(token)


def test_a_token_naming_too_many_streams_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        TreeCursor.parse(",".join(f"0@s{i}" for i in range(5)), max_streams=4)


def test_children_past_max_streams_are_not_read_and_not_waited_for() -> None:
    cursor = TreeCursor("r", max_streams=2)
    root = [Start(model="m"), mark("started", "a"), mark("started", "b"), mark("finished", "b", outcome="done"), Done()]
    got = [
        e.type for e in cursor.feed("r", [msgspec.structs.replace(e, stream_id="r", seq=n) for n, e in enumerate(root)])
    ]
    assert cursor.opening == ["r", "a"] and got == ["start", "step", "step", "step", "done"]


def _cost(n: int) -> float:
    """CPU seconds to read a parent held for a child while both deliver ``n`` events one at a time."""
    best = float("inf")
    for _ in range(3):
        cursor = TreeCursor("p")
        parent = [Start(model="m"), mark("started", "c"), mark("finished", "c", outcome="done")]
        parent += [TextDelta(text="x")] * n + [Done()]
        pe = [msgspec.structs.replace(e, stream_id="p", seq=i) for i, e in enumerate(parent)]
        ce = [
            msgspec.structs.replace(e, stream_id="c", seq=i)
            for i, e in enumerate([Start(model="m"), *[TextDelta(text="y")] * n, Done()])
        ]
        t0 = time.process_time()
        count = sum(1 for _ in cursor.feed("p", pe[:3]))  # up to the mark: held from here on
        rest = pe[3:]
        for i in range(max(len(rest), len(ce))):
            for sid, events in (("p", rest), ("c", ce)):
                if i < len(events):
                    for _event in cursor.feed(sid, events[i : i + 1]):
                        count += 1
                        cursor.token()
        best = min(best, time.process_time() - t0)
        assert count == len(pe) + len(ce) and all(e.__class__ in TERMINAL_TYPES for e in (pe[-1], ce[-1]))
    return best


def test_work_grows_linearly_with_the_events_held_back() -> None:
    """8x the events cost about 8x the work (a quadratic hold costs 64x): a ratio of CPU times."""
    small, large = _cost(20_000), _cost(160_000)
    assert large / small < 24, f"8x input cost {large / small:.1f}x"
