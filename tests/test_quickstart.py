"""The README's server quickstart and command-line block run as written: a shell, the real CLI,
the embedded model, curl."""

from __future__ import annotations

import os
import re
import shutil
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
