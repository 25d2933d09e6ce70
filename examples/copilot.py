"""A code copilot on the embedded model: each code block is linted (ruff) the moment its closing
fence streams, while the rest of the answer is still being written.

    python examples/copilot.py ["a prompt"] [--format jsonl]

:class:`LintedAnswer` wraps the model: text streams through untouched; a line-level fence tracker
sees each fenced block close and starts ``ruff check`` on it at once, in a subprocess, without
holding the stream; its diagnostics join the same stream as a ``step`` event named ``lint``
(block number, language, each diagnostic's code, message and line) as soon as ruff answers. The
terminal view prints each note under the line being written when it came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import tokenwire
from tokenwire.consumers.chunking import lines
from tokenwire.core.provider import Part, Provider
from tokenwire.core.request import Message, Request
from tokenwire.events import Event, Step
from tokenwire.providers import LlamaCpp
from tokenwire.testing import Transcript

PROMPT = "Complete this Python code:\n```python\ndef add(a, b):"


class Fences:
    """Complete lines in, finished fenced blocks out: ``(language, code)``."""

    def __init__(self) -> None:
        self.lines = lines(max_delay_s=None)
        self.language: str | None = None  # inside a block: its language ("" when none)
        self.body: list[str] = []

    def feed(self, text: str) -> list[tuple[str, str]]:
        closed = []
        for line in self.lines.feed(text, now=0.0):
            if line.lstrip().startswith("```"):
                if self.language is None:
                    self.language, self.body = line.strip()[3:].strip().lower(), []
                else:
                    closed.append((self.language, "".join(self.body)))
                    self.language = None
            elif self.language is not None:
                self.body.append(line)
        return closed


async def ruff(code: str) -> list[dict[str, Any]]:
    """ruff's diagnostics for one block (its JSON output)."""
    args = ["-m", "ruff", "check", "--output-format", "json", "--no-cache", "--stdin-filename", "block.py", "-"]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=pipe, stdout=pipe, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate(code.encode())
    return [
        {"code": d["code"], "message": d["message"], "line": d["location"]["row"]} for d in json.loads(out or b"[]")
    ]


class LintedAnswer:
    """The wrapped model's stream, with a ``lint`` step for each code block as soon as it is linted."""

    def __init__(self, inner: Provider):
        self.inner = inner
        self.model = str(getattr(inner, "model", "copilot"))

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        out: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        linting: set[asyncio.Task[None]] = set()

        async def pump() -> None:
            try:
                async for part in self.inner.stream(request):
                    await out.put(part)
            finally:
                await out.put(end)

        async def lint(number: int, language: str, code: str) -> None:
            diagnostics = await ruff(code) if language in ("", "python", "py") else []
            detail = {"block": number, "language": language or "python", "diagnostics": diagnostics}
            await out.put(Step(name="lint", status="finished", detail=detail))

        fences, blocks = Fences(), 0
        model = asyncio.create_task(pump())
        model_done = False
        try:
            while not (model_done and not linting and out.empty()):
                item = await out.get()
                if item is end:
                    model_done = True
                    continue
                if isinstance(item, str):
                    for language, code in fences.feed(item):
                        blocks += 1
                        task = asyncio.create_task(lint(blocks, language, code))
                        linting.add(task)
                        task.add_done_callback(linting.discard)
                yield item
        finally:
            model.cancel()
            for task in linting:
                task.cancel()
            await asyncio.gather(model, *linting, return_exceptions=True)


class Show:
    """The terminal view: the answer as it streams, each lint note on a line of its own once the
    line being written ends (a note arrives whenever ruff answers, often mid-word)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, tokenwire.events.TextDelta):
            head, newline, rest = event.text.partition("\n")
            print(head + newline, end="", flush=True)
            if newline:
                self.flush()
                print(rest, end="", flush=True)
        elif isinstance(event, Step) and event.name == "lint":
            found = event.detail["diagnostics"]
            notes = "; ".join(f"line {d['line']} {d['code']} {d['message']}" for d in found) or "clean"
            self.notes.append(f"  [lint block {event.detail['block']}: {notes}]")
        elif isinstance(event, tokenwire.events.Done | tokenwire.events.Error):
            print()
            self.flush()

    def flush(self) -> None:
        for note in self.notes:
            print(note, flush=True)
        self.notes.clear()


async def main(prompt: str, fmt: str) -> None:
    observers: list[object] = [Transcript(sys.stdout.buffer)] if fmt == "jsonl" else [Show()]
    with LlamaCpp.default() as model:
        model.load()  # before the stream: llama.cpp silences stdout while it loads
        request = Request([Message("user", prompt)], max_tokens=80, seed=5)
        await tokenwire.generate(LintedAnswer(model), request, observers=observers).wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=PROMPT)
    parser.add_argument("--format", choices=["text", "jsonl"], default="text")
    args = parser.parse_args()
    asyncio.run(main(args.prompt, args.format))
