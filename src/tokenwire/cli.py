"""The ``tokenwire`` command line: ``chat`` and ``schema``.

``tokenwire chat PROMPT --format jsonl`` prints every event as one JSON line on stdout: the
machine-readable interface benchmarks and tests use. ``--format text`` prints the answer as it
streams. Ctrl-C cancels the stream cleanly (it ends with ``done(cancelled)``) and exits with 130.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer

from tokenwire.events import SCHEMA_VERSION, Error, ReasoningDelta, TextDelta, encode, json_schema
from tokenwire.providers.base import Provider
from tokenwire.providers.scripted import Scripted
from tokenwire.stream import stream_sync
from tokenwire.testing.transcript import Transcript

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stream LLM output as typed events.")


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"


def _scripted(prompt: str) -> Provider:
    """A deterministic stand-in model: echoes the prompt word by word at ~50 tokens/s."""
    words = f"You said: {prompt}".split(" ")
    return Scripted([w if i == 0 else " " + w for i, w in enumerate(words)], interval_s=0.02)


PROVIDERS: dict[str, Callable[[str], Provider]] = {"scripted": _scripted}
"""Provider factories by ``--provider`` name."""


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask the model.")],
    provider: Annotated[str, typer.Option(help=f"Model backend: {', '.join(PROVIDERS)}.")] = "scripted",
    format: Annotated[Format, typer.Option("--format", help="text: the answer; jsonl: every event.")] = Format.text,
    transcript: Annotated[str | None, typer.Option(help="Also record every event to this JSONL file.")] = None,
) -> None:
    """Stream a model's answer to PROMPT."""
    factory = PROVIDERS.get(provider)
    if factory is None:
        raise typer.BadParameter(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    observers = [Transcript(transcript)] if transcript else []
    out = sys.stdout.buffer
    events = stream_sync(factory(prompt), prompt, observers=observers)
    interrupted = False
    terminal = None
    with events:
        while True:
            try:
                for event in events:
                    if format is Format.jsonl:
                        out.write(encode(event) + b"\n")
                        out.flush()
                    elif isinstance(event, TextDelta | ReasoningDelta):
                        out.write(event.text.encode())
                        out.flush()
                    terminal = event
                break
            except KeyboardInterrupt:
                interrupted = True
                events.cancel("interrupted (Ctrl-C)")
    if format is Format.text:
        out.write(b"\n")
        out.flush()
    if isinstance(terminal, Error):
        typer.echo(f"error ({terminal.source}/{terminal.code}): {terminal.message}", err=True)
        raise typer.Exit(1)
    if interrupted:
        raise typer.Exit(130)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the events (generated from the Python types)."""
    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def version() -> None:
    """Print the package and event-schema versions."""
    from tokenwire import __version__

    typer.echo(f"tokenwire {__version__} (event schema {SCHEMA_VERSION})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
