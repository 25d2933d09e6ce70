"""The command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tokenwire
from tokenwire.testing import Transcript, assert_transcript

CLI = [sys.executable, "-m", "tokenwire"]


def at_a_terminal() -> None:
    """In a child that stands for a program run at a terminal: Ctrl-C raises KeyboardInterrupt.
    A suite started in the background by a shell without job control inherits SIGINT ignored,
    and Python keeps an inherited ignore (it installs its handler only over the default)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_chat_jsonl_prints_every_event_as_one_json_line() -> None:
    proc = run("chat", "hello there", "--provider", "scripted", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [tokenwire.events.decode(line) for line in proc.stdout.splitlines()]
    assert_transcript(events, [{"type": "start", "model": "scripted"}, ..., {"type": "done", "finish_reason": "stop"}])
    assert "".join(e.text for e in events if isinstance(e, tokenwire.events.TextDelta)) == "You said: hello there"


def test_chat_text_and_transcript(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    proc = run("chat", "hi", "--provider", "scripted", "--transcript", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "You said: hi\n"
    t = Transcript.load(path)
    assert t.types[0] == "start" and t.types[-1] == "done" and t.text == "You said: hi"


def test_unknown_provider_is_a_usage_error() -> None:
    proc = run("chat", "hi", "--provider", "nope")
    assert proc.returncode == 2
    assert "unknown provider 'nope'" in proc.stderr


def test_schema_prints_the_generated_json_schema() -> None:
    proc = run("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema == tokenwire.events.json_schema()


def test_ctrl_c_cancels_cleanly_with_exit_130() -> None:
    proc = subprocess.Popen(
        # 3,000 words at 50 a second: the run is still going when the signal comes, however busy
        # the machine (the signal follows the second event read).
        [*CLI, "chat", " ".join(["word"] * 3000), "--provider", "scripted", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=at_a_terminal,
    )
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # never left behind, writing to a pipe nobody reads
    assert proc.returncode == 130, err
    events = [tokenwire.events.decode(line) for line in [*lines, *out.splitlines()]]
    assert_transcript(events, ["start", ..., {"type": "done", "finish_reason": "cancelled"}])
    assert [e.seq for e in events] == list(range(len(events)))
    assert "Traceback" not in err


@pytest.mark.e2e
def test_chat_defaults_to_the_embedded_model_jsonl() -> None:
    proc = run("chat", "Name a color.", "--format", "jsonl", "--seed", "1", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    events = [tokenwire.events.decode(line) for line in proc.stdout.splitlines()]
    assert_transcript(
        events,
        [{"type": "start", "model": "smollm2-135m-instruct"}, "text.delta", ..., "usage", {"type": "done"}],
    )


@pytest.mark.e2e
def test_piped_text_output_has_no_control_codes() -> None:
    proc = run("chat", "Say hello.", "--seed", "2", "--max-tokens", "10", "--system", "Be brief.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "\x1b" not in proc.stdout


@pytest.mark.e2e
def test_tool_demo_streams_a_call_and_runs_it() -> None:
    proc = run("chat", "What is 12 times 7?", "--tool-demo", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith('calculator({"expression": ') and " = " in line


def test_missing_model_file_is_a_clear_error() -> None:
    proc = run("chat", "hi", "--model", "/nonexistent/model.gguf")
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_terminal_view_renders_live_and_ctrl_c_keeps_the_partial_answer() -> None:
    """A real pseudo-terminal: the live view with its footer, then Ctrl-C. The echo model takes
    a minute to say 3,000 words, so the Ctrl-C always lands mid-answer (a real model may finish
    first on a fast machine, or before the view has drawn on a slow one)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal
        at_a_terminal()
        os.execv(sys.executable, [*CLI, "chat", " ".join(["wave"] * 3000), "--provider", "scripted"])
    output = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not sent and b"tok/s" in output and output.count(b"tokens") >= 3:
            os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it
            sent = True
    if not sent:
        os.kill(pid, signal.SIGKILL)  # never left behind, writing to a terminal nobody reads
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert sent, text[-500:]
    assert os.WEXITSTATUS(status) == 130, text[-500:]
    assert "\x1b[" in text  # live rendering uses the terminal
    assert "cancelled" in text and "ttft" in text
    assert "Traceback" not in text


# -- transcript tools: tokenwire stats / replay -------------------------------------------------------


def golden_file() -> str:
    from tokenwire.testing import golden

    return str(golden.HERE / "transcript.jsonl")


def test_stats_prints_the_cadence_of_a_recorded_run() -> None:
    proc = run("stats", golden_file(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == "golden-model" and summary["outcome"] == "overloaded"
    assert summary["ttft_s"] == pytest.approx(0.01) and summary["chunks"] == summary["events"]["text.delta"] + sum(
        summary["events"].get(k, 0) for k in ("reasoning.delta", "tool_call.start", "tool_call.delta")
    )
    assert [t["name"] for t in summary["tools"]] == ["weather", "weather"]
    text = run("stats", golden_file())
    assert text.returncode == 0 and "ttft        10 ms" in text.stdout and "tool        weather" in text.stdout
    bad = run("stats", __file__)
    assert bad.returncode == 1 and "test_cli.py:1:" in bad.stderr and "Traceback" not in bad.stderr


def test_replay_plays_a_recording_back_as_events_and_as_text(tmp_path: Path) -> None:
    from tokenwire.testing import golden

    proc = run("replay", golden_file(), "--speed", "0", "--format", "jsonl")
    assert proc.returncode == 1  # the recording ends with an error, and so does its replay
    replayed = [tokenwire.events.decode(line) for line in proc.stdout.splitlines()]
    assert [e.type for e in replayed] == [e.type for e in golden.transcript()]
    recording = tmp_path / "run.jsonl"
    assert run("chat", "hi", "--provider", "scripted", "--transcript", str(recording)).returncode == 0
    text = run("replay", str(recording), "--speed", "50")
    assert (text.returncode, text.stdout) == (0, "You said: hi\n")


def test_replay_serve_serves_the_recording_to_a_real_client(tmp_path: Path) -> None:
    from tokenwire.client import SyncClient
    from wire import free_port, wait_http

    recording = tmp_path / "run.jsonl"
    assert run("chat", "over the wire", "--provider", "scripted", "--transcript", str(recording)).returncode == 0
    port = free_port()
    env = {**os.environ, "TOKENWIRE_API_KEYS": "replay-key-123"}
    cmd = [*CLI, "replay", str(recording), "--serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        with SyncClient(f"http://127.0.0.1:{port}", api_key="replay-key-123") as client:
            events = list(client.run("anything"))
    finally:
        proc.terminate()
        proc.wait(10)
    assert "".join(e.text for e in events if isinstance(e, tokenwire.events.TextDelta)) == "You said: over the wire"
    assert events[-1].type == "done"


def test_help_is_plain_text_with_single_flags() -> None:
    chat, serve = run("chat", "--help"), run("serve", "--help")
    assert chat.returncode == serve.returncode == 0
    assert "[redacted]" in chat.stdout  # not eaten as markup
    for out in (chat.stdout, serve.stdout):
        assert "<bool>" not in out and "--no-no-auth" not in out
    assert "written to ~/.cache/tokenwire/api-key" in " ".join(serve.stdout.split())


def test_serve_refuses_an_empty_api_key_and_a_port_in_use_in_one_line() -> None:
    empty = run("serve", "--api-key", "", "--provider", "scripted")
    assert empty.returncode == 2 and "--api-key may not be empty" in " ".join(empty.stderr.split())
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("serve", "--no-auth", "--provider", "scripted", "--port", str(port))
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert (
        busy.stderr.strip()
        == f"error: port {port} on 127.0.0.1 is already in use (another server?); choose another with --port"
    )


def test_serve_says_where_it_listens_and_what_answers() -> None:
    from wire import free_port

    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--no-auth", "--provider", "scripted", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = [proc.stderr.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(30)
    assert banner[0].startswith(f"tokenwire serving http://127.0.0.1:{port} (web UI: http://127.0.0.1:{port}/")
    assert "default provider 'scripted': a scripted echo" in banner[1] and "event log: memory" in banner[2]


def test_the_live_view_waits_for_the_first_token_and_a_queue_and_calls_only_a_gap_between_tokens_a_stall() -> None:
    """Loading the model or reading a long prompt is not a stall; neither is waiting in the
    model's queue. The clock is the events' clock, injected."""
    from tokenwire.cli.view import LiveView
    from tokenwire.events import Done, Start, Step, TextDelta

    now = [100.0]
    view = LiveView(clock=lambda: now[0])
    env = {"stream_id": "s", "ts": 100.0}
    view.on_event(Start(model="m", seq=0, **env))
    now[0] = 100.5
    assert view.footer().plain.endswith("streaming")  # under a second: nothing to say
    now[0] = 102.0
    assert view.footer().plain.endswith("streaming  waiting for the first token 2.0s")
    view.on_event(Step(name="queued", status="started", detail={"position": 2}, seq=1, **env))
    assert view.footer().plain.endswith("queued, place 2")
    view.on_event(Step(name="queued", status="finished", seq=2, **(env | {"ts": 103.0})))
    view.on_event(TextDelta(text="Hi", seq=3, **(env | {"ts": 103.0})))
    now[0] = 103.5
    assert view.footer().plain.endswith("streaming")
    now[0] = 105.0
    assert view.footer().plain.endswith("⏸ stalled 2.0s")
    view.on_event(Done(finish_reason="stop", seq=4, **(env | {"ts": 105.0})))
    assert view.footer().plain.endswith("stop")
