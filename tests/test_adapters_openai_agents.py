"""An OpenAI Agents SDK agent as a tokenwire stream, with the real package and its own
ScriptedModel (agents.testing), tracing off (its exporter would reach for the network)."""

from __future__ import annotations

from agents import Agent, function_tool, set_tracing_disabled
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import tokenwire
from adapter_kit import CONVERSATION, Forever, cancel_mid_tool, close_mid_tool, served_text
from tokenwire.adapters import adapt
from tokenwire.adapters.openai_agents import OpenAIAgents, input_items
from tokenwire.core.request import Request
from tokenwire.testing import Transcript, assert_transcript

set_tracing_disabled(True)
KEY = "oa-key"


@function_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def calc(answer: str = "6 times 7 is 42.", tool: object = multiply) -> Agent:
    steps = [
        [function_call(getattr(tool, "name", "multiply"), {"a": 6, "b": 7}, call_id="call_1")],
        [assistant_message(answer)],
    ]
    return Agent(name="calc", model=ScriptedModel(steps), tools=[tool])  # type: ignore[list-item]


async def test_an_agent_run_is_one_stream_agent_call_result_answer() -> None:
    t = Transcript()
    response = await tokenwire.generate(OpenAIAgents(calc()), "What is 6 times 7?", observers=[t])
    assert_transcript(
        t.events,
        [
            {"type": "start", "model": "calc"},
            {"type": "step", "name": "agent", "status": "started", "detail": {"agent": "calc"}},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 1}},
            {"type": "tool_call.start", "call_id": "call_1", "name": "multiply"},
            {"type": "tool_call.delta", "call_id": "call_1", "args_delta": '{"a":6,"b":7}'},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 1, "tool_calls": 1}},
            {"type": "tool_call", "call_id": "call_1", "name": "multiply", "args": {"a": 6, "b": 7}},
            {"type": "tool_result", "call_id": "call_1", "name": "multiply", "result": 42},
            {"type": "step", "name": "turn", "status": "started", "detail": {"turn": 2}},
            {"type": "text.delta", "text": "6 times 7 is 42."},
            {"type": "step", "name": "turn", "status": "finished", "detail": {"turn": 2, "tool_calls": 0}},
            "usage",
            {"type": "done", "finish_reason": "stop"},
        ],
    )
    assert response.text == "6 times 7 is 42."


async def test_a_handoff_names_the_next_agent_and_a_failing_model_ends_with_one_error() -> None:
    expert = Agent(name="expert", model=ScriptedModel([[assistant_message("The expert says 42.")]]))
    triage = Agent(
        name="triage",
        model=ScriptedModel([[function_call("transfer_to_expert", {}, call_id="h1")]]),
        handoffs=[expert],
    )
    t = Transcript()
    await tokenwire.generate(OpenAIAgents(triage), "6 * 7?", observers=[t])
    agents = [e.detail["agent"] for e in t.events if e.type == "step" and e.name == "agent"]
    assert agents == ["triage", "expert"] and t.text == "The expert says 42."

    down = Agent(name="down", model=ScriptedModel([ModelStep.raise_error(ConnectionError("the model went away"))]))
    t = Transcript()
    await tokenwire.generate(OpenAIAgents(down), "hi", observers=[t])
    assert_transcript(t.events, ["start", ..., {"type": "error", "source": "provider"}])
    assert "the model went away" in t.events[-1].message


async def test_cancel_mid_run_cancels_the_sdks_running_tool() -> None:
    forever = Forever()

    @function_tool
    async def slow(a: int, b: int) -> int:
        """Takes forever."""
        return await forever()

    await cancel_mid_tool(OpenAIAgents(calc(tool=slow)), forever)
    forever = Forever()
    await close_mid_tool(OpenAIAgents(calc(tool=slow)), forever)


def test_a_conversation_becomes_the_sdks_input_items_and_serve_agent_adapts_an_agent() -> None:
    assert input_items(Request(CONVERSATION)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "6 * 7?"},
        {"type": "function_call", "call_id": "c1", "name": "multiply", "arguments": '{"a": 6, "b": 7}'},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"role": "assistant", "content": "42."},
    ]
    assert isinstance(adapt(calc()), OpenAIAgents)


async def test_a_served_agent_reads_in_the_openai_sdk() -> None:
    assert await served_text(OpenAIAgents(calc("It is 42.")), "6 times 7?") == "It is 42."


async def test_arguments_that_are_not_json_go_on_as_the_sdk_goes_on() -> None:
    model = ScriptedModel(
        [[function_call("multiply", '{"a": 6', call_id="call_1")], [assistant_message("Those were not numbers.")]]
    )
    t = Transcript()
    await tokenwire.generate(OpenAIAgents(Agent(name="calc", model=model, tools=[multiply])), "6 * 7?", observers=[t])
    called = next(e for e in t.events if e.type == "tool_call")
    assert called.args == {"arguments": '{"a": 6'}
    assert t.events[-1].type == "done" and t.text == "Those were not numbers."


@function_tool
def divide(a: int, b: int) -> float:
    """Divide two integers."""
    return a / b


async def test_a_tool_that_fails_is_a_tool_result_flagged_is_error() -> None:
    """The SDK gives the model a message in place of the exception; the stream says it failed."""
    steps = [[function_call("divide", {"a": 1, "b": 0}, call_id="call_1")], [assistant_message("It failed.")]]
    agent = Agent(name="calc", model=ScriptedModel(steps), tools=[divide])  # type: ignore[list-item]
    t = Transcript()
    await tokenwire.generate(OpenAIAgents(agent), "1 / 0?", observers=[t])
    assert_transcript(
        t.events,
        [..., {"type": "tool_result", "call_id": "call_1", "name": "divide", "is_error": True}, ..., "done"],
    )
    ok = Transcript()
    await tokenwire.generate(OpenAIAgents(calc()), "6 x 7?", observers=[ok])
    assert [e.is_error for e in ok.events if e.type == "tool_result"] == [False]


def paying_bank(wired: list[int]) -> Agent:
    """An agent whose model calls ``wire_money`` (``needs_approval``; ``wired`` lists its runs), then says "Done."."""

    @function_tool(needs_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        wired.append(amount)
        return "sent"

    steps = [[function_call("wire_money", {"amount": 5}, call_id="call_1")], [assistant_message("Done.")]]
    return Agent(name="bank", model=ScriptedModel(steps), tools=[wire_money])  # type: ignore[list-item]


async def test_a_tool_that_needs_approval_suspends_the_run_and_the_answer_goes_on_with_the_sdks_state() -> None:
    """``needs_approval``: the SDK's run stops at an interruption; the stream logs a step approval
    (the SDK's serialised RunState kept in its opaque resume) and suspends, holding nothing; the
    owner's answer resumes it from the log: the state approves (the tool runs once) or rejects
    (an error result, the tool never runs), and the SDK's run goes on in the same stream."""
    import time

    import pytest

    from adapter_kit import until_ended
    from tokenwire.errors import RunSuspended
    from tokenwire.server import RunBody, RunService

    for approved in (True, False):
        wired: list[int] = []
        bank = paying_bank(wired)
        service = RunService(providers={"bank": OpenAIAgents(bank)}, api_keys=[KEY])
        owner = service.authenticate(KEY)
        run = await service.start(RunBody(prompt="Pay 5"), owner=owner)
        with pytest.raises(RunSuspended):
            await run.handle.wait()
        asked = await service.history(run.stream_id)
        assert_transcript(
            asked,
            [
                "start",
                ...,
                {"type": "tool_call", "call_id": "call_1", "name": "wire_money", "args": {"amount": 5}},
                "usage",
                {"type": "step", "name": "approval", "status": "started"},
                {"type": "step", "name": "suspend", "status": "started"},
            ],
        )
        detail = asked[-2].detail  # type: ignore[union-attr]
        assert detail["call_id"] == "call_1" and detail["expires"] > time.time() and detail["resume"]["state"]
        assert wired == [] and not any(e.type == "tool_result" for e in asked)
        await service.approve(run.stream_id, "call_1", approved, owner=owner)
        events = await until_ended(service, run.stream_id)
        resumed = events[len(asked) :]
        assert_transcript(
            resumed,
            [
                {"type": "step", "name": "approval", "status": "finished"},
                ...,
                {"type": "tool_result", "call_id": "call_1", "name": "wire_money", "is_error": not approved},
                ...,
                {"type": "text.delta", "text": "Done."},
                ...,
                {"type": "done", "finish_reason": "stop"},
            ],
        )
        result = next(e for e in resumed if e.type == "tool_result")
        assert result.result == ("sent" if approved else "The call was denied (api).")  # type: ignore[union-attr]
        assert wired == ([5] if approved else [])
        assert [e.seq for e in events] == list(range(len(events)))  # one stream, gapless
        await service.shutdown(1.0)
