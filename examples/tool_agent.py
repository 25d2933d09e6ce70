"""An agent on the embedded model: streamed tool calls executed as they arrive.

    python examples/tool_agent.py "What is 17 times 23?" [--format jsonl]

The bundled SmolLM2 135M is a small model: the tool call's arguments always match the schema
(llama.cpp grammar), their values are its best guess, and its final answer may be wrong.
Point LlamaCpp at a bigger instruct GGUF for real use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import tokenwire
from tokenwire.core.request import Message, Request
from tokenwire.events import Event
from tokenwire.providers import LlamaCpp
from tokenwire.testing import Transcript


@tokenwire.tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


@tokenwire.tool
def utc_time() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def show(event: Event) -> None:
    """A tiny console renderer: text as it streams, tool activity on its own lines."""
    if isinstance(event, tokenwire.events.TextDelta):
        print(event.text, end="", flush=True)
    elif isinstance(event, tokenwire.events.ToolCallStart):
        print(f"\n[calling {event.name}(", end="", flush=True)
    elif isinstance(event, tokenwire.events.ToolCallDelta):
        print(event.args_delta, end="", flush=True)
    elif isinstance(event, tokenwire.events.ToolCall):
        print(")]", flush=True)
    elif isinstance(event, tokenwire.events.ToolResult):
        print(f"[tool_result {event.name} -> {event.result!r}{' (error)' if event.is_error else ''}]", flush=True)
    elif isinstance(event, tokenwire.events.Step) and event.name == "turn" and event.status == "started":
        print(f"\n--- turn {event.detail['turn']} ---", flush=True)
    elif isinstance(event, tokenwire.events.Done):
        print(f"\n[done: {event.finish_reason}, {event.stats.output_tokens} tokens, {event.stats.duration_s:.1f}s]")


async def main(question: str, fmt: str) -> None:
    request = Request([Message("user", question)], tool_choice="required", seed=3, max_tokens=60, temperature=0.2)
    observers: list[object] = [Transcript(sys.stdout.buffer)] if fmt == "jsonl" else [show]
    with LlamaCpp.default() as model:
        model.load()  # before the stream: llama.cpp silences stdout while it loads
        await tokenwire.generate(
            model,
            request,
            tools=[multiply, utc_time],
            tool_options=tokenwire.ToolOptions(max_steps=2),
            observers=observers,
        ).wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What is 17 times 23?")
    parser.add_argument("--format", choices=["text", "jsonl"], default="text")
    args = parser.parse_args()
    asyncio.run(main(args.question, args.format))
