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

from typing import Any

from tokenwire.core.provider import Provider

__all__ = ["adapt"]

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
