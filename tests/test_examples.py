"""Every example in examples/ runs on the embedded model, as examples/README.md says, and its
--format jsonl transcript shows what it is for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tokenwire
from tokenwire.testing import assert_transcript

pytestmark = pytest.mark.e2e  # the embedded model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def events(name: str, *args: str) -> list[Any]:
    return [tokenwire.events.decode(line) for line in run(name, *args, "--format", "jsonl").stdout.splitlines()]


def test_the_readme_lists_every_example_with_its_command() -> None:
    listed = (EXAMPLES / "README.md").read_text()
    for example in EXAMPLES.glob("*.py"):
        assert f"python examples/{example.name}" in listed, example.name


def test_tool_agent_streams_calls_that_run_as_they_arrive() -> None:
    got = events("tool_agent.py", "What is 17 times 23?")
    turn = {"type": "step", "name": "turn"}
    assert_transcript(got, ["start", turn, ..., "tool_call", ..., "tool_result", ..., "done"])
    text = run("tool_agent.py").stdout
    assert "[calling " in text and "[tool_result " in text and "[done: " in text


def test_research_fans_out_to_two_sub_agents_that_run_in_parallel_as_child_runs() -> None:
    got = events("research.py", "Why do rivers meander?")
    streams: dict[str, list[Any]] = {}
    for e in got:
        streams.setdefault(e.stream_id, []).append(e)
    root, *children = streams
    assert len(children) == 2 and got[0].stream_id == root and got[0].parent is None
    call = next(e for e in streams[root] if e.type == "tool_call")
    for sid in children:  # each child: its own whole stream, naming the call that started it
        evs = streams[sid]
        assert [e.seq for e in evs] == list(range(len(evs))) and evs[-1].type == "done"
        assert evs[0].parent.stream_id == root and evs[0].parent.call_id == call.call_id and evs[0].parent.depth == 1
    assert sorted(streams[c][0].meta["agent"] for c in children) == ["example", "facts"]
    assert got.index(streams[children[1]][0]) < got.index(streams[children[0]][-1])  # both live at once
    marks = [(e.status, e.detail["stream_id"]) for e in streams[root] if e.type == "step" and e.name == "child"]
    assert sorted(marks) == sorted([(s, c) for c in children for s in ("started", "finished")])
    assert_transcript(streams[root], ["start", ..., "tool_call", ..., "tool_result", ..., "text.delta", ..., "done"])
    result = next(e for e in streams[root] if e.type == "tool_result")
    assert not result.is_error and "facts: " in result.result and "example: " in result.result
    own = sum(s.usage.output_tokens for s in (streams[c][-1] for c in children))
    assert streams[root][-1].usage.output_tokens > own  # the children's usage rolls up into the lead's
    text = run("research.py").stdout
    assert "[facts] " in text and "[example] " in text and "[lead] child facts done" in text


def test_research_serves_the_agent_whose_tree_a_client_reads_on_one_connection() -> None:
    """``--serve``: the server the web UI talks to; a run naming the research tool is read as a
    tree (the lead and its two sub-agents) over ``?tree=1``."""
    import asyncio
    import os
    import signal

    from tokenwire.client import Client
    from wire import free_port, wait_http

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "research.py"), "--serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", proc, within=120)

        async def read() -> list[Any]:
            async with Client(base) as c:
                # Seeded as the example's own CLI run is (fewer ways for the small model to go).
                body = {"prompt": "Why is the sky blue?", "tools": ["research"], "tool_choice": "required"}
                body |= {"seed": 3, "temperature": 0.2}
                info = await c.create_run(body)
                return [e async for e in c.subscribe(info.stream_id, info.read_token, tree=True)]

        got = asyncio.run(read())
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert f"web UI: {base}/?tools=research&tool_choice=required" in out.decode()
    streams = {e.stream_id for e in got}
    children = [e for e in got if e.type == "start" and e.parent is not None]
    calls = [e for e in got if e.type == "tool_call" and e.stream_id == got[0].stream_id]
    # Each research call starts its two sub-agents (the small model may call it in a second turn too).
    assert calls and len(children) == 2 * len(calls) and all(c.parent.depth == 1 for c in children)
    assert streams == {got[0].stream_id, *(c.stream_id for c in children)}
    assert got[-1].type == "done" and got[-1].stream_id == got[0].stream_id


def test_rag_cites_before_the_first_word_of_the_answer() -> None:
    got = events("rag.py", "How does a client resume a stream after a disconnect?")
    kinds = [(e.type, getattr(e, "name", None)) for e in got]
    citations = [e for e in got if e.type == "step" and e.name == "citation"]
    assert len(citations) == 3
    first_text = kinds.index(("text.delta", None))
    assert all(got.index(c) < first_text for c in citations)  # progressive: the sources come first
    assert {c.detail["source"] for c in citations} <= {"README.md", "docs/architecture.md", "docs/benchmarks.md"}
    assert all(c.detail["snippet"] and c.detail["score"] > 0 for c in citations)
    calls = [i for i, e in enumerate(got) if e.type == "tool_call" and e.name == "read_section"]
    results = [i for i, e in enumerate(got) if e.type == "tool_result" and not e.is_error]
    assert len(calls) == len(results) == 3 and max(results) < first_text  # the sections, fetched first
    assert [got[i].args["heading"] for i in calls] == [c.detail["heading"] for c in citations]
    assert got[-1].type == "done"


def test_copilot_lints_a_block_while_the_answer_is_still_streaming() -> None:
    got = events("copilot.py")
    lints = [e for e in got if e.type == "step" and e.name == "lint"]
    assert lints, "the answer has a closed code block: it must be linted"
    last_text = max(i for i, e in enumerate(got) if e.type == "text.delta")
    assert got.index(lints[0]) < last_text  # ruff answered before the model finished
    diagnostics = lints[0].detail["diagnostics"]
    assert isinstance(diagnostics, list) and all({"code", "message", "line"} <= set(d) for d in diagnostics)
    shown = run("copilot.py").stdout.splitlines()
    notes = [line for line in shown if "[lint block" in line]
    assert notes and all(line.startswith("  [lint block ") for line in notes)  # on lines of their own
    # Whether the model's block has a finding depends on the model build's numerics; the linter
    # itself is checked on a block that has one.
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location("copilot_example", EXAMPLES / "copilot.py")
    assert spec is not None and spec.loader is not None
    copilot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copilot)
    found = asyncio.run(copilot.ruff("print(x)\n"))
    assert [(d["code"], d["line"]) for d in found] == [("F821", 1)], found
    # The terminal view holds a note that arrives mid-line until that line ends.
    import contextlib
    import io

    from tokenwire.events import Done, Step, TextDelta

    out, env = io.StringIO(), {"stream_id": "s", "ts": 0.0}
    with contextlib.redirect_stdout(out):
        show = copilot.Show()
        show(TextDelta(text="def add_num", seq=1, **env))
        show(Step(name="lint", status="finished", detail={"block": 1, "diagnostics": []}, seq=2, **env))
        show(TextDelta(text="bers(a, b):\n    return", seq=3, **env))
        show(Done(finish_reason="stop", seq=4, **env))
    assert out.getvalue() == "def add_numbers(a, b):\n  [lint block 1: clean]\n    return\n"
