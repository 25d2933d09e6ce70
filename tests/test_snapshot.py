"""Snapshot, then tail: a reader that joins a run late gets its state in one message.

Property (hypothesis, generated transcripts): folding a prefix, sending it as JSON and adding the
rest on the other side equals folding the whole run; differential against the durable runs' fold
(core/fold.RunState: turn texts, calls, results, usage) and against the events themselves (state,
data). Then the server's ``?snapshot=1`` join of a long run: one ``snapshot`` event, then the tail
from its ``next_seq``, equal to a full replay's fold.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx_sse
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.core.fold import fold
from tokenwire.core.snapshot import Snapshot
from tokenwire.events import (
    Data,
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    StateDelta,
    StateSnapshot,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    decode,
)
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted
from tokenwire.server import ServerConfig, create_app
from wire import serve

KEY = "snapshot-key-1"


@st.composite
def transcripts(draw: Any) -> list[Event]:
    """A run's events: turns of text, reasoning and tool calls (streamed, then whole), results,
    usage, steps, application state and data; a restarted turn now and then; maybe an end."""
    events: list[Event] = [Start(model="m")]
    turn, calls, keys = 0, [], 0
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(
            st.sampled_from(
                [
                    "text",
                    "text",
                    "reason",
                    "turn",
                    "end_turn",
                    "restart",
                    "call",
                    "result",
                    "usage",
                    "step",
                    "child",
                    "state",
                    "delta",
                    "data",
                ]
            )
        )
        if kind == "text":
            events.append(TextDelta(draw(st.text(max_size=4))))
        elif kind == "reason":
            events.append(ReasoningDelta(draw(st.text(max_size=4))))
        elif kind == "turn":
            turn += 1
            events.append(Step(name="turn", status="started", detail={"turn": turn}))
        elif kind == "end_turn":
            events.append(Step(name="turn", status="finished", detail={"turn": turn}))
        elif kind == "restart" and turn:
            events.append(Step(name="turn", status="started", detail={"turn": turn, "restarted": True}))
        elif kind == "call":
            cid = f"c{len(calls)}"
            calls.append(cid)
            events.append(ToolCallStart(call_id=cid, name="t"))
            events.append(ToolCallDelta(call_id=cid, args_delta='{"a": '))
            if draw(st.booleans()):
                events.append(ToolCallDelta(call_id=cid, args_delta="1}"))
                events.append(ToolCall(call_id=cid, name="t", args={"a": 1}))
        elif kind == "result" and calls:
            cid = draw(st.sampled_from(calls))
            events.append(ToolResult(call_id=cid, name="t", result=draw(st.integers()), is_error=draw(st.booleans())))
        elif kind == "usage":
            events.append(Usage(input_tokens=draw(st.integers(0, 9)), output_tokens=draw(st.integers(0, 9))))
        elif kind == "step":
            events.append(Step(name="retrieval", status=draw(st.sampled_from(["started", "finished"]))))
        elif kind == "child":
            usage = {"input_tokens": draw(st.integers(0, 5)), "output_tokens": draw(st.integers(0, 5))}
            events.append(Step(name="child", status="finished", detail={"stream_id": "kid", "usage": usage}))
        elif kind == "state":
            events.append(StateSnapshot(snapshot={"n": draw(st.integers(0, 3)), "items": []}))
        elif kind == "delta" and any(isinstance(e, StateSnapshot) for e in events):
            keys += 1
            events.append(StateDelta(delta=[{"op": "add", "path": "/items/-", "value": keys}]))
        elif kind == "data":
            name = draw(st.sampled_from(["a", "b"]))
            ident = draw(st.sampled_from(["", "x", "y"]))
            events.append(Data(name=name, data={"v": draw(st.integers(0, 9))}, id=ident, transient=draw(st.booleans())))
    ending = draw(st.sampled_from([None, "done", "error"]))
    if ending == "done":
        events.append(Done(finish_reason="stop"))
    elif ending == "error":
        events.append(Error(code="provider_error", message="boom"))
    return [tokenwire.events.decode(tokenwire.events.encode(_at(e, i))) for i, e in enumerate(events)]


def _at(event: Event, seq: int) -> Event:
    import msgspec

    return msgspec.structs.replace(event, stream_id="s", seq=seq)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=transcripts(), data=st.data())
def test_a_snapshot_of_a_prefix_plus_the_tail_equals_the_whole_fold(events: list[Event], data: Any) -> None:
    cut = data.draw(st.integers(0, len(events)))
    joined = Snapshot.from_json(Snapshot.of(events[:cut]).to_json())  # what the joining reader got
    for event in events[cut:]:
        joined.add(event)
    whole = Snapshot.of(events)
    assert joined.to_dict() == whole.to_dict()
    assert json.loads(whole.to_json()) == whole.to_dict()  # JSON, nothing else

    # Differential: the durable runs' fold agrees on turns, text, calls, results and usage.
    state, snap = fold(events), whole.to_dict()
    turns = snap["turns"]
    if len(turns) == len(state.turns) + 1 and turns[0] == {**turns[0], "turn": 0, "text": "", "calls": {}}:
        turns = turns[1:]  # reasoning before any turn: the viewer's turn 0 (the durable fold keeps it aside)
    assert [t["text"] for t in turns] == [t.text for t in state.turns]
    for mine, theirs in zip(turns, state.turns, strict=True):
        whole_calls = {cid: c for cid, c in mine["calls"].items() if c["args"] is not None}
        assert list(whole_calls) == list(theirs.calls)
        assert {cid: c["result"] for cid, c in mine["calls"].items() if cid in theirs.results} == {
            cid: r.result for cid, r in theirs.results.items()
        }
    assert [snap["usage"]["input_tokens"], snap["usage"]["output_tokens"]] == state.usage
    # ... and the events themselves: the lasting data, latest per id; the terminal; the state.
    lasting = [e for e in events if isinstance(e, Data) and not e.transient]
    latest = {(e.id or f"#{e.seq}"): e for e in lasting}
    assert sorted(json.dumps(d, sort_keys=True) for d in snap["data"]) == sorted(
        json.dumps({"name": e.name, "data": e.data, "id": e.id}, sort_keys=True) for e in latest.values()
    )
    assert (snap["terminal"] is not None) == (events[-1].type in ("done", "error"))
    assert snap["next_seq"] == len(events)


async def test_joining_a_long_run_with_a_snapshot_equals_a_full_replay() -> None:
    """A 20,000-event run (its turn still open): ``?snapshot=1`` answers one ``snapshot`` event and
    the live tail after it; the snapshot plus the tail fold to what the whole log folds to, and
    the snapshot is a small fraction of the replay's bytes."""
    words = [f"w{i} " for i in range(20_000)] + [tokenwire.providers.Delay(0.3)] + ["tail1 ", "tail2"]
    application = create_app(
        providers={"long": Scripted(words)}, api_keys=[KEY], log=MemoryLog(), config=ServerConfig(ping_s=0.05)
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with serve(application) as url:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            info = (await http.post("/v1/runs", json={"prompt": "go", "background": True})).json()
            sid, token = info["stream_id"], info["read_token"]
            path = f"/v1/streams/{sid}/events"
            # until the long part is in the log (the tail is not yet): its event 20,000 arrives
            auth = {"Authorization": f"Bearer {token}"}  # the read token (never in a URL)
            async with httpx_sse.aconnect_sse(http, "GET", path, params={"from_seq": 20_000}, headers=auth) as sse:
                async for _ in sse.aiter_sse():
                    break
            snapshot, tail, snapshot_bytes = None, [], 0
            async with httpx_sse.aconnect_sse(http, "GET", path, params={"snapshot": "1"}, headers=auth) as source:
                async for sse in source.aiter_sse():
                    if sse.event == "snapshot":
                        snapshot_bytes = len(sse.data)
                        snapshot = Snapshot.from_json(sse.data)
                        assert int(sse.id) == snapshot.next_seq - 1  # Last-Event-ID resumes after it
                        continue
                    event = decode(sse.data.encode())
                    tail.append(event)
                    if event.type in ("done", "error"):
                        break
            async with httpx_sse.aconnect_sse(http, "GET", path, headers=auth) as source:
                full = [decode(sse.data.encode()) async for sse in source.aiter_sse()]  # the whole replay
    assert snapshot is not None and snapshot.next_seq >= 20_000
    assert [e.seq for e in tail] == list(range(snapshot.next_seq, len(full)))  # the tail, each once
    for event in tail:
        snapshot.add(event)
    assert snapshot == Snapshot.of(full)
    replay_bytes = sum(len(tokenwire.events.encode(e)) for e in full)
    assert snapshot_bytes * 5 < replay_bytes


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_a_client_joins_with_a_snapshot_and_keeps_it_current(transport: str) -> None:
    """``Client.subscribe(..., snapshot=Snapshot())`` (SSE) and ``WebSocketClient.subscribe(...)``
    (the ``subscribe`` op with ``snapshot``): the server's snapshot fills it, only the events
    after it are yielded, each added as it is; a finished run's join yields nothing."""
    from tokenwire.client import Client, WebSocketClient

    words = [f"w{i} " for i in range(300)] + [tokenwire.providers.Delay(0.2), "end"]
    application = create_app(
        providers={"p": Scripted(words)}, api_keys=[KEY], log=MemoryLog(), config=ServerConfig(ping_s=0.05)
    )
    with serve(application) as url:
        async with Client(url, api_key=KEY) as client:
            info = await client.create_run("go", background=True)
            async for _ in client.subscribe(info.stream_id, info.read_token, from_seq=300):
                break  # the 300 words are in the log

            async def join(state: Snapshot) -> list[Event]:
                if transport == "sse":
                    return [e async for e in client.subscribe(info.stream_id, info.read_token, snapshot=state)]
                async with WebSocketClient(url.replace("http://", "ws://") + "/v1/ws") as ws:
                    return [e async for e in ws.subscribe(info.stream_id, info.read_token, snapshot=state)]

            state = Snapshot()
            tail = await join(state)
            full = [e async for e in client.subscribe(info.stream_id, info.read_token)]
            assert tail and tail[0].seq > 300 and tail == full[tail[0].seq :]  # only the tail, in order
            assert state == Snapshot.of(full) and state.finished
            ended = Snapshot()
            assert await join(ended) == []
            assert ended == Snapshot.of(full)
