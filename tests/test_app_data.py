"""Application data in the stream: ``data`` events (named JSON, optionally transient) and shared
state (``state.snapshot`` + RFC 6902 ``state.delta``), from providers and tools; what the
Response keeps, what a replay leaves out, and how each wire format carries them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.core.state import SharedState
from tokenwire.errors import InvalidStateDelta
from tokenwire.events import Data, Event, StateDelta, StateSnapshot, ToolCall
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted
from tokenwire.server import create_app
from tokenwire.testing import assert_transcript
from tokenwire.wire.agui import AGUIEvents
from tokenwire.wire.ai_sdk import UIMessageStream
from wire import serve

SNAPSHOT = {"step": "searching", "found": []}
DELTAS = [
    [{"op": "add", "path": "/found/-", "value": "a.md"}],
    [{"op": "add", "path": "/found/-", "value": "b.md"}, {"op": "replace", "path": "/step", "value": "answering"}],
]
FINAL = {"step": "answering", "found": ["a.md", "b.md"]}


def script() -> list[Any]:
    """A provider's parts: state, two data parts (one updating the other), a transient one."""
    return [
        StateSnapshot(snapshot=SNAPSHOT),
        Data(name="sources", data=["a.md"], id="s"),
        StateDelta(delta=DELTAS[0]),
        Data(name="progress", data={"pct": 50}, transient=True),
        Data(name="sources", data=["a.md", "b.md"], id="s"),
        StateDelta(delta=DELTAS[1]),
        "Answer.",
    ]


# -- the state helper --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab/~", max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab/~", max_size=3), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_a_delta_between_two_states_takes_one_to_the_other_and_never_touches_the_snapshot(a: Any, b: Any) -> None:
    """The oracle: jsonpatch's own diff of two documents, applied by SharedState, gives the second;
    the snapshot event's value is never changed by later deltas (readers share it)."""
    kept = json.loads(json.dumps(a))
    snapshot = StateSnapshot(snapshot=a)
    state = SharedState()
    state.apply(snapshot)
    assert state.apply(StateDelta(delta=jsonpatch.make_patch(a, b).patch)) == b
    assert snapshot.snapshot == kept


@pytest.mark.parametrize(
    "delta",
    [
        [{"op": "remove", "path": "/nope"}],
        [{"op": "explode", "path": "/step"}],
        [{"path": "/step"}],
        [{"op": "test", "path": "/step", "value": "other"}],
        [{"op": "replace", "path": "step", "value": 1}],
    ],
)
def test_a_delta_that_does_not_apply_is_a_clear_error_and_changes_nothing(delta: list[Any]) -> None:
    state = SharedState()
    state.apply(StateSnapshot(snapshot=SNAPSHOT))
    with pytest.raises(InvalidStateDelta, match=r"state\.delta cannot be applied"):
        state.apply(StateDelta(delta=delta))
    assert state.value == SNAPSHOT


# -- in a run ------------------------------------------------------------------------------------------


async def test_a_run_carries_data_and_state_and_its_response_keeps_all_but_the_transient() -> None:
    log = MemoryLog()
    seen: list[Event] = []
    handle = tokenwire.generate(Scripted(script()), "go", log=log, observers=[seen.append])
    response = await handle
    assert_transcript(
        seen,
        [
            "start",
            {"type": "state.snapshot", "snapshot": SNAPSHOT},
            {"type": "data", "name": "sources", "id": "s"},
            "state.delta",
            {"type": "data", "name": "progress", "transient": True},
            {"type": "data", "name": "sources", "data": ["a.md", "b.md"]},
            "state.delta",
            "text.delta",
            "done",
        ],
    )
    assert response.state == FINAL and response.text == "Answer."
    assert [(d.name, d.data) for d in response.data] == [("sources", ["a.md"]), ("sources", ["a.md", "b.md"])]


async def test_transient_data_reaches_live_readers_and_no_replay() -> None:
    log = MemoryLog()
    gate = tokenwire.providers.Stall()
    model = Scripted([Data(name="live", data=1, transient=True), "text", gate])
    handle = tokenwire.generate(model, "go", log=log, limits=tokenwire.Limits(stall_timeout_s=30))
    live = log.read(handle.stream_id, 0)  # a reader there before the transient event
    got = [await anext(live), await anext(live)]
    assert [e.type for e in got] == ["start", "data"]
    late = [e async for e in log.read(handle.stream_id, 0, follow=False)]  # a replay: no transient data
    assert [e.type for e in late] == ["start", "text.delta"] and late[1].seq == 2
    handle.cancel("test over")
    await handle
    await live.aclose()
    assert [e.type for e in await log_history(log, handle.stream_id)] == ["start", "text.delta", "done"]


async def log_history(log: MemoryLog, stream_id: str) -> list[Event]:
    return [e async for e in log.read(stream_id, 0, follow=False)]


async def test_a_delta_that_does_not_apply_ends_the_run_with_a_clear_error_before_any_reader_has_it() -> None:
    log = MemoryLog()
    bad = StateDelta(delta=[{"op": "remove", "path": "/nope"}])
    handle = tokenwire.generate(Scripted([StateSnapshot(snapshot={}), bad, "never"]), "go", log=log)
    response = await handle
    events = await log_history(log, handle.stream_id)
    assert [e.type for e in events] == ["start", "state.snapshot", "error"]
    assert [e.seq for e in events] == [0, 1, 2]  # no seq lost to the refused delta
    assert response.error is not None and response.error.code == "bad_provider_output"
    assert "state.delta cannot be applied" in response.error.message and response.state == {}


async def test_a_tool_yields_data_and_state_into_the_run_s_stream() -> None:
    @tokenwire.tool
    async def search(query: str) -> AsyncIterator[Any]:
        """Search.

        Args:
            query: What to look for.
        """
        yield StateSnapshot(snapshot={"query": query, "hits": 0})
        yield Data(name="hit", data={"doc": "a.md"})
        yield StateDelta(delta=[{"op": "replace", "path": "/hits", "value": 1}])
        yield "1 hit"

    lead = Scripted.turns([ToolCall(call_id="c1", name="search", args={"query": "rivers"})], ["Found it."])
    response = await tokenwire.generate(lead, "go", tools=[search])
    assert response.tool_results[0].result == "1 hit"
    assert response.state == {"query": "rivers", "hits": 1} and [d.data for d in response.data] == [{"doc": "a.md"}]


# -- wire formats ------------------------------------------------------------------------------------


async def stamped() -> list[Event]:
    seen: list[Event] = []
    await tokenwire.generate(Scripted(script()), "go", observers=[seen.append])
    return seen


async def test_agui_carries_state_as_snapshot_and_json_patch_and_data_as_custom_events() -> None:
    """AG-UI's own types validate every frame; applying them as an AG-UI client does gives the
    server's state."""
    from test_agui import EVENTS, check_lifecycle

    encoder = AGUIEvents("t", "r")
    raw = [f[f.index(b"data: ") + 6 :] for e in await stamped() for f in encoder.feed(e)]  # after an id: line
    check_lifecycle([EVENTS.validate_json(f) for f in raw])
    frames = [json.loads(f) for f in raw]
    kinds = [f["type"] for f in frames]
    assert kinds.count("STATE_SNAPSHOT") == 1 and kinds.count("STATE_DELTA") == 2 and kinds.count("CUSTOM") == 3
    state: Any = None
    for f in frames:
        if f["type"] == "STATE_SNAPSHOT":
            state = f["snapshot"]
        elif f["type"] == "STATE_DELTA":
            state = jsonpatch.apply_patch(state, f["delta"])
    assert state == FINAL
    assert [(f["name"], f["value"]) for f in frames if f["type"] == "CUSTOM"][1] == ("progress", {"pct": 50})


async def test_the_ai_sdk_stream_has_data_parts_reconciled_by_id_and_the_state_whole() -> None:
    encoder = UIMessageStream("m1")
    chunks = [json.loads(f[6:]) for e in await stamped() for f in encoder.feed(e) if f.startswith(b"data: {")]
    data = [c for c in chunks if c["type"].startswith("data-")]
    assert data == [
        {"type": "data-state", "id": "state", "data": SNAPSHOT},
        {"type": "data-sources", "data": ["a.md"], "id": "s"},
        {"type": "data-state", "id": "state", "data": {"step": "searching", "found": ["a.md"]}},
        {"type": "data-progress", "data": {"pct": 50}, "transient": True},
        {"type": "data-sources", "data": ["a.md", "b.md"], "id": "s"},
        {"type": "data-state", "id": "state", "data": FINAL},
    ]


# -- read by the formats' own clients (Node) ------------------------------------------------------------


@pytest.mark.e2e  # Node.js and the npm registry
def test_the_ai_sdk_client_keeps_data_parts_in_the_message_and_no_transient_one(node: str) -> None:
    from test_ai_sdk import KEY, read_with_the_sdk

    app = create_app(providers={"m": Scripted(script())}, api_keys=[KEY], log=MemoryLog())
    with serve(app) as url:
        result = read_with_the_sdk(node, "ai", url, "chat-data")
    assert result["errors"] == []
    parts = {p["type"]: p for p in result["message"]["parts"] if p["type"].startswith("data-")}
    assert set(parts) == {"data-state", "data-sources"}  # reconciled by id; the transient one is not kept
    assert parts["data-state"]["data"] == FINAL and parts["data-sources"]["data"] == ["a.md", "b.md"]


@pytest.mark.e2e  # Node.js and the npm registry
def test_agui_s_own_client_applies_the_state_to_what_the_server_has(node: str) -> None:
    from conftest import JS

    key = "agui-state-key-1234"
    app = create_app(providers={"m": Scripted(script())}, api_keys=[key], log=MemoryLog())
    with serve(app) as url:
        done = subprocess.run(
            [node, str(JS / "agui_state.mjs"), url, key], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["state"] == FINAL
    assert result["custom"] == [["sources", ["a.md"]], ["progress", {"pct": 50}], ["sources", ["a.md", "b.md"]]]
