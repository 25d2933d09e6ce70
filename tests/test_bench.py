"""The benchmarks still run and print their result tables (tiny sizes; no timing is asserted —
performance targets live in bench/ and docs/benchmarks.md, not in tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("dispatch.py", ("--events", "2000", "--repeat", "1"), "| overhead µs/ev |"),
        ("tools.py", ("--reps", "1", "--tool-s", "0.05"), "| tokenwire, at tool_call time |"),
        ("telemetry.py", ("--events", "2000", "--repeat", "1"), "| OpenTelemetry (spans, GenAI metrics) |"),
        ("transports.py", ("--events", "500", "--subscribers", "3"), "| gRPC |"),
        ("wire_formats.py", ("--events", "200", "--readers", "3"), "| shared encoder (the server) |"),
        ("durable.py", ("--trials", "1", "--runs", "3"), "| kill → first event of the new producer |"),
        (
            "redis_log.py",
            ("--events", "2000", "--seconds", "0.5", "--fanout", "0", "--procs", "1", "--streams", "4"),
            "### cluster of 3 masters (+3 replicas)",
        ),
        ("linear.py", ("--base", "2000"), "| Snapshot, one long turn of deltas"),
        ("snapshot.py", ("--events", "500", "--reps", "1"), "| ?snapshot=1, first join (folds the log) |"),
        ("trees.py", ("--children", "2", "--deltas", "20", "--fanout", "3", "--reps", "1"), "one ?tree=1 subscription"),
        ("multiplex.py", ("--streams", "3", "--events", "5"), "| one SSE connection (POST /v1/events) | 21 |"),
        ("server_memory.py", ("--events", "2000", "--runs", "10"), "| per live run with no reader (10 runs) |"),
        pytest.param("speech.py", ("--tokens", "40", "--runs", "1"), "| sentence by sentence", marks=pytest.mark.e2e),
        pytest.param(
            "local_model.py",
            ("--procs", "1", "--runs", "1", "--tokens", "6"),
            "| tokenwire / raw |",
            marks=pytest.mark.e2e,  # the real embedded model
        ),
    ],
)
def test_benchmark_runs_and_reports(script: str, args: tuple[str, ...], expected: str) -> None:
    out = run_bench(script, *args)
    assert expected in out, out
