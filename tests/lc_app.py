"""A LangGraph agent for the adapter tests, importable by ``tokenwire serve --agent lc_app:graph``:
LangChain's own fake chat model, taught to stream its tool calls as real models do."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition


class StreamingFake(GenericFakeChatModel):
    """GenericFakeChatModel streams text only; a real model also streams its calls' arguments."""

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[Any]:
        message = next(self.messages)
        if isinstance(message, AIMessage) and message.tool_calls:
            for index, call in enumerate(message.tool_calls):
                text = json.dumps(call["args"])
                for i, piece in enumerate(re.split(r"(,)", text)):
                    chunk = {"name": call["name"] if i == 0 else None, "args": piece, "index": index}
                    chunk["id"] = call["id"] if i == 0 else None
                    yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
            return
        text = message.content if isinstance(message, AIMessage) else str(message)
        for piece in re.split(r"(\s)", str(text)):
            if piece:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


def build(answers: Any, tools: list[Any], **tool_node: Any) -> Any:
    model = StreamingFake(messages=iter(answers))

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode(tools, **tool_node))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile()


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def call(a: int = 6, b: int = 7, name: str = "multiply") -> AIMessage:
    return AIMessage("", tool_calls=[{"id": "call_1", "name": name, "args": {"a": a, "b": b}}])


graph = build(itertools.cycle([call(), AIMessage("It is 42.")]), [multiply])
"""Served by tests/test_adapters_langchain.py: asks for 6 × 7, answers with the result."""
