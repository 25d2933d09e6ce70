"""A research agent on the embedded model that fans out to two sub-agents in parallel and merges
their answers, the whole run tree watched live.

    python examples/research.py "Why do rivers meander?" [--format jsonl]
    python examples/research.py --serve [--port 8000]     # the same agent, watched in the web UI

The lead agent calls one tool, ``research``; the tool starts two runs at once, one for the key
facts and one for a concrete example. A run started inside a tool call is a *child run*: a
stream of its own whose ``start`` names its parent, marked in the parent's stream when it starts
and ends, its usage counted in the parent's ``done``. The tool merges the two answers into its
result, and the lead writes the final answer from it. ``follow_tree`` reads the three streams on
one iterator; the renderer labels each line with the agent it comes from. With ``--format
jsonl`` every event of the tree is printed as one JSON object a line (``stream_id`` says whose).

With ``--serve`` it serves the embedded model with the ``research`` tool instead (no API key:
loopback only) and prints the web UI's address: ask there, and each sub-agent shows live inside
the card of the call that started it; over HTTP, ``GET /v1/streams/{id}/events?tree=1`` carries
the same tree on one connection.

The bundled SmolLM2 135M is a small model: the sub-agents' facts are its best guess. Point
LlamaCpp at a bigger instruct GGUF for real use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import tokenwire
from tokenwire.core.request import Message, Request
from tokenwire.events import Event, encode
from tokenwire.log import MemoryLog, follow_tree
from tokenwire.providers import LlamaCpp
from tokenwire.tools import Tool

ANGLES = {
    "facts": "State the two or three key facts that answer the question. Be brief.",
    "example": "Give one concrete, real-world example that illustrates the answer. Be brief.",
}


def research_tool(model: LlamaCpp) -> Tool:
    """The ``research`` tool: both sub-agents at once, their answers merged."""

    @tokenwire.tool
    async def research(question: str) -> str:
        """Research a question: key facts and a concrete example, found by two sub-agents in parallel.

        Args:
            question: The question to research, self-contained.
        """
        runs = [
            tokenwire.generate(
                model,
                Request([Message("system", how), Message("user", question)], max_tokens=80, temperature=0.3, seed=7),
                meta={"agent": angle},
            )
            for angle, how in ANGLES.items()
        ]
        answers = await asyncio.gather(*runs)  # a handle awaited is its Response
        return "\n".join(f"{angle}: {a.text.strip()}" for angle, a in zip(ANGLES, answers, strict=True))

    return research


class TreeView:
    """A console renderer for a run tree: each agent's text a sentence at a time (parallel agents
    interleave by sentence, not by token), labelled with the agent; tool and child activity on
    lines of their own."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.pending: dict[str, str] = {}

    def line(self, sid: str, text: str) -> None:
        print(f"[{self.names.get(sid, '?')}] {text}", flush=True)

    def flush(self, sid: str, *, all_of_it: bool = False) -> None:
        text = self.pending.get(sid, "")
        end = len(text) if all_of_it else max(text.rfind(c) for c in ".!?\n") + 1
        if end > 0 and text[:end].strip():
            self.line(sid, text[:end].strip())
        self.pending[sid] = text[end:] if end > 0 else text

    def __call__(self, event: Event) -> None:
        sid = event.stream_id
        if isinstance(event, tokenwire.events.Start):
            self.names[sid] = "lead" if event.parent is None else str(event.meta.get("agent", "child"))
            depth = 0 if event.parent is None else event.parent.depth
            self.line(sid, f"started ({event.model}, depth {depth})")
        elif isinstance(event, tokenwire.events.TextDelta):
            self.pending[sid] = self.pending.get(sid, "") + event.text
            self.flush(sid)
        elif isinstance(event, tokenwire.events.ToolCall):
            self.line(sid, f"calls {event.name}({event.args})")
        elif isinstance(event, tokenwire.events.Step) and event.name == "child" and event.status == "finished":
            self.line(sid, f"child {self.names.get(event.detail['stream_id'], '?')} {event.detail['outcome']}")
        elif isinstance(event, tokenwire.events.Done | tokenwire.events.Error):
            self.flush(sid, all_of_it=True)
            if isinstance(event, tokenwire.events.Error):
                self.line(sid, f"error: {event.code}: {event.message}")
                return
            usage = event.usage
            tokens = f", {usage.input_tokens}+{usage.output_tokens} tokens" if usage else ""
            self.line(sid, f"done: {event.finish_reason}{tokens}")


async def main(question: str, fmt: str) -> None:
    log = MemoryLog()
    with LlamaCpp.default(parallel=2) as model:  # the two sub-agents generate side by side
        model.load()  # before the stream: llama.cpp silences stdout while it loads
        request = Request([Message("user", question)], tool_choice="required", max_tokens=120, seed=3, temperature=0.2)
        lead = tokenwire.generate(
            model, request, tools=[research_tool(model)], tool_options=tokenwire.ToolOptions(max_steps=2), log=log
        )
        view = TreeView()
        async for event in follow_tree(log, lead.stream_id):
            if fmt == "jsonl":
                sys.stdout.buffer.write(encode(event) + b"\n")
                sys.stdout.buffer.flush()
            else:
                view(event)
        await lead


def serve(port: int) -> None:
    """The agent behind a tokenwire server on loopback, for the web UI."""
    import uvicorn

    from tokenwire.server import create_app

    with LlamaCpp.default(parallel=2) as model:
        model.load()
        app = create_app(providers={"llama": model}, tools=[research_tool(model)], api_keys=None)
        print(f"web UI: http://127.0.0.1:{port}/?tools=research&tool_choice=required", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="Why do rivers meander?")
    parser.add_argument("--format", choices=["text", "jsonl"], default="text")
    parser.add_argument("--serve", action="store_true", help="serve the agent for the web UI instead")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
    else:
        asyncio.run(main(args.question, args.format))
