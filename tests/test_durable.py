"""Durable runs in one process (on the memory log, and on Redis with ``--log-backend redis``):
a call that needs approval suspends the run (no task, no lease, no memory), the owner's answer
over the API resumes it, a denial or a timeout is an error result, a suspended run can be
cancelled; the run's state folded from its log is what the agent loop sends the model.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from tokenwire.core.fold import fold
from tokenwire.core.request import Message, ToolSpec
from tokenwire.errors import Conflict, Forbidden, RunSuspended, StreamNotFound
from tokenwire.events import Event, ToolCall
from tokenwire.log.ownership import SUSPENDED
from tokenwire.providers import Scripted
from tokenwire.server import RunBody, RunService, ServerConfig
from tokenwire.testing import Transcript
from tokenwire.tools import tool
from tokenwire.tools.agent import Agent
from tokenwire.tools.options import ToolOptions

KEYS = ["owner-key-1234", "other-key-5678"]


def call(name: str, cid: str = "c1", **args: Any) -> ToolCall:
    return ToolCall(call_id=cid, name=name, args=args)


def shape(events: list[Event]) -> list[str]:
    out = []
    for e in events:
        name = e.type
        if e.type == "step":
            name = f"step:{e.name}:{e.status}"  # type: ignore[union-attr]
        out.append(name)
    return out


async def read_all(service: RunService, stream_id: str) -> list[Event]:
    return [e async for e in service.log.read(stream_id)]


def make_service(ran: list[str], *, turns: list[list[Any]] | None = None, **config: Any) -> RunService:
    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        ran.append(f"wired {amount}")
        return "sent"

    model = Scripted.turns(*(turns or [[call("wire_money", amount=5)], ["Sent", " it."]]))
    return RunService(providers={"m": model}, tools=[wire_money], api_keys=KEYS, config=ServerConfig(**config))


async def test_an_approval_suspends_the_run_and_the_owners_answer_resumes_it() -> None:
    ran: list[str] = []
    service = make_service(ran)
    owner, other = service.authenticate(KEYS[0]), service.authenticate(KEYS[1])
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    sid = run.stream_id
    # Suspended: no task, no live run, no lease held; only log entries.
    assert run.handle.done() and service.runs.live() == 0 and service.runs.get(sid) is None
    assert await service.log.ownership.lease_state(sid) == SUSPENDED
    info = await service.log.info(sid)
    assert not info.finished and ran == []

    with pytest.raises(Forbidden):
        await service.approve(sid, "c1", True, owner=other)
    with pytest.raises(StreamNotFound):
        await service.approve(sid, "no-such-call", True, owner=owner)
    await service.approve(sid, "c1", True, owner=owner)
    events = await read_all(service, sid)
    assert shape(events) == [
        "start",
        "step:turn:started",
        "tool_call",
        "step:approval:started",
        "step:suspend:started",  # readers are told the run waits (a format may end its response here)
        "step:approval:finished",
        "tool_result",
        "step:turn:finished",
        "step:turn:started",
        "text.delta",
        "text.delta",
        "step:turn:finished",
        "done",
    ]
    assert [e.seq for e in events] == list(range(len(events)))  # one stream, gapless, across the suspension
    assert events[4].detail["reason"] == "waiting for approval of c1"  # type: ignore[union-attr]
    assert events[5].detail == {  # type: ignore[union-attr]
        "call_id": "c1",
        "tool": "wire_money",
        "args": {"amount": 5},
        "approved": True,
        "by": "api",
    }
    assert ran == ["wired 5"] and events[-1].finish_reason == "stop"  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        await service.approve(sid, "c1", True, owner=owner)  # answered already
    await service.shutdown(1.0)


async def test_a_denial_is_an_error_result_and_the_model_goes_on() -> None:
    ran: list[str] = []
    service = make_service(ran)
    owner = service.authenticate(KEYS[0])
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    await service.approve(run.stream_id, "c1", False, owner=owner)
    events = await read_all(service, run.stream_id)
    result = next(e for e in events if e.type == "tool_result")
    assert result.is_error and "denied (api)" in result.result  # type: ignore[union-attr]
    assert ran == [] and events[-1].type == "done"
    await service.shutdown(1.0)


async def test_an_approval_that_never_comes_is_a_denial_after_the_timeout() -> None:
    ran: list[str] = []
    service = make_service(ran, approval_timeout_s=0.2)
    service.durable.poll_s = 0.05
    owner = service.authenticate(KEYS[0])
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    events = await asyncio.wait_for(read_all(service, run.stream_id), 30)  # the supervisor resumes it
    decision = next(e for e in events if e.type == "step" and e.name == "approval" and e.status == "finished")  # type: ignore[union-attr]
    assert decision.detail["approved"] is False and decision.detail["by"] == "timeout"  # type: ignore[union-attr]
    assert ran == [] and events[-1].type == "done"
    await service.shutdown(1.0)


async def test_an_answer_after_the_approval_expired_is_refused_before_the_run_is_carried_on() -> None:
    ran: list[str] = []
    service = make_service(ran, approval_timeout_s=0.2)
    service.durable.poll_s = 3600.0  # no supervisor round comes: the run stays suspended, expired
    owner = service.authenticate(KEYS[0])
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    asked = next(e for e in await service.history(run.stream_id) if e.type == "step" and e.name == "approval")
    await asyncio.sleep(max(0.0, asked.detail["expires"] - time.time()) + 0.05)  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="expired: it counts as denied"):
        await service.approve(run.stream_id, "c1", True, owner=owner)
    assert ran == []  # the late yes did not wire the money
    await service.shutdown(1.0)


async def test_a_suspended_run_is_cancelled_with_one_terminal() -> None:
    service = make_service([])
    owner = service.authenticate(KEYS[0])
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    assert await service.cancel(run.stream_id, "changed my mind")
    events = await read_all(service, run.stream_id)
    assert events[-1].type == "done" and events[-1].finish_reason == "cancelled"  # type: ignore[union-attr]
    assert sum(e.type in ("done", "error") for e in events) == 1
    with pytest.raises(Conflict):
        await service.approve(run.stream_id, "c1", True, owner=owner)
    await service.shutdown(1.0)


async def test_a_tool_that_is_not_retry_safe_starts_only_once_its_call_is_in_the_log() -> None:
    seen: list[list[str]] = []
    service: RunService

    @tool
    async def pay(amount: int) -> str:
        """Pay once."""
        seen.append([e.type for e in await service.history(sid[0])])
        return "paid"

    sid: list[str] = []
    model = Scripted.turns([call("pay", amount=1)], ["done"])
    service = RunService(providers={"m": model}, tools=[pay], api_keys=KEYS)
    run = await service.start(RunBody(prompt="go", tools=["pay"]), owner=service.authenticate(KEYS[0]))
    sid.append(run.stream_id)
    await run.handle.wait()
    assert seen and seen[0][-1] == "tool_call"  # readable by any node before the tool ran
    await service.shutdown(1.0)


# -- the fold: what a node that carries a run on sends the model ------------------------------------


def random_turns(rng: random.Random) -> list[list[Any]]:
    turns: list[list[Any]] = []
    for t in range(rng.randint(1, 4)):
        items: list[Any] = [f"w{t}.{i} " for i in range(rng.randint(0, 3))]
        items += [call("echo", f"c{t}.{k}", x=rng.randint(0, 9)) for k in range(rng.randint(1, 3))]
        turns.append(items)
    turns.append(["final answer"])
    return turns


@pytest.mark.parametrize("seed", range(25))
async def test_the_fold_of_any_prefix_gives_the_messages_the_agent_sent_next(seed: int) -> None:
    """Differential: the live agent loop is the oracle. For every turn it started, folding the log
    up to that turn's start gives exactly the messages the model then received."""
    rng = random.Random(seed)

    @tool
    def echo(x: int) -> int:
        """Echo."""
        if x == 7:
            raise ValueError("seven")  # an error result too
        return x

    model = Scripted.turns(*random_turns(rng))
    t = Transcript()
    agent = Agent(model, [echo], ToolOptions(max_steps=8))
    from tokenwire import generate

    await generate(agent, "go", observers=[t])
    starts = [i for i, e in enumerate(t.events) if e.type == "step" and e.name == "turn" and e.status == "started"]  # type: ignore[union-attr]
    assert len(starts) == len(model.requests)
    for i, request in zip(starts, model.requests, strict=True):
        state = fold(t.events[: i + 1])
        assert state.messages([Message("user", "go")]) == request.messages
    final = fold(t.events)
    assert final.finished and final.next_seq == len(t.events)


def _fold_cost(n: int) -> float:
    rng = random.Random(0)
    model_turns = [[*(f"t{i} " for i in range(n // 4)), call("echo", f"c{k}", x=1)] for k in range(4)]
    from tokenwire.events import Start, Step, TextDelta, ToolResult

    events: list[Event] = [Start(model="m", seq=0)]
    for k, turn in enumerate(model_turns):
        events.append(Step(name="turn", status="started", detail={"turn": k + 1}, seq=len(events)))
        for item in turn:
            if isinstance(item, str):
                events.append(TextDelta(item, seq=len(events)))
            else:
                events.append(ToolCall(call_id=item.call_id, name="echo", args={}, seq=len(events)))
                events.append(ToolResult(call_id=item.call_id, name="echo", result=rng.random(), seq=len(events)))
        events.append(Step(name="turn", status="finished", detail={"turn": k + 1}, seq=len(events)))
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fold(events).messages([])
        best = min(best, time.process_time() - t0)
    return best


def test_folding_is_linear_in_the_log() -> None:
    """8x the events cost about 8x the work: a ratio of CPU times, not a wall-clock bound."""
    small, large = _fold_cost(20_000), _fold_cost(160_000)
    assert large / small < 24, f"8x events cost {large / small:.1f}x"


# -- the embedded model carries a turn on from its prefix ---------------------------------------------


@pytest.mark.e2e
async def test_the_embedded_model_continues_a_handed_over_turn_from_its_prefix() -> None:
    """A run handed over mid-answer (as on shutdown) is carried on by the supervisor from the
    text in the log: with greedy decoding the answer reads exactly as the uninterrupted one."""
    from tokenwire.providers.llama import LlamaCpp

    model = LlamaCpp.default()
    try:
        service = RunService(providers={"llama": model}, api_keys=KEYS)
        service.durable.poll_s = 0.05
        owner = service.authenticate(KEYS[0])
        body = RunBody(prompt="List the days of the week, comma-separated.", temperature=0, seed=1, max_tokens=40)
        whole = await service.start(body, owner=owner)
        await whole.handle.wait()
        reference = whole.handle.result().text
        run = await service.start(body, owner=owner)
        deltas = 0
        async for event in service.log.read(run.stream_id):
            if event.type == "text.delta":
                deltas += 1
                if deltas == 8:
                    run.handle.suspend("handed over (test)", until=0.0)
                    break
        with pytest.raises(RunSuspended):
            await run.handle.wait()
        events = await asyncio.wait_for(read_all(service, run.stream_id), 120)
        assert [e.seq for e in events] == list(range(len(events))) and events[-1].type == "done"
        texts = [e.text for e in events if e.type == "text.delta"]  # type: ignore[union-attr]
        prefix, rest = "".join(texts[:8]), "".join(texts[8:])
        assert deltas == 8 and reference.startswith(prefix) and rest.strip()  # carried on, not ended
        # Seamless: the continuation goes on from the prefix, it does not start the answer again.
        # (Not token-for-token the uninterrupted answer: the log keeps text, and the prefix is
        # tokenized again, so greedy decoding may take another path at the cut.)
        assert not rest.lstrip().startswith(prefix.strip()[:12]), (prefix, rest)
        assert sum(e.type == "start" for e in events) == 1
        await service.shutdown(1.0)
    finally:
        model.close()


# -- approvals over a WebSocket and a gRPC session ---------------------------------------------------


async def test_approvals_arrive_over_a_websocket_and_a_grpc_session() -> None:
    """The session op ``approve`` (one implementation for both transports): the connection's API
    key must own the run; the run resumes on the subscription that follows it."""
    import json

    import grpc
    import websockets

    from tokenwire.grpc import tokenwire_pb2 as pb
    from tokenwire.grpc import tokenwire_pb2_grpc as pb_grpc
    from tokenwire.log import MemoryLog
    from tokenwire.server import create_app
    from wire import serve

    ran: list[str] = []

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        ran.append(f"wired {amount}")
        return "sent"

    model = Scripted.turns(*[[call("wire_money", amount=5)], ["Sent."]] * 2)  # two runs, two turns each
    app = create_app(
        providers={"m": model},
        tools=[wire_money],
        api_keys=KEYS,
        log=MemoryLog(),
        config=ServerConfig(grpc_port=0),
    )
    service: RunService = app.state.tokenwire
    with serve(app, lifespan="on") as url:
        auth = {"Authorization": f"Bearer {KEYS[0]}"}
        ws_url = url.replace("http://", "ws://") + "/v1/ws"
        async with websockets.connect(ws_url, additional_headers=auth) as ws:
            await ws.send(json.dumps({"op": "run", "prompt": "pay", "tools": ["wire_money"]}))
            run = json.loads(await ws.recv())
            types: list[str] = []
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("op") == "approve":
                    assert msg["status"] == "resumed"
                    continue
                types.append(msg["type"])
                if msg["type"] == "step" and msg["name"] == "approval" and msg["status"] == "started":
                    while service.runs.live():  # noqa: ASYNC110 - the run suspends once its turn is done
                        await asyncio.sleep(0.01)
                    await ws.send(
                        json.dumps({"op": "approve", "stream_id": run["stream_id"], "call_id": "c1", "approved": True})
                    )
                if msg["type"] in ("done", "error"):
                    break
        assert types[-1] == "done" and ran == ["wired 5"]

        import httpx

        async with httpx.AsyncClient(base_url=url, headers=auth) as http:
            created = (await http.post("/v1/runs", json={"prompt": "pay", "tools": ["wire_money"]})).json()
            while (await service.log.ownership.lease_state(created["stream_id"])) != SUSPENDED:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        target = f"127.0.0.1:{service.grpc.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.TokenwireStub(channel)
            session = stub.Session(metadata=(("authorization", f"Bearer {KEYS[1]}"),))  # not the owner
            approve = pb.ApproveRequest(stream_id=created["stream_id"], call_id="c1", approved=True)
            await session.write(pb.SessionRequest(approve=approve))
            refused = await session.read()
            assert refused.WhichOneof("reply") == "error" and refused.error.code == "forbidden"
            await session.done_writing()
            session = stub.Session(metadata=(("authorization", f"Bearer {KEYS[0]}"),))
            await session.write(pb.SessionRequest(approve=approve))
            accepted = await session.read()
            assert accepted.accepted.op == "approve" and accepted.accepted.status == "resumed", accepted
            await session.done_writing()
        from tokenwire.client import Client

        async with Client(url) as reader:  # the server's loop is another thread's: read it over HTTP
            events = [e async for e in reader.subscribe(created["stream_id"], created["read_token"])]
        assert events[-1].type == "done" and ran == ["wired 5", "wired 5"]


async def test_without_api_keys_an_approval_needs_the_runs_token_on_every_transport() -> None:
    """A server without API keys has one anonymous caller, so being the run's owner proves
    nothing: the token that can cancel the run (whoever started it has it) answers its
    approvals, over HTTP, a WebSocket and a gRPC session. No credential, the read token or
    another run's token is refused; with API keys, that token works beside the owner's key."""
    import json

    import grpc
    import httpx
    import websockets

    from tokenwire.client import Client
    from tokenwire.grpc import tokenwire_pb2 as pb
    from tokenwire.grpc import tokenwire_pb2_grpc as pb_grpc
    from tokenwire.log import MemoryLog
    from tokenwire.server import create_app
    from wire import serve

    ran: list[str] = []

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        ran.append(f"wired {amount}")
        return "sent"

    class Payer:
        """Asks to pay, then answers once the call has its result: the same for every run."""

        model = "payer"

        async def stream(self, request: Any) -> Any:
            if request.messages[-1].role == "tool":
                yield "Sent."
            else:
                yield call("wire_money", amount=5)

    app = create_app(
        providers={"m": Payer()}, tools=[wire_money], api_keys=None, log=MemoryLog(), config=ServerConfig(grpc_port=0)
    )
    service: RunService = app.state.tokenwire
    with serve(app, lifespan="on") as url:
        async with httpx.AsyncClient(base_url=url) as http:

            async def suspended() -> dict[str, str]:
                created: dict[str, str] = (
                    await http.post("/v1/runs", json={"prompt": "pay", "tools": ["wire_money"]})
                ).json()
                while (await service.log.ownership.lease_state(created["stream_id"])) != SUSPENDED:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                return created

            a, b, c = await suspended(), await suspended(), await suspended()
            answer = {"call_id": "c1", "approved": True}

            async def approve(run: dict[str, str], credential: str | None) -> int:
                headers = {"Authorization": f"Bearer {credential}"} if credential else {}
                r = await http.post(f"/v1/streams/{run['stream_id']}/approvals", json=answer, headers=headers)
                return r.status_code

            assert await approve(a, None) == 401
            assert await approve(a, a["read_token"]) == 403  # reads, cannot cancel: cannot approve
            assert await approve(a, b["token"]) == 403  # another run's
            assert ran == []
            assert await approve(a, a["token"]) == 202
        ws_url = url.replace("http://", "ws://") + "/v1/ws"
        async with websockets.connect(ws_url) as ws:
            op = {"op": "approve", "stream_id": b["stream_id"], "call_id": "c1", "approved": True}
            await ws.send(json.dumps(op))
            refused = json.loads(await ws.recv())
            assert (refused["op"], refused["code"]) == ("error", "unauthorized")  # the socket stays open
            await ws.send(json.dumps({**op, "token": b["token"]}))
            assert json.loads(await ws.recv())["status"] == "resumed"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
            session = pb_grpc.TokenwireStub(channel).Session()
            approve_c = pb.ApproveRequest(stream_id=c["stream_id"], call_id="c1", approved=True, token=c["token"])
            await session.write(pb.SessionRequest(approve=approve_c))
            accepted = await session.read()
            assert accepted.accepted.status == "resumed", accepted
            await session.done_writing()
        async with Client(url) as reader:
            for run in (a, b, c):
                events = [e async for e in reader.subscribe(run["stream_id"], run["read_token"])]
                assert events[-1].type == "done", run
    assert ran == ["wired 5"] * 3

    # With API keys, the run's token answers too (the client that started it holds it).
    keyed = make_service(ran)
    run = await keyed.start(RunBody(prompt="pay", tools=["wire_money"]), owner=keyed.authenticate(KEYS[0]))
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    with pytest.raises(Forbidden):
        await keyed.approve(run.stream_id, "c1", True, token=keyed.issue(run.stream_id).read_token)
    await keyed.approve(run.stream_id, "c1", True, token=keyed.issue(run.stream_id).token)
    assert (await read_all(keyed, run.stream_id))[-1].type == "done" and ran == ["wired 5"] * 4
    await keyed.shutdown(1.0)


async def test_a_turn_the_provider_cannot_continue_is_asked_again_and_its_first_attempt_is_void() -> None:
    """Handed over mid-answer, a provider without ``continues_prefix`` answers again after a
    ``turn`` step with ``restarted``: the response (and the fold) hold the second attempt only."""
    from tokenwire.providers import Delay

    words = [f"w{i} " for i in range(6)]
    model = Scripted([*words[:3], Delay(0.05), *words[3:]])  # every call plays the whole answer
    service = RunService(providers={"m": model}, api_keys=KEYS)
    service.durable.poll_s = 0.02
    run = await service.start(RunBody(prompt="go"), owner=service.authenticate(KEYS[0]))
    seen = 0
    async for event in service.log.read(run.stream_id):
        seen += event.type == "text.delta"
        if seen == 3:
            run.handle.suspend("handed over (test)", until=0.0)
            break
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    events = await asyncio.wait_for(read_all(service, run.stream_id), 30)
    assert shape(events) == ["start", *["text.delta"] * 3, "step:turn:started", *["text.delta"] * 6, "done"]
    assert events[4].detail == {"turn": 0, "restarted": True}  # type: ignore[union-attr]
    carried = service.runs.get(run.stream_id)
    assert carried is not None and carried.handle.result().text == "".join(words)  # once, not 3 + 6 words
    assert "".join(fold(events).open.text_parts) == "".join(words)
    await service.shutdown(1.0)


async def test_a_local_iterator_of_a_run_follows_it_across_its_suspension_to_its_end() -> None:
    """Iterating the run's handle is following its stream: it waits while the run is suspended
    (the stream is not over: any node may carry it on) and ends with the terminal after the
    approval, on whatever log the server has (the suite's Redis pass runs this on Redis)."""

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        return "sent"

    model = Scripted.turns([ToolCall(call_id="c1", name="wire_money", args={"amount": 42})], ["Sent."])
    service = RunService(providers={"bank": model}, tools=[wire_money], api_keys=["k"])
    owner = service.authenticate("k")
    run = await service.start(RunBody(prompt="pay", tools=["wire_money"]), owner=owner)
    seen: list[Event] = []
    asked = asyncio.Event()

    async def follow() -> None:
        async for event in run.handle:
            seen.append(event)
            if event.type == "step" and event.name == "approval" and event.status == "started":
                asked.set()

    following = asyncio.create_task(follow())
    await asyncio.wait_for(asked.wait(), 10)
    with pytest.raises(RunSuspended):
        await run.handle.wait()  # the producer here is done; the stream goes on
    assert not following.done()
    await service.approve(run.stream_id, "c1", True, owner=owner)
    await asyncio.wait_for(following, 10)
    kinds = [(e.type, getattr(e, "name", None)) for e in seen]
    assert kinds[-1] == ("done", None) and ("tool_result", "wire_money") in kinds
    assert [e.seq for e in seen] == list(range(len(seen)))
    await service.shutdown(1.0)


async def deaf_supervisor(monkeypatch: Any, *, hold_s: float) -> RunService:
    """A service whose run supervisor is inside a log call that swallows a cancel (holding it
    ``hold_s``), as Python 3.11's ``wait_for`` and ``asyncio.timeout`` can inside a Redis call."""
    import contextlib

    service = RunService(providers={"s": Scripted(["x"])}, api_keys=["k"])
    service.durable.poll_s = 0.01
    entered = asyncio.Event()

    async def present(*args: Any, **kwargs: Any) -> int:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # the cancel, dropped on its way
            await asyncio.sleep(hold_s)
        return 0

    monkeypatch.setattr(service.log.ownership, "present", present)
    service.durable.supervise()
    await asyncio.wait_for(entered.wait(), 10)
    return service


async def test_shutdown_ends_a_supervisor_whose_cancel_a_log_call_dropped(monkeypatch: Any) -> None:
    """Python 3.11's ``wait_for`` and ``asyncio.timeout`` can drop a cancel that meets a result
    or a timeout, inside a Redis call: the run supervisor then went round for ever and
    ``tokenwire serve`` never exited after SIGINT. It now stops at its next turn."""
    service = await deaf_supervisor(monkeypatch, hold_s=30)
    await asyncio.wait_for(service.shutdown(0.5), 20)  # it used to wait for ever


async def test_a_supervisor_cancelled_without_shutdown_stops_even_when_a_log_call_drops_the_cancel(
    monkeypatch: Any,
) -> None:
    """A loop that ends without the service's shutdown (an ASGI host without lifespan, a test
    server: ``asyncio.run`` cancels what is left) must not keep the supervisor going when the
    cancel is swallowed inside a log call: the cancel stays counted and stops it."""
    service = await deaf_supervisor(monkeypatch, hold_s=0.05)
    task = service.durable._supervisor
    assert task is not None
    task.cancel()
    await asyncio.wait_for(asyncio.wait([task]), 10)  # it used to go round for ever
    assert task.done() and service.durable._supervisor is task  # stopped without aclose()
    await service.shutdown(0.5)


def test_approvals_over_the_ai_sdk_and_ag_ui_endpoints_refuse_what_is_not_theirs_to_answer() -> None:
    """The ids a client answers with are the server's (HMAC-signed, one call each): a forged one
    is 403 on /api/chat and /agui; a valid one from another API key is 403; one request answers
    one run; the answer resumes the run in the same response (the call runs once); answering
    again is 409. Without API keys the id alone answers (it is the capability), a forged one never."""
    import json

    import httpx

    from conftest import paying_app
    from wire import serve

    def ask(url: str, key: str | None, chat: str) -> str:
        """Start a paying chat; the approval id its stream asks with."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"id": chat, "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "pay"}]}]}
        body["serverTools"] = ["wire_money"]  # type: ignore[assignment]
        r = httpx.post(f"{url}/api/chat", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert chunks[-1] == {"type": "finish", "finishReason": "tool-calls"}  # the stream ends at the suspension
        (request,) = [c for c in chunks if c["type"] == "tool-approval-request"]
        return str(request["approvalId"])

    def answer(url: str, key: str | None, *answers: tuple[str, bool]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        parts = [
            {"type": "tool-wire_money", "toolCallId": "c1", "state": "approval-responded", "input": {"amount": 5},
             "approval": {"id": aid, "approved": ok}}
            for aid, ok in answers
        ]  # fmt: skip
        messages = [
            {"id": "u", "role": "user", "parts": [{"type": "text", "text": "pay"}]},
            {"id": "m", "role": "assistant", "parts": parts},
        ]
        return httpx.post(f"{url}/api/chat", json={"id": "chat", "messages": messages}, headers=headers, timeout=30)

    ran: list[str] = []
    app = paying_app(ran, KEYS)
    with serve(app) as url:
        aid = ask(url, KEYS[0], "chat-a")
        other_run = app.state.tokenwire.tokens.approval_id("another-run", "c1")
        sid, mac, call = aid.split(".", 2)
        forged = f"{sid}.{mac[:-2]}AA.{call}"
        r = answer(url, KEYS[0], (forged, True))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        agui = {
            "threadId": "t",
            "runId": "r",
            "messages": [],
            "resume": [{"interruptId": forged, "status": "resolved"}],
        }
        r = httpx.post(f"{url}/agui", json=agui, headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=30)
        assert r.status_code == 403
        assert answer(url, KEYS[1], (aid, True)).status_code == 403  # another key's run
        assert answer(url, KEYS[0], (aid, True), (other_run, True)).status_code == 400  # two runs in one answer
        assert ran == []
        r = answer(url, KEYS[0], (aid, True))
        assert r.status_code == 200, r.text
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert chunks[0] == {"type": "start", "messageId": "m"}  # the same message goes on
        assert {"type": "tool-output-available", "toolCallId": "c1", "output": "sent"} in chunks
        assert [c["delta"] for c in chunks if c["type"] == "text-delta"] == ["Sent it."]
        assert ran == ["wired 5"]
        r = answer(url, KEYS[0], (aid, True))
        assert r.status_code == 409 and ran == ["wired 5"]  # answered already: it never runs twice
    ran.clear()
    with serve(paying_app(ran, None)) as url:  # no API keys: the signed id is the proof
        aid = ask(url, None, "chat-c")
        sid, mac, call = aid.split(".", 2)
        assert answer(url, None, (f"{sid}.{mac[:-2]}AA.{call}", True)).status_code == 403
        r = answer(url, None, (aid, False))
        assert r.status_code == 200 and ran == []
        assert {"type": "tool-output-denied", "toolCallId": "c1"} in [
            json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")
        ]


def test_a_use_chat_resume_after_a_turn_was_asked_again_shows_its_final_text_once() -> None:
    """The AI SDK cannot take text back, so a resume after a turn was asked again (a provider
    without ``continues_prefix``, handed over mid-answer) replays the final attempt only: the
    resumed message's text is the answer once; the log keeps both attempts and the restart."""
    import json

    import httpx

    from tokenwire.providers import Delay
    from tokenwire.server import create_app
    from wire import serve

    words = [f"w{i} " for i in range(6)]
    model = Scripted([*words[:3], Delay(0.05), *words[3:], Delay(2.0)])  # every call plays the whole answer
    app = create_app(providers={"m": model}, api_keys=KEYS)
    service: RunService = app.state.tokenwire
    service.durable.poll_s = 0.02
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    body = {"id": "chat-r", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "go"}]}]}
    with serve(app) as url:
        with httpx.stream("POST", f"{url}/api/chat", json=body, headers=headers, timeout=30) as r:
            deltas = 0
            for line in r.iter_lines():
                deltas += "text-delta" in line
                if deltas == 3:
                    (run,) = service.runs.running
                    run.handle.suspend("handed over (test)", until=0.0)  # thread-safe: its own loop runs it
                    break
        deadline = time.monotonic() + 10
        while not any(r.stream_id == run.stream_id and r is not run for r in service.runs.running):
            assert time.monotonic() < deadline, "the run was not carried on"
            time.sleep(0.01)
        resumed = httpx.get(f"{url}/api/chat/chat-r/stream", headers=headers, timeout=30)
    chunks = [json.loads(line[6:]) for line in resumed.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "".join(words)
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}


async def test_a_callers_own_tool_suspends_the_run_until_its_result_comes() -> None:
    """``client_tools`` on the native API: a call to one of the caller's tools suspends the run
    (``step client_tool`` with its deadline, then ``step suspend``; no task, no lease) instead of
    ending it; the result resumes it and the model's next turn gets it. Another key is 403, an
    unknown call 404, a second answer 409; a result that never comes is an error result after
    the deadline."""
    pick = ToolSpec("pick_color", "The user picks a color.", {"type": "object", "properties": {}})
    model = Scripted.turns([call("pick_color")], ["You like teal."])
    service = RunService(providers={"m": model}, api_keys=KEYS)
    owner = service.authenticate(KEYS[0])
    run = await service.start(RunBody(prompt="my color?", client_tools=[pick]), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    sid = run.stream_id
    asked = await service.history(sid)
    assert shape(asked)[-3:] == ["tool_call", "step:client_tool:started", "step:suspend:started"]
    assert asked[-2].detail["expires"] > time.time()  # type: ignore[union-attr]
    assert asked[-1].detail["reason"] == "waiting for the client's result of c1"  # type: ignore[union-attr]
    assert service.runs.live() == 0 and await service.log.ownership.lease_state(sid) == SUSPENDED
    with pytest.raises(Forbidden):
        await service.answer(sid, results={"c1": ("red", False)}, owner=service.authenticate(KEYS[1]))
    with pytest.raises(StreamNotFound):
        await service.answer(sid, results={"c9": ("red", False)}, owner=owner)
    at = await service.answer(sid, results={"c1": ("teal", False)}, owner=owner)
    events = await asyncio.wait_for(read_all(service, sid), 30)
    assert at == len(asked) and shape(events)[at:] == [
        "step:client_tool:finished",
        "tool_result",
        "step:turn:finished",
        "step:turn:started",
        "text.delta",
        "step:turn:finished",
        "done",
    ]
    assert [(m.role, m.content) for m in model.requests[1].messages if m.role == "tool"] == [("tool", '"teal"')]
    with pytest.raises(Conflict):
        await service.answer(sid, results={"c1": ("teal", False)}, owner=owner)
    await service.shutdown(1.0)

    model = Scripted.turns([call("pick_color")], ["No color came."])
    service = RunService(providers={"m": model}, api_keys=KEYS, config=ServerConfig(approval_timeout_s=0.2))
    service.durable.poll_s = 0.02
    run = await service.start(RunBody(prompt="my color?", client_tools=[pick]), owner=service.authenticate(KEYS[0]))
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    events = await asyncio.wait_for(read_all(service, run.stream_id), 30)  # the supervisor carries it on
    result = next(e for e in events if e.type == "tool_result")
    assert result.is_error and "no result" in result.result  # type: ignore[union-attr]
    assert events[-1].type == "done"
    await service.shutdown(1.0)


def test_a_client_posts_its_tools_result_over_http_and_reads_the_run_on() -> None:
    """The same over the wire, as a user writes it: ``client_tools`` in the run's body, the
    client's tool answered with ``SyncClient.submit_tool_result`` when its ``step client_tool``
    arrives (with the run's token: a server without API keys takes only that); the one stream
    reads on to the answer."""
    from tokenwire.client import SyncClient
    from tokenwire.server import create_app
    from wire import serve

    pick = {"name": "pick_color", "description": "The user picks a color.", "parameters": {"type": "object"}}
    app = create_app(providers={"m": Scripted.turns([call("pick_color")], ["You like teal."])}, api_keys=None)
    with serve(app) as url, SyncClient(url) as client:
        info = client.create_run({"prompt": "my color?", "client_tools": [pick]})
        seen = []
        for event in client.subscribe(info.stream_id, info.read_token):
            seen.append(event)
            if event.type == "step" and event.name == "client_tool" and event.status == "started":  # type: ignore[union-attr]
                with pytest.raises(Exception, match=r"401|token"):
                    client.submit_tool_result(info.stream_id, "c1", "teal")  # no key here: the token is needed
                client.submit_tool_result(info.stream_id, "c1", "teal", token=info.token)
    assert seen[-1].type == "done"
    assert "".join(e.text for e in seen if e.type == "text.delta") == "You like teal."  # type: ignore[union-attr]
    assert [e.result for e in seen if e.type == "tool_result"] == ["teal"]  # type: ignore[union-attr]
