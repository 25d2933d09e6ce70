"""Run trees (tokenwire.tools.tree, tokenwire.log.tree): child runs started by an agent's tools,
marked in their parent, cancelled with it, bounded, and read as one tree."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tokenwire
from tokenwire.core.request import Request
from tokenwire.events import Event, ToolCall, Usage
from tokenwire.log import MemoryLog, TreeCursor, follow_tree
from tokenwire.providers import Scripted, Stall


class Together:
    """A model that answers only once ``n`` of its runs are under way at once (a barrier):
    children that ran one after the other would never answer."""

    model = "together"
    chooses_model = False

    def __init__(self, n: int, answer: str):
        self.barrier = asyncio.Barrier(n)
        self.answer = answer

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        async with asyncio.timeout(10):
            await self.barrier.wait()
        yield Usage(input_tokens=10, output_tokens=2)
        yield f"{self.answer}: {request.messages[-1].content}"


class Delegates:
    """A model that calls tools first and answers once it has their results: stateless, so
    one instance serves children running in parallel (Scripted.turns counts turns per instance)."""

    model = "delegates"

    def __init__(self, first: list[Any], then: list[Any]):
        self.first, self.then = first, then

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        answered = any(m.role == "tool" for m in request.messages)
        async for part in Scripted(self.then if answered else self.first).stream(request):
            yield part


def calls(*pairs: tuple[str, str, dict[str, Any]]) -> list[ToolCall]:
    return [ToolCall(call_id=cid, name=name, args=args) for cid, name, args in pairs]


async def whole_tree(log: MemoryLog, root: str) -> list[Event]:
    return [e async for e in follow_tree(log, root)]


def by_stream(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(e.stream_id, []).append(e)
    return out


async def test_a_three_level_tree_with_parallel_children_is_marked_ordered_and_rolls_up_usage() -> None:
    log = MemoryLog()
    leaf = tokenwire.sub_agent(Together(1, "leaf"), name="lookup", description="Looks one fact up.")
    # the middle agents run in parallel and each asks the leaf once
    middle = Delegates(
        calls(("m1", "lookup", {"task": "a fact"})), [Usage(input_tokens=5, output_tokens=1), "middle done"]
    )
    research = tokenwire.sub_agent(middle, name="research", description="Researches a topic.", tools=[leaf])
    lead = Scripted.turns(
        calls(("r1", "research", {"task": "topic A"}), ("r2", "research", {"task": "topic B"})),
        ["merged"],
    )
    root = tokenwire.generate(lead, "Research A and B", tools=[research], log=log)
    assert (await root).text == "merged"
    streams = by_stream(await whole_tree(log, root.stream_id))
    assert len(streams) == 5  # the root, two researchers, a lookup under each
    for sid, events in streams.items():  # every stream: in order, one start, one terminal, at the end
        assert [e.seq for e in events] == list(range(len(events))), sid
        assert events[0].type == "start" and events[-1].type == "done"
        assert sum(e.type in ("done", "error") for e in events) == 1
    top = streams[root.stream_id]
    marks = [(e.status, e.detail["call_id"]) for e in top if e.type == "step" and e.name == "child"]
    assert sorted(marks) == [("finished", "r1"), ("finished", "r2"), ("started", "r1"), ("started", "r2")]
    results = {e.call_id: e for e in top if e.type == "tool_result"}
    for cid in ("r1", "r2"):  # each child is marked ended before its call's result
        finished = next(e for e in top if e.type == "step" and e.status == "finished" and e.detail["call_id"] == cid)
        assert finished.seq < results[cid].seq and results[cid].result == "middle done"
        assert finished.detail["outcome"] == "done" and finished.detail["finish_reason"] == "stop"
        child = streams[finished.detail["stream_id"]]
        assert child[0].parent is not None and child[0].parent.stream_id == root.stream_id
        assert child[0].parent.call_id == cid and child[0].parent.depth == 1
    leaves = [s for s in streams.values() if s[0].parent is not None and s[0].parent.depth == 2]
    assert len(leaves) == 2 and all(s[0].parent.call_id == "m1" for s in leaves)
    assert {"".join(e.text for e in s if e.type == "text.delta") for s in leaves} == {"leaf: a fact"}
    # usage rolls up: each leaf 10+2, each middle 5+1 of its own plus its leaf's, the root both middles'
    middles = [s for s in streams.values() if s[0].parent is not None and s[0].parent.depth == 1]
    assert all(s[-1].usage == tokenwire.events.TokenUsage(15, 3) for s in middles)
    assert top[-1].usage == tokenwire.events.TokenUsage(30, 6)


async def test_children_of_parallel_calls_run_at_the_same_time() -> None:
    log = MemoryLog()
    both = Together(2, "done")  # answers only when both children wait at once
    worker = tokenwire.sub_agent(both, name="work", description="Does one piece of work.")
    lead = Scripted.turns(calls(("a", "work", {"task": "x"}), ("b", "work", {"task": "y"})), ["ok"])
    root = tokenwire.generate(lead, "go", tools=[worker], log=log)
    response = await root
    assert response.text == "ok" and sorted(r.result for r in response.tool_results) == ["done: x", "done: y"]


async def test_cancelling_a_parent_mid_tree_ends_every_stream_once() -> None:
    log = MemoryLog()
    started = asyncio.Event()

    class Waiting:
        model = "waiting"

        async def stream(self, request: Request) -> AsyncIterator[Any]:
            yield "working"
            started.set()
            await asyncio.Event().wait()  # never answers: cancelled with the tree
            yield "unreachable"

    leaf = tokenwire.sub_agent(Waiting(), name="slow", description="Never finishes.")
    middle = Scripted.turns(calls(("m", "slow", {"task": "t"})), ["never"])
    research = tokenwire.sub_agent(middle, name="research", description="Researches.", tools=[leaf])
    lead = Scripted.turns(calls(("r", "research", {"task": "t"})), ["never"])
    root = tokenwire.generate(lead, "go", tools=[research], log=log)
    async with asyncio.timeout(10):
        await started.wait()
    root.cancel("user stopped it")
    terminal = await root.wait()
    assert terminal.type == "done" and terminal.finish_reason == "cancelled"
    # by the time the parent ended, so had its whole subtree (read without waiting for more)
    streams = by_stream([e async for e in follow_tree(log, root.stream_id, follow=False)])
    assert len(streams) == 3
    for events in streams.values():
        ends = [e for e in events if e.type in ("done", "error")]
        assert len(ends) == 1 and ends[0] is events[-1] and ends[0].finish_reason == "cancelled"
    for events in streams.values():  # a cancelled parent's stream ends at once: no mark after its cancel
        marks = [e.status for e in events if e.type == "step" and e.name == "child"]
        assert marks == ([] if events[0].parent and events[0].parent.depth == 2 else ["started"])


async def test_a_failing_child_is_the_tools_error_and_the_parent_goes_on() -> None:
    log = MemoryLog()
    broken = tokenwire.sub_agent(Scripted(["half", RuntimeError("model fell over")]), name="b", description="Fails.")
    lead = Scripted.turns(calls(("c", "b", {"task": "t"})), ["answered anyway"])
    root = tokenwire.generate(lead, "go", tools=[broken], log=log)
    response = await root
    assert response.text == "answered anyway" and response.finish_reason == "stop"
    (result,) = response.tool_results
    assert result.is_error and "model fell over" in result.result
    events = by_stream(await whole_tree(log, root.stream_id))[root.stream_id]
    finished = next(e for e in events if e.type == "step" and e.name == "child" and e.status == "finished")
    assert finished.detail["outcome"] == "error" and finished.detail["code"] == "provider_error"


async def test_a_tree_past_its_depth_or_fan_out_gets_a_clear_tool_error() -> None:
    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted(["deep"]), name="leaf", description="Leaf.")
    middle = Scripted.turns(calls(("m", "leaf", {"task": "t"})), ["middle"])
    shallow = tokenwire.ToolOptions(max_child_depth=1)  # the middle run is at depth 1: it may not start one
    research = tokenwire.sub_agent(
        middle, name="research", description="Researches.", tools=[leaf], tool_options=shallow
    )
    lead = Scripted.turns(calls(("r", "research", {"task": "t"})), ["top"])
    root = tokenwire.generate(lead, "go", tools=[research], log=log, tool_options=shallow)
    await root
    streams = by_stream(await whole_tree(log, root.stream_id))
    assert len(streams) == 2  # the root and the middle: the leaf never started
    mid = next(ev for sid, ev in streams.items() if sid != root.stream_id)
    (denied,) = [e for e in mid if e.type == "tool_result"]
    assert denied.is_error and "TreeLimitExceeded" in denied.result and "max_child_depth=1" in denied.result

    one = tokenwire.ToolOptions(max_children=1)
    worker = tokenwire.sub_agent(Scripted(["w"]), name="work", description="Works.")
    lead = Scripted.turns(calls(("a", "work", {"task": "x"}), ("b", "work", {"task": "y"})), ["ok"])
    response = await tokenwire.generate(lead, "go", tools=[worker], log=log, tool_options=one)
    errors = [r for r in response.tool_results if r.is_error]
    assert len(errors) == 1 and "max_children=1" in errors[0].result
    assert [r.result for r in response.tool_results if not r.is_error] == ["w"]


async def test_a_tree_s_output_token_budget_caps_each_child_and_refuses_one_past_it() -> None:
    """``max_tree_output_tokens`` 30 below the lead: the first research child writes 1 token, its
    leaf (sharing the budget) starts capped at the 30 left and is cut there; the budget is then
    spent, so the next child is refused with a clear tool error. A child's own, tighter budget
    does not free its subtree from the one above it."""
    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted([f"w{i} " for i in range(40)]), name="leaf", description="Talks a lot.")
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["ok"])
    research = tokenwire.sub_agent(middle, name="research", description="R.", tools=[leaf])
    lead = Scripted.turns(calls(("r1", "research", {"task": "a"})), calls(("r2", "research", {"task": "b"})), ["x"])
    budget = tokenwire.ToolOptions(max_tree_output_tokens=30)
    root = tokenwire.generate(lead, "go", tools=[research], tool_options=budget, log=log)
    response = await root
    first, second = response.tool_results
    assert not first.is_error and first.result == "ok"
    assert second.is_error and "used up their output tokens (max_tree_output_tokens=30, 31 generated)" in second.result
    streams = by_stream(await whole_tree(log, root.stream_id))
    (talk,) = [evs for evs in streams.values() if evs[0].parent is not None and evs[0].parent.depth == 2]
    assert talk[-1].finish_reason == "length" and sum(e.type == "text.delta" for e in talk) == 30


async def test_a_child_left_running_by_its_tool_is_cancelled_and_marked_before_the_result() -> None:
    log = MemoryLog()

    @tokenwire.tool
    async def kick_off(task: str) -> str:
        """Starts a run and returns without waiting for it."""
        tokenwire.generate(Scripted(["x", Stall()]), task)
        return "started"

    lead = Scripted.turns(calls(("k", "kick_off", {"task": "t"})), ["fine"])
    root = tokenwire.generate(lead, "go", tools=[kick_off], log=log)
    assert (await root).text == "fine"
    streams = by_stream(await whole_tree(log, root.stream_id))
    top = streams[root.stream_id]
    finished = next(e for e in top if e.type == "step" and e.name == "child" and e.status == "finished")
    result = next(e for e in top if e.type == "tool_result")
    assert finished.seq < result.seq and finished.detail["finish_reason"] == "cancelled"
    child = streams[finished.detail["stream_id"]]
    assert child[-1].type == "done" and child[-1].finish_reason == "cancelled"


async def test_a_run_outside_any_tool_is_a_root_and_so_is_a_sync_tools_run() -> None:
    plain = tokenwire.generate(Scripted(["hi"]), "x")
    await plain
    first, *_ = [e async for e in plain.log.read(plain.stream_id, follow=False)]
    assert first.type == "start" and first.parent is None
    ran: list[tokenwire.Response] = []

    @tokenwire.tool
    def blocking(task: str) -> str:
        """A sync tool: it runs in a worker thread, on a loop of its own."""
        ran.append(tokenwire.run_sync(Scripted(["sync"]), task))
        return ran[-1].text

    log = MemoryLog()
    lead = Scripted.turns(calls(("s", "blocking", {"task": "t"})), ["ok"])
    root = tokenwire.generate(lead, "go", tools=[blocking], log=log)
    assert (await root).tool_results[0].result == "sync"
    tree = await whole_tree(log, root.stream_id)  # no child: no mark, no second stream
    assert {e.stream_id for e in tree} == {root.stream_id} and all(e.name == "turn" for e in tree if e.type == "step")


@pytest.mark.parametrize("seed", range(8))
async def test_following_a_tree_resumes_after_any_drop_with_nothing_lost_or_twice(seed: int) -> None:
    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted(["a", "b", "c"]), name="leaf", description="Leaf.")
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["d", "e"])
    research = tokenwire.sub_agent(middle, name="research", description="R.", tools=[leaf])
    lead = Scripted.turns(calls(("r1", "research", {"task": "1"}), ("r2", "research", {"task": "2"})), ["f"])
    root = tokenwire.generate(lead, "go", tools=[research], log=log)
    rng = random.Random(seed)
    cursor = TreeCursor(root.stream_id)
    seen: list[tuple[str, int]] = []
    while True:  # read live, dropping the connection at random points, resuming from the cursor
        drop_after = rng.randint(1, 6)
        got = 0
        if seed % 2:
            cursor = TreeCursor.parse(cursor.token())  # the compact form is the whole resume state
        tree = follow_tree(log, root.stream_id, cursor)
        async for event in tree:
            seen.append((event.stream_id, event.seq))
            got += 1
            if got == drop_after:
                break
        await tree.aclose()
        if got < drop_after:
            break  # the tree ended
    await root
    everything = [(e.stream_id, e.seq) for e in await whole_tree(log, root.stream_id)]
    assert len(seen) == len(set(seen)) and sorted(seen) == sorted(everything) and len(everything) > 20


async def test_the_ai_sdk_stream_shows_each_child_s_text_as_its_call_s_preliminary_output() -> None:
    """Fed the whole tree, the UI message stream carries the children's text (not the
    grandchildren's) as preliminary outputs of the root's calls, growing, every few deltas and
    at each child's end, and none after the call's result."""
    import json

    from tokenwire.wire.ai_sdk import PRELIMINARY_EVERY, UIMessageStream

    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted(["deep "] * 5), name="leaf", description="Leaf.")
    words = [f"w{i} " for i in range(40)]
    research = tokenwire.sub_agent(
        Delegates(calls(("m", "leaf", {"task": "t"})), words), name="research", description="R.", tools=[leaf]
    )
    lead = Scripted.turns(calls(("r1", "research", {"task": "a"})), ["done"])
    root = tokenwire.generate(lead, "go", tools=[research], log=log)
    await root
    encoder = UIMessageStream("m1")
    chunks = [
        json.loads(f[6:])
        for e in await whole_tree(log, root.stream_id)
        for f in encoder.feed(e)
        if f.startswith(b"data: {")
    ]
    outputs = [c for c in chunks if c["type"] == "tool-output-available"]
    preliminary = [c["output"] for c in outputs if c.get("preliminary")]
    assert len(preliminary) == len(range(0, 40, PRELIMINARY_EVERY)) + 1  # every few deltas, and at its end
    assert all("".join(words).startswith(p) for p in preliminary) and preliminary[-1] == "".join(words)
    assert outputs[-1] == {"type": "tool-output-available", "toolCallId": "r1", "output": "".join(words)}
    assert "deep" not in json.dumps(chunks)  # a grandchild shows only through its parent's answer


async def test_check_tree_accepts_a_cursor_of_the_tree_s_own_runs_and_refuses_any_other() -> None:
    from tokenwire.errors import InvalidRequest
    from tokenwire.log import check_tree

    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted(["a"]), name="leaf", description="Leaf.")
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["b"])
    research = tokenwire.sub_agent(middle, name="research", description="R.", tools=[leaf])
    root = tokenwire.generate(
        Scripted.turns(calls(("r", "research", {"task": "x"})), ["c"]), "go", tools=[research], log=log
    )
    other = tokenwire.generate(Scripted(["other"]), "go", log=log)
    await root
    await other
    streams = list(by_stream(await whole_tree(log, root.stream_id)))
    assert len(streams) == 3
    await check_tree(log, TreeCursor(root.stream_id, dict.fromkeys(streams, 0)))  # the grandchild too
    for outside in (other.stream_id, "no-such-stream"):
        with pytest.raises(InvalidRequest, match="not a run below"):
            await check_tree(log, TreeCursor(root.stream_id, {root.stream_id: 0, outside: 0}))


async def test_a_child_s_own_budget_stays_under_the_one_above_it() -> None:
    """The lead allows 10 output tokens below it; the research child's own ToolOptions allow its
    subtree 1000: its leaf still starts capped at what the lead's budget has left."""
    log = MemoryLog()
    leaf = tokenwire.sub_agent(Scripted([f"w{i} " for i in range(40)]), name="leaf", description="Talks a lot.")
    generous = tokenwire.ToolOptions(max_tree_output_tokens=1000)
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["ok"])
    research = tokenwire.sub_agent(middle, name="research", description="R.", tools=[leaf], tool_options=generous)
    lead = Scripted.turns(calls(("r1", "research", {"task": "a"})), ["x"])
    root = tokenwire.generate(
        lead, "go", tools=[research], tool_options=tokenwire.ToolOptions(max_tree_output_tokens=10), log=log
    )
    await root
    streams = by_stream(await whole_tree(log, root.stream_id))
    (talk,) = [evs for evs in streams.values() if evs[0].parent is not None and evs[0].parent.depth == 2]
    assert talk[-1].finish_reason == "length" and sum(e.type == "text.delta" for e in talk) == 10


async def test_a_child_that_starts_while_its_tree_is_read_delivers_its_transient_data_to_that_reader() -> None:
    """Transient data is live-only: a tree reader there before a child started gets the child's
    transient events (the child's reader opens only when the mark arrives, later than they were
    written); a replay of the same tree does not."""
    from tokenwire.events import Data

    log = MemoryLog()
    child = tokenwire.sub_agent(
        Scripted([Data(name="progress", data=1, transient=True), "done"]), name="kid", description="K."
    )
    lead = Scripted.turns(calls(("k", "kid", {"task": "t"})), ["ok"])
    root = tokenwire.generate(lead, "go", tools=[child], log=log)
    live = [e async for e in follow_tree(log, root.stream_id)]
    await root
    replay = await whole_tree(log, root.stream_id)
    assert [e.type for e in live].count("data") == 1
    assert [e.type for e in replay].count("data") == 0
    assert len(live) == len(replay) + 1
