"""The command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import tokenwire
from tokenwire.testing import Transcript, assert_transcript

CLI = [sys.executable, "-m", "tokenwire"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_chat_jsonl_prints_every_event_as_one_json_line() -> None:
    proc = run("chat", "hello there", "--provider", "scripted", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [tokenwire.decode(line) for line in proc.stdout.splitlines()]
    assert_transcript(events, [{"type": "start", "model": "scripted"}, ..., {"type": "done", "finish_reason": "stop"}])
    assert "".join(e.text for e in events if isinstance(e, tokenwire.TextDelta)) == "You said: hello there"


def test_chat_text_and_transcript(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    proc = run("chat", "hi", "--transcript", str(path))
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
        [*CLI, "chat", " ".join(["word"] * 300), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    events = [tokenwire.decode(line) for line in [*lines, *out.splitlines()]]
    assert_transcript(events, ["start", ..., {"type": "done", "finish_reason": "cancelled"}])
    assert [e.seq for e in events] == list(range(len(events)))
    assert "Traceback" not in err
