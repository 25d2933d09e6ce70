"""The README's server quickstart and command-line block run as written: a shell, the real CLI,
the embedded model, curl."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wire import free_port

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("curl") is None, reason="the quickstart uses curl")
def test_the_server_quickstart_runs_as_written(tmp_path: Path) -> None:
    assert BLOCK is not None, "the README lost its quickstart block"
    script = BLOCK.group(1).replace("8000", str(free_port()))  # the same steps on a free port
    venv = Path(sys.executable).parent.parent
    script = script.replace(".venv/bin/tokenwire", str(venv / "bin" / "tokenwire"))
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # The server's access log shares the terminal (stdout): keep what curl printed.
    out = "\n".join(line for line in done.stdout.splitlines() if not re.match(r"(INFO|WARNING|ERROR):", line))
    first, resumed = out.split("event: done", 1)[0], out.split("event: done", 1)[1]
    assert first.startswith("retry:") and "id: 0\nevent: start" in first
    assert "id: 3\n" in resumed and "id: 0\n" not in resumed and "id: 2\n" not in resumed  # after seq 2
    assert resumed.rstrip().endswith('"status":"finished"}')
    assert "tokenwire serving http://127.0.0.1:" in done.stderr  # serve's banner


@pytest.mark.e2e
def test_the_command_line_block_runs_as_written(tmp_path: Path) -> None:
    block = re.search(r"<!-- cli -->\n```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert block is not None, "the README lost its command-line block"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-c", block.group(1)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r'calculator\(\{"expression": "12 ?\* ?7"\}\) = 84\.0', done.stdout)  # the tool demo's sum
    assert '"title":' in done.stdout and "ttft" in done.stdout  # the schema, the stats
    assert (tmp_path / "run.jsonl").is_file()


SERVE_LINES = [
    line.split("  #")[0].strip()
    for block in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    for line in block.splitlines()
    if line.startswith("tokenwire serve ")
]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_every_serve_command_of_the_readme_starts_as_written(tmp_path: Path) -> None:
    """Each ``tokenwire serve …`` line of the README starts a server that becomes ready, on a free
    port (its own Redis for the Redis line), and stops cleanly on SIGTERM."""
    from wire import start_redis, wait_http

    assert len(SERVE_LINES) >= 5, SERVE_LINES
    redis_port = free_port()
    redis = start_redis(redis_port, str(tmp_path))
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # a generated API key is written under it
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SCRAPE_TOKEN": "scrape-" + "x" * 24,
        "TOKENWIRE_SECRET": "ab" * 32,
    }
    try:
        for line in SERVE_LINES:
            port = free_port()
            command = line.replace("redis://127.0.0.1:6379/0", f"redis://127.0.0.1:{redis_port}/0")
            command = command.replace("--grpc-port 50051", f"--grpc-port {free_port()}")
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command} --port {port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                wait_http(f"http://127.0.0.1:{port}/readyz", proc, within=120)
            finally:
                proc.terminate()
                out, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, -signal.SIGTERM), (line, err[-2000:])  # uvicorn re-raises the signal
            assert b"Traceback" not in err + out, line
    finally:
        redis.terminate()
        redis.wait(10)
