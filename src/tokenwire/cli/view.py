"""What ``tokenwire chat`` and ``tokenwire replay`` show: the live view of a stream (the answer,
reasoning, tool calls and a footer of metrics) or every event as a JSON line, and the demo
calculator tool of ``chat --tool-demo``.
"""

from __future__ import annotations

import ast
import json
import operator
import sys
import time
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from tokenwire.api import stream_sync
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request, ToolSpec
from tokenwire.events import (
    Done,
    Error,
    Event,
    ReasoningDelta,
    Step,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    encode,
)
from tokenwire.providers.scripted import Scripted
from tokenwire.telemetry import Metrics
from tokenwire.telemetry.redact import Redactor
from tokenwire.testing.transcript import Transcript


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"


class Echo:
    """A deterministic stand-in model: answers "You said: <last user message>" word by word,
    at ``rate`` words per second (``--provider scripted``)."""

    model = "scripted"
    chooses_model = False
    continues_prefix = True
    """A trailing assistant message (a durable run's cut-off answer) is continued: the rest of the echo."""

    def __init__(self, rate: float = 50.0):
        self.interval = 1 / rate

    @staticmethod
    def after(words: list[str], done: int) -> list[str]:
        """The parts of ``words`` after the first ``done`` characters (mid-word if it ends there).

        >>> Echo.after(["You", " said", " hi"], 6)
        ['id', ' hi']
        """
        rest = []
        for w in words:
            if done < len(w):
                rest.append(w[max(done, 0) :])
            done -= len(w)
        return rest

    async def stream(self, request: Request) -> AsyncIterator[str]:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        answer = f"You said: {last}"
        words = [w if i == 0 else " " + w for i, w in enumerate(answer.split(" "))]
        tail = request.messages[-1] if request.messages else None
        if tail is not None and tail.role == "assistant" and answer.startswith(tail.content):
            words = self.after(words, len(tail.content))
        async for part in Scripted(words, interval_s=self.interval).stream(request):
            yield part  # type: ignore[misc]


CALCULATOR = ToolSpec(
    "calculator",
    "Evaluate an arithmetic expression such as '12 * (3 + 4)'.",
    # The pattern keeps a small model's expression arithmetic (it becomes part of the grammar the
    # arguments are generated under); bench/model_quality.py measures what it gains.
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "pattern": "^[-0-9(][0-9+*/%(). -]*$"}},
        "required": ["expression"],
    },
)
_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> float:
    """Evaluate + - * / % ** and parentheses over numbers; raises ValueError on anything else."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"not arithmetic: {ast.unparse(node)!r}")

    try:
        return float(ev(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ZeroDivisionError, OverflowError) as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from None


class LiveView:
    """The terminal rendering: the answer so far, tool-call cards, and a metrics footer.

    The footer's figures come from :class:`~tokenwire.telemetry.Metrics` (the same statistics as
    ``done.stats`` and ``tokenwire stats``), read against ``clock`` (the events' clock) while live.
    """

    def __init__(self, stall_after_s: float = 1.0, clock: Callable[[], float] = time.time):
        self.answer = Text()
        self.tools = Text()
        self.metrics = Metrics(stall_gap_s=stall_after_s)
        self.clock = clock
        self.status = "streaming"
        self.stall_after_s = stall_after_s
        self.queued: int | None = None
        """The run's place in the model's queue while it waits there (a ``queued`` step)."""

    def on_event(self, event: Event) -> None:
        self.metrics(event)
        if isinstance(event, Step) and event.name == "queued":
            place = event.detail.get("position") if isinstance(event.detail, dict) else None
            self.queued = (place or 1) if event.status == "started" else None
        elif isinstance(event, TextDelta):
            self.answer.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.answer.append(event.text, style="dim italic")
        elif isinstance(event, ToolCallStart):
            self.tools.append(f"\n⚙ {event.name}(", style="bold cyan")
        elif isinstance(event, ToolCallDelta):
            self.tools.append(event.args_delta, style="cyan")
        elif isinstance(event, ToolCall):
            self.tools.append(")", style="bold cyan")
        elif isinstance(event, Done):
            self.status = event.finish_reason
        elif isinstance(event, Error):
            self.status = f"error: {event.code}"

    def footer(self) -> Text:
        m = self.metrics
        now = m.end_ts if m.end_ts is not None else self.clock()
        start = m.start_ts if m.start_ts is not None else now
        ttft = f"{m.ttft_s:.2f}s" if m.ttft_s is not None else "…"
        parts = [
            f"ttft {ttft}",
            f"{m.tokens_per_s(now):.1f} tok/s",
            f"{m.output_tokens()} tokens",
            f"{now - start:.1f}s",
            self.status,
        ]
        text = Text(" · ".join(parts), style="dim")
        if self.status != "streaming":
            return text
        if self.queued is not None:  # waiting for the model, behind other answers
            text.append(f"  queued, place {self.queued}", style="yellow")
        elif m.first_ts is None:  # loading, reading the prompt: not a stall, no token came yet
            if now - start >= self.stall_after_s:
                text.append(f"  waiting for the first token {now - start:.1f}s", style="yellow")
        elif now - m.last_ts >= self.stall_after_s:  # a gap between tokens
            text.append(f"  ⏸ stalled {now - m.last_ts:.1f}s", style="bold yellow")
        return text

    def __rich__(self) -> Group:
        return Group(self.answer, self.tools, Text(""), self.footer())


def show(
    backend: Provider,
    request: Request | str,
    format: Format,
    console: Console,
    *,
    transcript: str | None = None,
    redactor: Redactor | None = None,
) -> None:
    """Stream ``backend``'s answer to the terminal: the live view on a TTY, plain text when piped,
    every event as JSON lines with ``--format jsonl``; exit 1 on an error, 130 on Ctrl-C."""
    observers: list[object] = [Transcript(transcript, redactor=redactor)] if transcript else []
    live = format is Format.text and sys.stdout.isatty()
    view = LiveView()
    observers.append(view)
    events = stream_sync(backend, request, observers=observers)
    out = sys.stdout.buffer
    interrupted = False
    terminal: Event | None = None
    display = Live(view, console=console, refresh_per_second=20, transient=False) if live else None
    with events:
        if display is not None:
            display.start()
        try:
            while True:
                try:
                    for event in events:
                        terminal = event
                        if format is Format.jsonl:
                            out.write(encode(event) + b"\n")
                            out.flush()
                        elif not live and isinstance(event, TextDelta):
                            out.write(event.text.encode())
                            out.flush()
                    break
                except KeyboardInterrupt:
                    interrupted = True
                    events.cancel("interrupted (Ctrl-C)")
        finally:
            if display is not None:
                display.stop()
    response = events.result()
    if format is Format.text:
        if not live:
            out.write(b"\n")
            out.flush()
        for call in response.tool_calls:
            run_demo_tool(call, console if live else None)
        if interrupted and not live:  # the live view already shows the final footer
            typer.echo(view.footer().plain, err=True)
    if isinstance(terminal, Error):
        typer.echo(f"error ({terminal.source}/{terminal.code}): {terminal.message}", err=True)
        raise typer.Exit(1)
    if interrupted:
        raise typer.Exit(130)


def run_demo_tool(call: ToolCall, console: Console | None) -> None:
    """Execute the demo calculator call the model made and show the result."""
    try:
        result: object = calculate(str(call.args.get("expression", "")))
    except ValueError as exc:
        result = f"error: {exc}"
    line = f"{call.name}({json.dumps(call.args)}) = {result}"
    if console is not None:
        console.print(Text("→ " + line, style="green"))
    else:
        typer.echo(line)
