"""An agent used as a tool of another: each call is a child run (:mod:`tokenwire.tools.tree`).

>>> import asyncio, tokenwire
>>> from tokenwire.events import ToolCall
>>> from tokenwire.providers import Scripted
>>> researcher = tokenwire.sub_agent(Scripted(["Lyon has 520,000 people."]), name="research",
...                                  description="Looks one question up and answers it.")
>>> lead = Scripted.turns([ToolCall(call_id="c1", name="research", args={"task": "Lyon's population?"})],
...                       ["About half a million."])
>>> async def main():
...     log = tokenwire.MemoryLog()
...     parent = tokenwire.generate(lead, "How big is Lyon?", tools=[researcher], log=log)
...     await parent
...     tree = [e async for e in tokenwire.log.follow_tree(log, parent.stream_id)]
...     marks = [(e.name, e.status) for e in tree if e.type == "step" and e.name == "child"]
...     child = next(e for e in tree if e.stream_id != parent.stream_id and e.type == "start")
...     return marks, child.parent.call_id, parent.result().text
>>> asyncio.run(main())
([('child', 'started'), ('child', 'finished')], 'c1', 'About half a million.')
"""

from __future__ import annotations

from typing import Any

from tokenwire.api.start import generate
from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.core.request import Message, Request
from tokenwire.tools import Tool, ToolOptions

__all__ = ["sub_agent"]


def sub_agent(
    provider: Provider,
    *,
    name: str,
    description: str,
    instructions: str | None = None,
    tools: Any = None,
    tool_options: ToolOptions | None = None,
    limits: Limits | None = None,
    timeout_s: float | None = None,
) -> Tool:
    """A :class:`~tokenwire.Tool` named ``name`` that runs ``provider`` as a child run on the
    ``task`` the calling model gives (with ``instructions`` as its system message and its own
    ``tools``, ``tool_options`` and ``limits``). The child's answer is the call's result; a child
    that fails, is cancelled or stops early makes the call an error result with the reason.

    Its events are a stream of their own whose ``start`` has ``meta={"agent": name}`` (a reader
    follows the whole tree, see :func:`tokenwire.log.follow_tree`); the parent's stream marks
    where it starts and ends, and its usage counts in the parent's. Calls the model makes in
    parallel run in parallel.
    """

    async def delegate(task: str) -> str:
        messages = [Message("system", instructions)] if instructions else []
        request = Request([*messages, Message("user", task)])
        response = await generate(
            provider, request, tools=tools, tool_options=tool_options, limits=limits, meta={"agent": name}
        )
        response.raise_for_error()
        if response.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"the {name} agent stopped before answering ({response.finish_reason})")
        return response.text

    delegate.__doc__ = f"{description}\n\nArgs:\n    task: What the {name} agent should do, self-contained."
    return Tool(delegate, name=name, description=description, timeout_s=timeout_s)
