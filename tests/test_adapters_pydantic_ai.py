"""A Pydantic AI agent as a tokenwire stream, with the real package and its own FunctionModel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

import tokenwire
from adapter_kit import CONVERSATION, Forever, cancel_mid_tool, close_mid_tool, served_text, until_ended
from tokenwire.adapters.pydantic_ai import PydanticAI, history
from tokenwire.core.request import Message, Request
from tokenwire.testing import Transcript, assert_transcript

KEY = "pai-key"


def calls_then_answers(tool: str, answer: str) -> FunctionModel:
    """A model that calls ``tool`` (arguments streamed in two pieces), then answers ``answer``."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returned and not any(getattr(p, "part_kind", "") == "retry-prompt" for m in messages for p in m.parts):
            yield {0: DeltaToolCall(name=tool, json_args='{"a": 6', tool_call_id="call_1")}
            yield {0: DeltaToolCall(json_args=', "b": 7}')}
            return
        for word in answer.split(" "):
            yield word if word == answer.split(" ")[0] else " " + word

    return FunctionModel(stream_function=stream, model_name="fn")


def agent(tool: Any, answer: str = "6 times 7 is 42.") -> Agent[None, str]:
    a: Agent[None, str] = Agent(calls_then_answers(tool.__name__, answer))
    a.tool_plain(tool)
    return a


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def test_an_agent_run_is_one_stream_streamed_call_result_answer_usage() -> None:
    t = Transcript()
    response = await tokenwire.generate(PydanticAI(agent(multiply)), "What is 6 times 7?", observers=[t])
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "fn"},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 1}},
            {"type": "tool_call.start", "call_id": "call_1", "name": "multiply"},
            {"type": "tool_call.delta", "args_delta": '{"a": 6'},
            {"type": "tool_call.delta", "args_delta": ', "b": 7}'},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 1, "tool_calls": 1}},
            {"type": "tool_call", "call_id": "call_1", "name": "multiply", "args": {"a": 6, "b": 7}},
            {"type": "tool_result", "call_id": "call_1", "name": "multiply", "result": 42, "is_error": False},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 2}},
            {"type": "text.delta", "text": "6"},
            ...,
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 2, "tool_calls": 0}},
            "usage",
            {"type": "done", "finish_reason": "stop"},
        ],
    )
    assert response.text == "6 times 7 is 42." and response.usage is not None and response.usage.output_tokens > 0


async def test_a_retried_tool_is_an_error_result_and_a_failing_tool_one_terminal_error() -> None:
    def picky(a: int, b: int) -> int:
        """Refuses."""
        raise ModelRetry("use smaller numbers")

    t = Transcript()
    await tokenwire.generate(PydanticAI(agent(picky, "Sorry.")), "6 * 7?", observers=[t])
    result = next(e for e in t.events if e.type == "tool_result")
    assert result.is_error and "use smaller numbers" in str(result.result)
    assert t.events[-1].type == "done" and t.text == "Sorry."

    def broken(a: int, b: int) -> int:
        """Always fails."""
        raise ValueError("the abacus is broken")

    t = Transcript()
    await tokenwire.generate(PydanticAI(agent(broken)), "6 * 7?", observers=[t])
    assert_transcript(t.events, ["start", ..., "tool_call", {"type": "error", "source": "provider"}])
    assert "the abacus is broken" in t.events[-1].message


async def test_cancel_mid_run_cancels_the_agents_running_tool() -> None:
    forever = Forever()

    async def slow(a: int, b: int) -> int:
        """Takes forever."""
        return await forever()

    await cancel_mid_tool(PydanticAI(agent(slow)), forever)
    forever = Forever()
    await close_mid_tool(PydanticAI(agent(slow)), forever)


def test_a_conversation_becomes_a_prompt_and_pydantic_ais_history() -> None:
    prompt, past = history(Request([*CONVERSATION, Message("user", "And 6 * 8?")]))
    assert prompt == "And 6 * 8?"
    kinds = [[p.part_kind for p in m.parts] for m in past]
    assert kinds == [["system-prompt"], ["user-prompt"], ["tool-call"], ["tool-return"], ["text"]]
    assert past[2].parts[0].args == {"a": 6, "b": 7} and past[3].parts[0].tool_call_id == "c1"


async def test_a_served_agent_reads_in_the_openai_sdk() -> None:
    assert await served_text(PydanticAI(agent(multiply, "It is 42.")), "6 times 7?") == "It is 42."


def test_serve_agent_adapts_a_pydantic_ai_agent_and_a_langgraph_graph() -> None:
    from lc_app import graph
    from tokenwire.adapters import adapt
    from tokenwire.adapters.langchain import LangChain

    assert isinstance(adapt(agent(multiply)), PydanticAI)
    assert isinstance(adapt(graph), LangChain)
    assert adapt(multiply) is None


async def test_a_structured_answer_is_a_call_with_its_result_and_history_without_a_last_prompt() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaToolCall(name=info.output_tools[0].name, json_args='{"name": "Paris"}', tool_call_id="out_1")}

    t = Transcript()
    a: Agent[None, City] = Agent(FunctionModel(stream_function=answer), output_type=City)
    await tokenwire.generate(PydanticAI(a), "The capital of France?", observers=[t])
    call = next(e for e in t.events if e.type == "tool_call")
    result = next(e for e in t.events if e.type == "tool_result")
    assert call.args == {"name": "Paris"} and result.call_id == call.call_id == "out_1" and not result.is_error
    assert t.events[-1].type == "done"

    prompt, past = history(Request([Message("user", "6 * 7?"), Message("tool", "42", tool_call_id="c1", name="m")]))
    assert prompt is None and [[p.part_kind for p in m.parts] for m in past] == [["user-prompt"], ["tool-return"]]


def bank(wired: list[int]) -> PydanticAI:
    """An agent whose tool needs a human's approval; the model asks for it, then reports."""
    from pydantic_ai import DeferredToolRequests

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returned:
            yield {0: DeltaToolCall(name="wire_money", json_args='{"amount": 42}', tool_call_id="pay_1")}
        else:
            yield f"Done: {returned[-1].content}"

    a: Agent[None, Any] = Agent(FunctionModel(stream_function=model), output_type=[str, DeferredToolRequests])

    @a.tool_plain(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        wired.append(amount)
        return f"sent {amount}"

    return PydanticAI(a, model="bank")


async def test_an_approval_asked_by_a_pydantic_ai_tool_is_answered_over_the_wire() -> None:
    """requires_approval: the run suspends with a step approval, holding nothing; the owner's
    answer resumes it from the log (Pydantic AI's DeferredToolResults); a denial reaches the model."""
    import pytest

    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    for approved, said in ((True, "Done: sent 42"), (False, "Done: The call was denied (api).")):
        wired: list[int] = []
        service = RunService(providers={"bank": bank(wired)}, api_keys=[KEY])
        owner = service.authenticate(KEY)
        run = await service.start(RunBody(prompt="Pay 42"), owner=owner)
        with pytest.raises(RunSuspended):
            await run.handle.wait()
        asked = await service.history(run.stream_id)
        assert_transcript(
            asked,
            [
                "start",
                {"type": "step", "name": "turn", "status": "started"},
                {"type": "tool_call.start", "call_id": "pay_1", "name": "wire_money"},
                ...,
                {"type": "tool_call", "call_id": "pay_1", "args": {"amount": 42}},
                "usage",
                {"type": "step", "name": "approval", "status": "started"},
                {"type": "step", "name": "suspend", "status": "started"},
            ],
        )
        assert asked[-2].detail["call_id"] == "pay_1" and asked[-2].detail["expires"] > time.time()
        assert wired == []
        await service.approve(run.stream_id, "pay_1", approved, owner=owner)
        events = await until_ended(service, run.stream_id)
        resumed = events[len(asked) :]
        assert_transcript(
            resumed,
            [
                {"type": "step", "name": "approval", "status": "finished"},
                {"type": "tool_result", "call_id": "pay_1", "is_error": not approved},
                {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 2}},
                ...,
                {"type": "done", "finish_reason": "stop"},
            ],
        )
        assert resumed[0].detail["approved"] is approved and resumed[0].detail["by"] == "api"
        text = "".join(e.text for e in resumed if e.type == "text.delta")
        assert text == said and wired == ([42] if approved else [])
        assert [e.seq for e in events] == list(range(len(events)))  # one stream, gapless
        await service.shutdown(1.0)


async def test_a_pydantic_ai_run_cut_mid_turn_is_carried_on_by_another_producer_with_the_turn_asked_again() -> None:
    import pytest

    from tokenwire.core.fold import fold
    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    asked = [0]
    streaming = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        asked[0] += 1
        if asked[0] == 1:
            yield "Hel"
            streaming.set()
            await asyncio.Event().wait()  # its node stops here
        yield "Hello again."

    service = RunService(providers={"p": PydanticAI(Agent(FunctionModel(stream_function=model)), model="p")})
    run = await service.start(RunBody(prompt="hi"), owner="")
    await asyncio.wait_for(streaming.wait(), 30)
    run.handle.suspend("its node stopped", until=0.0)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    token = service.durable.token()
    assert await service.log.ownership.claim(run.stream_id, token, suspended_only=True)
    await service.durable.carry_on(run.stream_id, token)
    events = await until_ended(service, run.stream_id)
    assert_transcript(
        events,
        [
            "start",
            {"type": "step", "name": "turn", "detail": {"turn": 1}},
            {"type": "text.delta", "text": "Hel"},
            {"type": "step", "name": "turn", "detail": {"turn": 1, "restarted": True}},
            {"type": "text.delta", "text": "Hello again."},
            ...,
            {"type": "done", "finish_reason": "stop"},
        ],
    )
    assert fold(events).turns[-1].text == "Hello again."  # the first attempt is void
    assert [e.seq for e in events] == list(range(len(events))) and asked[0] == 2
    await service.shutdown(1.0)


async def test_a_rejected_answer_is_void_and_a_part_sent_again_whole_is_not_repeated() -> None:
    from pydantic_ai import ModelRetry as Retry
    from pydantic_ai.messages import PartStartEvent, TextPart

    from tokenwire.adapters.pydantic_ai import Run
    from tokenwire.core.fold import fold

    answers = iter(["first answer", "second answer"])

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        yield next(answers)

    a: Agent[None, str] = Agent(FunctionModel(stream_function=model))

    @a.output_validator
    def only_the_second(text: str) -> str:
        if text.startswith("first"):
            raise Retry("try again")
        return text

    t = Transcript()
    response = await tokenwire.generate(PydanticAI(a), "hi", observers=[t])
    assert response.text == "second answer" and fold(t.events).turns[-1].text == "second answer"
    turns = [e.detail for e in t.events if e.type == "step" and e.name == "turn" and e.status == "started"]
    assert turns == [{"turn": 1}, {"turn": 1, "restarted": True}]

    run = Run()  # a model that resends its part whole (as some providers' streams do)
    first = run.parts(PartStartEvent(index=0, part=TextPart("Hel")))
    grown = run.parts(PartStartEvent(index=0, part=TextPart("Hello")))
    rewritten = run.parts(PartStartEvent(index=0, part=TextPart("Goodbye")))
    assert [p for p in first if isinstance(p, str)] == ["Hel"] and grown == ["lo"]
    assert rewritten[0].detail == {"turn": 1, "restarted": True} and rewritten[1:] == ["Goodbye"]


def _mapping_cost(deltas: int) -> float:
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

    from tokenwire.adapters.pydantic_ai import Run

    events = [
        PartStartEvent(index=0, part=TextPart("a")),
        *(PartDeltaEvent(index=0, delta=TextPartDelta("word ")) for _ in range(deltas)),
    ]
    run = Run()
    start = time.process_time()
    for event in events:
        run.parts(event)
    return time.process_time() - start


def test_mapping_one_long_answer_is_linear_in_its_deltas() -> None:
    """8x the deltas of one text part cost about 8x the work (its text is kept as pieces, joined
    only when a model sends the part again): a ratio of CPU times, not a wall-clock bound."""
    small, large = _mapping_cost(20_000), _mapping_cost(160_000)
    assert large / small < 24, f"8x deltas cost {large / small:.1f}x"


async def test_two_approvals_in_one_turn_resume_the_run_only_once_both_are_answered() -> None:
    import pytest
    from pydantic_ai import DeferredToolRequests

    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    wired: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returned:
            yield {0: DeltaToolCall(name="wire_money", json_args='{"amount": 1}', tool_call_id="p1")}
            yield {1: DeltaToolCall(name="wire_money", json_args='{"amount": 2}', tool_call_id="p2")}
        else:
            yield " / ".join(str(p.content) for p in returned)

    a: Agent[None, Any] = Agent(FunctionModel(stream_function=model), output_type=[str, DeferredToolRequests])

    @a.tool_plain(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        wired.append(amount)
        return f"sent {amount}"

    service = RunService(providers={"bank": PydanticAI(a, model="bank")}, api_keys=[KEY])
    owner = service.authenticate(KEY)
    run = await service.start(RunBody(prompt="Pay 1 and 2"), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    await service.approve(run.stream_id, "p1", True, owner=owner)
    for _ in range(600):  # the answer is logged, held: the run waits again, for p2's (approve retries)
        events = await service.history(run.stream_id)
        if events[-2].type == "step" and events[-2].status == "finished" and events[-1].name == "suspend":
            break
        await asyncio.sleep(0.05)
    assert wired == [] and events[-2].detail == {**events[-2].detail, "call_id": "p1", "held": True}
    await service.approve(run.stream_id, "p2", False, owner=owner)
    events = await until_ended(service, run.stream_id)
    assert wired == [1] and events[-1].type == "done"
    assert "".join(e.text for e in events if e.type == "text.delta") == "sent 1 / The call was denied (api)."
    await service.shutdown(1.0)


async def test_a_resumed_run_keeps_the_agents_system_prompt_and_its_thinking() -> None:
    """Pydantic AI gives its system prompt only to a run with no history, and the log held no
    thinking per turn: a run resumed from the log used to reach the model without either."""
    import pytest
    from pydantic_ai import DeferredToolRequests
    from pydantic_ai.messages import SystemPromptPart, ThinkingPart
    from pydantic_ai.models.function import DeltaThinkingPart

    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    seen: list[list[ModelMessage]] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        seen.append(messages)
        if not any(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, "parts", [])):
            yield {0: DeltaThinkingPart(content="They asked for 42; ")}
            yield {0: DeltaThinkingPart(content="wire it.")}
            yield {1: DeltaToolCall(name="wire_money", json_args='{"amount": 42}', tool_call_id="pay_1")}
        else:
            yield "Done."

    a: Agent[None, Any] = Agent(
        FunctionModel(stream_function=model), output_type=[str, DeferredToolRequests], system_prompt="You are a bank."
    )

    @a.tool_plain(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        return f"sent {amount}"

    service = RunService(providers={"bank": PydanticAI(a, model="bank")}, api_keys=[KEY])
    owner = service.authenticate(KEY)
    run = await service.start(RunBody(prompt="Pay 42"), owner=owner)
    with pytest.raises(RunSuspended):
        await run.handle.wait()
    await service.approve(run.stream_id, "pay_1", True, owner=owner)
    await until_ended(service, run.stream_id)
    resumed = seen[-1]  # the model's input after the approval: the history read back from the log
    parts = [p for m in resumed for p in getattr(m, "parts", [])]
    assert [p.content for p in parts if isinstance(p, SystemPromptPart)] == ["You are a bank."]
    assert [p.content for p in parts if isinstance(p, ThinkingPart)] == ["They asked for 42; wire it."]
    await service.shutdown(1.0)


def test_a_pydantic_ai_approval_is_answered_from_use_chats_tool_approval_parts() -> None:
    """A framework's approval over the AI SDK's own flow: the Pydantic AI agent's
    ``requires_approval`` call is a ``tool-approval-request`` that ends the UI stream; the
    conversation posted again with the ``approval-responded`` part resumes the agent's run (its
    ``resume``) in the same message: the tool runs once and the answer follows."""
    import json

    import httpx

    from tokenwire.server import create_app
    from wire import serve

    wired: list[int] = []
    app = create_app(providers={"bank": bank(wired)}, api_keys=[KEY])
    headers = {"Authorization": f"Bearer {KEY}"}
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "Pay 42"}]}

    def chunks(r: httpx.Response) -> list[dict[str, Any]]:
        assert r.status_code == 200, r.text
        return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]

    with serve(app) as url:
        asked = chunks(httpx.post(f"{url}/api/chat", json={"id": "c", "messages": [user]}, headers=headers))
        (request,) = [c for c in asked if c["type"] == "tool-approval-request"]
        assert asked[-1] == {"type": "finish", "finishReason": "tool-calls"} and wired == []
        part = {"type": "tool-wire_money", "toolCallId": "pay_1", "state": "approval-responded",
                "input": {"amount": 42}, "approval": {"id": request["approvalId"], "approved": True}}  # fmt: skip
        message = {"id": asked[0]["messageId"], "role": "assistant", "parts": [part]}
        body = {"id": "c", "messages": [user, message]}
        resumed = chunks(httpx.post(f"{url}/api/chat", json=body, headers=headers, timeout=30))
    assert resumed[0] == {"type": "start", "messageId": asked[0]["messageId"]}
    assert {"type": "tool-output-available", "toolCallId": "pay_1", "output": "sent 42"} in resumed
    assert "".join(c["delta"] for c in resumed if c["type"] == "text-delta") == "Done: sent 42"
    assert wired == [42] and resumed[-1] == {"type": "finish", "finishReason": "stop"}
