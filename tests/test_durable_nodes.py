"""Durable runs across real ``tokenwire serve`` processes on a ``redis-server`` of the test's own:
a SIGKILLed producer's answer completes on another node, gapless, read through a third; a tool
with a side effect runs once across a kill; an approval sent after every node was restarted
resumes the run; a rolling restart under 20 live runs keeps every run; three nodes racing to take
one run over: one wins.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenwire.client import SyncClient
from tokenwire.events import Event
from tokenwire.log.redis import RedisLog
from wire import free_port, redis_server, wait_http

KEY = "durable-key-123456"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _once(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("--log-backend") == "redis":
        pytest.skip("these tests start their own Redis and nodes: the memory-backend run covers them")


@pytest.fixture(params=["one", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test on a Redis of its own: one instance, and a Redis Cluster (3 masters, 3 replicas)."""
    with redis_server(request.param, str(tmp_path)) as url:
        yield url


class Node:
    """A ``tokenwire serve`` process serving durable_app's Planner and tools on the shared log."""

    def __init__(self, redis_url: str, effects: Path, *, rate: float = 50, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TOKENWIRE_SECRET": "ab" * 32,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "DURABLE_EFFECTS": str(effects),
            "DURABLE_RATE": str(rate),
        }
        cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(self.port)]
        cmd += ["--provider", "durable_app:Planner", "--tools", "durable_app:TOOLS", "--api-key", KEY]
        cmd += ["--log", redis_url, "--log-level", "info", "--shutdown-grace", "5"]
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_http(self.url + "/healthz", self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nodes(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Node] = []

    def start(**kwargs: Any) -> Node:
        node = Node(redis_url, tmp_path / "effects", log=tmp_path / "nodes.log", **kwargs)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def check_one_stream(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(len(events))), "gapless, no duplicate"
    assert sum(e.type in ("done", "error") for e in events) == 1 and events[-1].type in ("done", "error")


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if e.type == "text.delta")  # type: ignore[union-attr]


def test_a_killed_producers_answer_completes_on_another_node_read_through_a_third(nodes: Any) -> None:
    a, b, c = nodes(), nodes(), nodes()
    prompt = words(150)  # three seconds of words at 50 words/s
    with SyncClient(a.url, api_key=KEY) as on_a, SyncClient(c.url, api_key=KEY) as on_c:
        info = on_a.create_run(prompt)
        seen: list[Event] = []
        for event in on_c.subscribe(info.stream_id, info.read_token):
            seen.append(event)
            if len(seen) == 20:
                a.kill()  # no shutdown, no terminal, no lease release
    check_one_stream(seen)
    assert seen[-1].type == "done" and seen[-1].finish_reason == "stop"  # type: ignore[union-attr]
    assert text_of(seen) == f"You said: {prompt}"  # continued from its prefix: every word once
    assert b.proc.poll() is None and c.proc.poll() is None


def test_a_tool_whose_result_was_logged_never_runs_again_after_a_kill(nodes: Any, tmp_path: Path) -> None:
    a, b = nodes(rate=20), nodes(rate=20)
    prompt = "call:record " + words(60)
    with SyncClient(a.url, api_key=KEY) as on_a, SyncClient(b.url, api_key=KEY) as on_b:
        info = on_a.create_run({"prompt": prompt, "tools": ["record"]})
        seen: list[Event] = []
        for event in on_b.subscribe(info.stream_id, info.read_token):
            seen.append(event)
            if event.type == "text.delta" and len([e for e in seen if e.type == "text.delta"]) == 5:
                a.kill()  # after the tool's result was logged, mid-answer
    check_one_stream(seen)
    assert [e.type for e in seen].count("tool_result") == 1 and seen[-1].type == "done"
    assert (tmp_path / "effects").read_text().split() == ["call-record"]  # once, with its call id
    assert text_of(seen) == f"You said: {prompt}"


def test_an_approval_sent_after_every_node_restarted_resumes_the_run(nodes: Any, tmp_path: Path) -> None:
    a, b = nodes(), nodes()
    prompt = "call:wire_money " + words(5)
    with SyncClient(a.url, api_key=KEY) as on_a:
        info = on_a.create_run({"prompt": prompt, "tools": ["wire_money"]})
        before = []
        for event in on_a.subscribe(info.stream_id, info.read_token):
            before.append(event)
            if event.type == "step" and event.name == "approval":  # type: ignore[union-attr]
                break
    a.stop()
    b.stop()
    assert {a.proc.returncode, b.proc.returncode} <= {0, -signal.SIGTERM}  # drained (uvicorn re-raises the signal)
    c, d = nodes(), nodes()
    with SyncClient(c.url, api_key=KEY) as on_c, SyncClient(d.url, api_key=KEY) as on_d:
        on_c.approve(info.stream_id, "call-wire_money", True)
        events = list(on_d.subscribe(info.stream_id, info.read_token))
    check_one_stream(events)
    assert events[-1].type == "done" and (tmp_path / "effects").read_text().split() == ["wired", "call-wire_money"]
    assert text_of(events) == f"You said: {prompt}"


def test_a_use_chat_approval_asked_on_one_node_is_answered_on_another_and_resumed_on_a_third(
    nodes: Any, tmp_path: Path
) -> None:
    """The AI SDK's flow across nodes: the chat's run suspends on node A (its stream ends with the
    call's tool-approval-request); A is killed; the page's answer (the approval-responded part)
    reaches B, which carries the run on in the same message; a reload reaches C, whose resume
    (GET /api/chat/{id}/stream, the chat's name kept in the shared log) reads the answer from
    where the answer's response began: every word once, the tool run once."""
    import json

    import httpx

    a, b, c = nodes(), nodes(), nodes()
    headers = {"Authorization": f"Bearer {KEY}"}
    prompt = "call:wire_money " + words(100)  # two seconds of answer
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": prompt}]}

    def chunks(text: str) -> list[dict[str, Any]]:
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]

    body = {"id": "chat-1", "messages": [user], "serverTools": ["wire_money"]}
    asked = chunks(httpx.post(f"{a.url}/api/chat", json=body, headers=headers, timeout=30).text)
    (request,) = [x for x in asked if x["type"] == "tool-approval-request"]
    assert asked[0]["type"] == "start" and asked[-1] == {"type": "finish", "finishReason": "tool-calls"}
    a.kill()
    part = {"type": "tool-wire_money", "toolCallId": request["toolCallId"], "state": "approval-responded",
            "input": {}, "approval": {"id": request["approvalId"], "approved": True}}  # fmt: skip
    answer = {"id": "chat-1", "messages": [user, {"id": asked[0]["messageId"], "role": "assistant", "parts": [part]}]}
    with httpx.stream("POST", f"{b.url}/api/chat", json=answer, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if "text-delta" in line:
                break  # the page reloads mid-answer
    resumed = chunks(httpx.get(f"{c.url}/api/chat/chat-1/stream", headers=headers, timeout=30).text)
    assert resumed[0] == {"type": "start", "messageId": asked[0]["messageId"]}
    assert {"type": "tool-output-available", "toolCallId": request["toolCallId"], "output": "sent"} in resumed
    assert "".join(x["delta"] for x in resumed if x["type"] == "text-delta") == f"You said: {prompt}"
    assert resumed[-1] == {"type": "finish", "finishReason": "stop"}
    assert (tmp_path / "effects").read_text().split() == ["wired", "call-wire_money"]
    assert httpx.get(f"{b.url}/api/chat/chat-1/stream", headers=headers).status_code == 204  # ended: nothing to resume


def test_a_rolling_restart_of_two_nodes_keeps_twenty_live_runs(nodes: Any) -> None:
    a, b = nodes(rate=25), nodes(rate=25)
    runs = []
    with SyncClient(a.url, api_key=KEY) as on_a, SyncClient(b.url, api_key=KEY) as on_b:
        for i in range(20):
            prompt = f"run{i} " + words(100)  # four seconds each
            runs.append((prompt, (on_a if i % 2 else on_b).create_run({"prompt": prompt, "background": True})))
    a.stop()  # hands its runs to b
    a2 = nodes(rate=25)
    b.stop()  # hands its runs (and a's) to a2
    nodes(rate=25)
    with SyncClient(a2.url) as reader:
        for prompt, info in runs:
            events = list(reader.subscribe(info.stream_id, info.read_token))
            check_one_stream(events)
            assert events[-1].type == "done", events[-1]
            assert text_of(events) == f"You said: {prompt}"


async def test_three_nodes_racing_to_take_one_run_over_one_wins(redis_url: str) -> None:
    logs = [RedisLog(redis_url, prefix="race") for _ in range(3)]
    try:
        await logs[0].ownership.save_run("r1", b"{}")
        results = await asyncio.gather(*(log.ownership.claim("r1", f"tok{i}") for i, log in enumerate(logs)))
        assert sorted(results) == [False, False, True]
        winner = results.index(True)
        assert await logs[0].ownership.lease_state("r1") == f"tok{winner}"
        assert not await logs[0].ownership.claim("r1", "late", suspended_only=True)  # held: nobody else
    finally:
        for log in logs:
            await log.aclose()
