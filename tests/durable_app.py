"""What the durable-run tests serve in real ``tokenwire serve`` processes (``--provider
durable_app:Planner --tools durable_app:TOOLS``, with this directory on PYTHONPATH).

``Planner`` is a deterministic model: when the request offers tools and none has been called yet,
it calls the first one named in the prompt (``call:<tool>``); otherwise it answers like the
scripted echo, word by word at ``DURABLE_RATE`` words/s, continuing a trailing assistant message
(``continues_prefix``). ``record`` appends its call id to the file ``DURABLE_EFFECTS`` names: the
side effect whose count the tests check.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from tokenwire.cli.view import Echo
from tokenwire.core.provider import Part
from tokenwire.core.request import Request
from tokenwire.events import ToolCall
from tokenwire.tools import tool
from tokenwire.tools.definition import call_id


class Planner:
    model = "planner"
    continues_prefix = True

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        prompt = next((m.content for m in request.messages if m.role == "user"), "")
        called = any(m.role == "tool" for m in request.messages)
        wanted = [w.removeprefix("call:") for w in prompt.split() if w.startswith("call:")]
        if request.tools and wanted and not called:
            yield ToolCall(call_id=f"call-{wanted[0]}", name=wanted[0], args={"note": prompt[:40]})
            return
        rate = float(os.environ.get("DURABLE_RATE", "50"))
        answer = f"You said: {prompt}"
        words = [w if i == 0 else " " + w for i, w in enumerate(answer.split(" "))]
        tail = request.messages[-1]
        if tail.role == "assistant" and not tail.tool_calls and answer.startswith(tail.content):
            words = Echo.after(words, len(tail.content))  # continue the cut-off answer
        for w in words:
            await asyncio.sleep(1 / rate)
            yield w


@tool
def record(note: str) -> str:
    """Write down a note (a side effect that must happen once)."""
    with open(os.environ["DURABLE_EFFECTS"], "a") as f:
        f.write(call_id() + "\n")
    return "noted"


@tool(requires_approval=True)
def wire_money(note: str) -> str:
    """Send money (needs a human's approval)."""
    with open(os.environ["DURABLE_EFFECTS"], "a") as f:
        f.write("wired " + call_id() + "\n")
    return "sent"


TOOLS = [record, wire_money]
