"""Other frameworks' runs as tokenwire streams: each adapter is a provider whose ``stream`` runs
the framework and maps its events to tokenwire's (one module per framework, each loaded only
when used, each behind an extra).

- :class:`~tokenwire.adapters.langchain.LangChain`: a LangChain runnable or a LangGraph graph;
- :class:`~tokenwire.adapters.pydantic_ai.PydanticAI`: a Pydantic AI agent;
- :class:`~tokenwire.adapters.openai_agents.OpenAIAgents`: an OpenAI Agents SDK agent.

>>> from tokenwire.adapters import adapt
>>> adapt(object()) is None        # not a framework's object
True
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tokenwire.core.fold import RunState
from tokenwire.core.provider import Part, Provider, Suspend
from tokenwire.core.request import Request
from tokenwire.events import Step

__all__ = ["Resumed", "adapt", "answer_parts"]

_LANGCHAIN = ("langchain_core.", "langgraph.")


def adapt(obj: Any) -> Provider | None:
    """The provider that streams a framework's agent, graph or model (None for anything else,
    a framework's tool or message too): what ``tokenwire serve --agent package.module:attribute``
    serves. An uncompiled LangGraph ``StateGraph`` is a ValueError that says to compile it."""
    classes = type(obj).__mro__
    modules = [c.__module__ for c in classes]
    if any(m.startswith(_LANGCHAIN) for m in modules):
        if type(obj).__name__ == "StateGraph":
            raise ValueError("a StateGraph runs once compiled: serve graph.compile()")
        names = {c.__name__ for c in classes}
        if not hasattr(obj, "astream_events") or names & {"BaseTool", "BaseMessage", "BasePromptTemplate"}:
            return None  # a tool, a message, a prompt: pieces of an agent, not one
        from tokenwire.adapters.langchain import LangChain

        return LangChain(obj)
    if any(m.startswith("pydantic_ai.") for m in modules) and hasattr(obj, "run_stream_events"):
        from tokenwire.adapters.pydantic_ai import PydanticAI

        return PydanticAI(obj)
    if any(m.startswith("agents.") for m in modules) and hasattr(obj, "handoffs"):
        from tokenwire.adapters.openai_agents import OpenAIAgents

        return OpenAIAgents(obj)
    return None


def answer_parts(state: RunState, decisions: Mapping[str, tuple[bool, str]]) -> list[Part]:
    """What a framework's run that resumes with answers (call id -> (approved, by whom)) writes
    first: each answered call's ``step approval finished``, and, while other calls of its turn
    still wait, the :class:`~tokenwire.core.provider.Suspend` that waits for them (the list then
    ends with it, and the answers given are ``held``: applied with the last one)."""
    waiting = [cid for cid in state.pending_approvals() if cid not in decisions]
    parts: list[Part] = []
    for cid, (approved, by) in decisions.items():
        asked = state.approvals.get(cid, {})
        detail = {"call_id": cid, "tool": asked.get("tool"), "args": asked.get("args"), "approved": approved}
        held = {"held": True} if waiting else {}
        parts.append(Step(name="approval", status="finished", detail={**detail, "by": by, **held}))
    if waiting:
        until = min(state.approvals[cid].get("expires") or time.time() for cid in waiting)
        parts.append(Suspend(f"waiting for approval of {', '.join(waiting)}", until))
    return parts


class Resumed:
    """A framework's run carried on from the log with answers (an adapter's ``resume``): a
    provider that writes the answers (:func:`answer_parts`), waits on while its turn's other
    calls still wait, and else goes on with the framework (:meth:`go_on`, the adapter's)."""

    runs_own_tools = True

    def __init__(self, outer: Any, state: RunState, decisions: dict[str, tuple[bool, str]]):
        self.outer, self.state, self.decisions = outer, state, decisions
        self.model: str = outer.model
        self.provider = outer  # what telemetry names, as for tokenwire's Agent

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        first = answer_parts(self.state, self.decisions)
        for part in first:
            yield part
        if first and isinstance(first[-1], Suspend):
            return  # the turn's other calls still wait for their answers: so does the run
        async for part in self.go_on(request):
            yield part

    def go_on(self, request: Request) -> AsyncIterator[Part]:
        raise NotImplementedError
