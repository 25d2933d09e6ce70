"""The ``tokenwire`` command line: ``chat``, ``serve``, ``replay``, ``stats``, ``schema`` and ``version``.

``tokenwire chat PROMPT`` streams the embedded model's answer (SmolLM2 135M Instruct, no network, no key).
On a terminal it renders the answer live with a footer of metrics (time to first token, tokens/s,
token count, elapsed, a stall indicator); piped, it prints plain text. ``--format jsonl`` prints
every event as one JSON line: the machine-readable interface benchmarks and tests use. Ctrl-C
cancels the stream cleanly: it ends with ``done(cancelled)``, the partial answer and a summary
stay on screen, and the exit code is 130.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokenwire import __version__
from tokenwire.cli.view import CALCULATOR, Echo, Format, show
from tokenwire.core.provider import Provider
from tokenwire.core.request import Message, Request
from tokenwire.errors import EventDecodeError
from tokenwire.events import (
    SCHEMA_VERSION,
    json_schema,
    load_jsonl,
)
from tokenwire.log import log_kind
from tokenwire.providers import bundled
from tokenwire.providers.bundled import DEFAULT, MODELS
from tokenwire.providers.llama import LlamaCpp
from tokenwire.providers.replay import Replay
from tokenwire.server.tokens import new_secret
from tokenwire.telemetry import Metrics
from tokenwire.telemetry.redact import Redactor

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Stream LLM output as typed events.",
    rich_markup_mode=None,  # help text is plain: "[redacted]" is not a markup tag
)


def _scripted(model: str | None) -> Provider:
    return Echo()


def _llama(model: str | None) -> Provider:
    return LlamaCpp.named(model)


def _replay(model: str | None) -> Provider:
    if not model:
        raise ValueError("--provider replay needs --model FILE.jsonl (a recorded transcript)")
    return Replay(model)


PROVIDERS: dict[str, Callable[[str | None], Provider]] = {"llama": _llama, "scripted": _scripted, "replay": _replay}
"""Provider factories by ``--provider`` name: ``factory(model_path)`` (``replay``: the transcript's path)."""
MODEL_HELP = f"a bundled model ({', '.join(MODELS)}; default {DEFAULT}) or a GGUF's path."
"""What ``--model`` takes (``chat``, ``serve``)."""


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask the model.")],
    provider: Annotated[str, typer.Option(help=f"Model backend: {', '.join(PROVIDERS)}.")] = "llama",
    model: Annotated[str | None, typer.Option(help=MODEL_HELP[0].upper() + MODEL_HELP[1:])] = None,
    format: Annotated[Format, typer.Option("--format", help="text: the answer; jsonl: every event.")] = Format.text,
    transcript: Annotated[str | None, typer.Option(help="Also record every event to this JSONL file.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Cap on generated tokens.")] = 256,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for repeatable output.")] = None,
    repeat_penalty: Annotated[
        float | None, typer.Option(help="Penalty on recently generated tokens (default: the model's; 1.0 = off).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    tool_demo: Annotated[bool, typer.Option(help="Offer a calculator tool and stream the model's call.")] = False,
    redact: Annotated[
        list[str] | None, typer.Option(help="Mask what this regular expression matches in the transcript (repeatable).")
    ] = None,
) -> None:
    """Stream a model's answer to PROMPT.

    A --transcript is written through the same redactor as the server's logs: credentials in
    URLs, bearer values, the API keys in OPENAI_API_KEY, ANTHROPIC_API_KEY and TOKENWIRE_API_KEYS,
    and whatever --redact matches, become [redacted]."""
    factory = PROVIDERS.get(provider)
    if factory is None:
        raise typer.BadParameter(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", prompt))
    request = Request(
        messages,
        max_tokens=max_tokens,
        # A calculator wants the likeliest expression: the tool demo samples greedily unless told.
        temperature=0.0 if temperature is None and tool_demo else temperature,
        seed=seed,
        tools=[CALCULATOR] if tool_demo else [],
        tool_choice="calculator" if tool_demo else "auto",
        extra={"repeat_penalty": repeat_penalty} if repeat_penalty is not None else {},
    )
    console = Console(stderr=format is Format.jsonl)
    try:
        backend = factory(model)
        load = getattr(backend, "load", None)
        if load is not None:  # load before the clock starts, so the footer's ttft is the model's
            with console.status("loading model…"):
                load()
    except Exception as exc:  # a missing model file, a corrupt GGUF, a missing extra: say it, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    env_secrets = [os.environ.get(k, "") for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")]
    env_secrets += os.environ.get("TOKENWIRE_API_KEYS", "").split(",")
    redactor = Redactor([s for s in env_secrets if s], patterns=redact or [])
    show(backend, request, format, console, transcript=transcript, redactor=redactor)


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="A recorded run: a JSONL transcript (chat --transcript, Transcript).")],
    speed: Annotated[float, typer.Option(help="1 keeps the recorded pauses, 2 halves them; 0: no pauses.")] = 1.0,
    format: Annotated[Format, typer.Option("--format", help="text: the live view; jsonl: every event.")] = Format.text,
    serve_it: Annotated[
        bool, typer.Option("--serve", help="Serve it over HTTP/SSE instead (the web UI at /).")
    ] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port.")] = 8000,
) -> None:
    """Play a recorded run as the live chat view showed it, with its timing (or serve it)."""
    if speed < 0:
        raise typer.BadParameter("--speed must be >= 0")
    try:
        recorded = Replay(file, speed=speed or None)
    except (OSError, EventDecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if serve_it:
        serve(port=port, provider="replay", model=str(file))
        return
    show(recorded, "replay", format, Console(stderr=format is Format.jsonl))


@app.command()
def stats(
    file: Annotated[Path, typer.Argument(help="A recorded run: a JSONL transcript.")],
    format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    stall_gap: Annotated[
        float, typer.Option(help="A gap between chunks of at least this many seconds is a stall.")
    ] = 1.0,
) -> None:
    """Print a recorded run's cadence: TTFT, tokens/s, gap percentiles, stalls, events and bytes."""
    try:
        events = load_jsonl(file)
    except (OSError, EventDecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    metrics = Metrics(stall_gap_s=stall_gap, measure_bytes=True)
    for event in events:
        metrics(event)
    summary = metrics.summary()
    if format == "json":
        typer.echo(json.dumps(summary, indent=2))
        return

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"

    lines = [
        f"model       {summary['model'] or '-'}   outcome {summary['outcome'] or 'unfinished'}",
        f"duration    {secs(summary['duration_s'])}",
        f"ttft        {secs(summary['ttft_s'])}",
        f"output      {summary['output_tokens']} tokens in {summary['chunks']} chunks, "
        f"{summary['tokens_per_s']:.1f} tokens/s",
        f"gaps        p50 <= {secs(summary['gap_p50_s'])}   p90 <= {secs(summary['gap_p90_s'])}   "
        f"p99 <= {secs(summary['gap_p99_s'])}   max {secs(summary['max_gap_s'])}",
        f"stalls      {summary['stalls']} (gaps >= {stall_gap:g} s)",
    ]
    lines += [
        f"tool        {t['name']} {secs(t['duration_s'])}{' (error)' if t['is_error'] else ''}"
        for t in summary["tools"]
    ]
    lines.append("events      " + ", ".join(f"{k} {v} ({summary['bytes'][k]} B)" for k, v in summary["events"].items()))
    typer.echo("\n".join(lines))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the events (generated from the Python types)."""
    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def version() -> None:
    """Print the package and event-schema versions."""
    typer.echo(f"tokenwire {__version__} (event schema {SCHEMA_VERSION})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()


def _banner(host: str, port: int, provider: str, model: str | None, grpc_port: int | None, tls: bool, log: str) -> str:
    """What ``serve`` says before it starts: where to connect, and what answers."""
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    answers = {
        "llama": f"the embedded model, {bundled.title(model)}",
        "scripted": "a scripted echo (no model)",
        "replay": f"the recording {model}",
    }.get(provider, provider)
    lines = [
        f"tokenwire serving {url} (web UI: {url}/, API: {url}/v1/runs, OpenAI-compatible: {url}/v1)",
        f"  default provider {provider!r}: {answers}",
        f"  event log: {'redis' if log != 'memory' else 'memory (this process)'}",
    ]
    if grpc_port is not None:
        lines.append(f"  gRPC: {host}:{grpc_port}")
    return "\n".join(lines)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    provider: Annotated[
        str, typer.Option(help=f"Default model backend: {', '.join(PROVIDERS)}, or package.module:attribute.")
    ] = "llama",
    model: Annotated[str | None, typer.Option(help=f"For the llama backend: {MODEL_HELP}")] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="Serve an agent of another framework, package.module:attribute (a LangGraph graph…)."),
    ] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="API key allowed to create runs (repeatable).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Let anyone create runs (local demos only).")] = False,
    shutdown_grace: Annotated[float, typer.Option(help="Seconds running streams get to finish on SIGTERM.")] = 10.0,
    log: Annotated[
        str, typer.Option(help="Event log: 'memory' (this process) or redis://HOST:PORT/DB (shared by every node).")
    ] = "memory",
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info, debug or trace (credentials always redacted).")
    ] = "info",
    workers: Annotated[int, typer.Option(help="Processes serving the port (above 1 needs --log redis://).")] = 1,
    send_buffer: Annotated[int, typer.Option(help="Kernel send buffer per connection, bytes.")] = 65_536,
    parallel: Annotated[
        int, typer.Option(help="Answers the embedded model generates at once (continuous batching); more queue.")
    ] = 4,
    http2: Annotated[
        bool, typer.Option(help="Serve HTTP/2 (hypercorn): h2 with --certfile/--keyfile, else h2c; HTTP/1.1 too.")
    ] = False,
    certfile: Annotated[str | None, typer.Option(help="TLS certificate (PEM) for --http2.")] = None,
    keyfile: Annotated[str | None, typer.Option(help="TLS private key (PEM) for --http2.")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="Also serve the Tokenwire gRPC service on this port (same runs, keys, tokens).")
    ] = None,
    log_format: Annotated[str, typer.Option(help="text, or json: one JSON object per line.")] = "text",
    tools: Annotated[
        list[str] | None,
        typer.Option("--tools", help="Tools runs may call: package.module:attribute (a tool, or a list; repeatable)."),
    ] = None,
    redact: Annotated[
        list[str] | None, typer.Option(help="Also mask what this regular expression matches in logs (repeatable).")
    ] = None,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            envvar="TOKENWIRE_METRICS_TOKEN", help="Turn on GET /metrics (Prometheus), readable with this bearer token."
        ),
    ] = None,
) -> None:
    """Serve runs over HTTP, SSE and WebSocket, with the web UI at /.

    API keys come from --api-key or TOKENWIRE_API_KEYS (comma-separated); with neither, a key is
    generated and written to ~/.cache/tokenwire/api-key (readable by you only; never printed).
    TOKENWIRE_SECRET (hex) signs stream tokens; random per start otherwise.
    On SIGTERM or Ctrl-C the server stops taking runs, gives running streams --shutdown-grace
    seconds, ends the rest with error(transport, shutdown) and closes every connection.
    """
    import secrets

    keys: list[str] | None = None
    if api_key is not None and any(not k.strip() for k in api_key):
        raise typer.BadParameter(
            "--api-key may not be empty: a server with an empty key rejects every request. Omit it to have a "
            "key generated, or use --no-auth for a local demo",
            param_hint="--api-key",
        )
    if not no_auth:
        keys = list(api_key or []) or [k for k in os.environ.get("TOKENWIRE_API_KEYS", "").split(",") if k]
        if not keys:
            keys = [secrets.token_urlsafe(24)]
            # Written to a file only its owner can read, never to the server's output.
            path = _write_private(Path.home() / ".cache" / "tokenwire" / "api-key", keys[0])
            typer.echo(f"API key for this server generated and written to {path}", err=True)
    # One secret for every worker: a token issued by one verifies on all.
    secret = bytes.fromhex(os.environ["TOKENWIRE_SECRET"]) if os.environ.get("TOKENWIRE_SECRET") else new_secret()
    try:
        shared = log_kind(log) == "redis"
    except ValueError as exc:
        raise typer.BadParameter(f"--log: {exc}") from None
    if workers < 1 or (workers > 1 and not shared):
        raise typer.BadParameter("--workers N > 1 needs --log redis://…: every worker must read every run")
    from tokenwire.server import listen

    # The listening socket bounds every connection's kernel send buffer (see listen()).
    try:
        sock = listen(host, port, send_buffer=send_buffer)
    except OSError as exc:
        reason = "is already in use (another server?)" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
        typer.echo(f"error: port {port} on {host} {reason}; choose another with --port", err=True)
        raise typer.Exit(1) from None
    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    secrets_ = [*(keys or []), *([metrics_token] if metrics_token else [])]
    from tokenwire.server.process import log_config as server_log_config

    try:
        log_config = server_log_config(secrets_, redact or [], json_lines=log_format == "json", level=log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if grpc_port is not None and workers > 1:
        raise typer.BadParameter("--grpc-port serves from one process: use --workers 1")
    if bool(certfile) != bool(keyfile) or (certfile and not http2):
        raise typer.BadParameter("--certfile and --keyfile go together, with --http2")
    settings: dict[str, Any] = {"metrics_token": metrics_token, "grpc_port": grpc_port, "grpc_host": host}
    if tools:
        settings["tools"] = list(tools)
    if http2:
        settings["http2"] = {"certfile": certfile, "keyfile": keyfile}
    from tokenwire.server import process

    def shared_llama() -> Provider:  # several users share the embedded model: `parallel` answers batched
        return LlamaCpp.named(model, parallel=parallel)

    providers: dict[str, Callable[[], Provider]] = {n: functools.partial(f, model) for n, f in PROVIDERS.items()}
    providers["llama"] = shared_llama
    if agent is not None:  # another framework's agent: the default provider, adapted (tokenwire.adapters)
        if ":" not in agent:
            raise typer.BadParameter(f"--agent takes package.module:attribute, got {agent!r}")
        if provider != "llama":
            raise typer.BadParameter("--agent and --provider both name the default provider: give one")
        provider = agent
    if ":" in provider:  # package.module:attribute, imported in each server process
        providers[provider] = functools.partial(process.import_provider, provider)
    elif provider not in providers:
        raise typer.BadParameter(
            f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)} or give package.module:attribute"
        )
    serve_one = functools.partial(
        process.serve_one,
        sock,
        host,
        port,
        providers,
        provider,
        keys,
        secret,
        log,
        shutdown_grace,
        log_config,
        settings,
    )
    banner = _banner(host, port, provider, model, grpc_port, bool(certfile), log)
    if log_format == "json":  # every line of the server's output is one JSON object
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        banner = json.dumps({"ts": now, "level": "info", "logger": "tokenwire.serve", "message": banner})
    typer.echo(banner, err=True)
    if workers == 1:
        serve_one()
        return
    process.serve_workers(workers, sock, serve_one, stop_within_s=shutdown_grace + 30)
