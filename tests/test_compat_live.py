"""OpenAICompatible against a real OpenAI-compatible server that nobody here wrote:
llama-cpp-python's own server, serving the bundled Gemma GGUF on a free loopback port (a base model: it
writes until it is cut)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

import tokenwire
from tokenwire.core.request import Message, Request
from tokenwire.events import TextDelta
from tokenwire.providers import OpenAICompatible
from tokenwire.providers.bundled import model_path
from tokenwire.testing import Transcript, assert_transcript
from wire import free_port, wait_for

pytestmark = pytest.mark.e2e  # llama-cpp-python's server with the real model


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below; a pipe nobody reads would fill up
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path("gemma-3-270m")), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--chat_format", "gemma", "--n_ctx", "1024", "--model_alias", "gemma"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(base + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_streams_from_the_real_server(llama_server: str) -> None:
    provider = OpenAICompatible(llama_server, model="gemma")
    t = Transcript()
    request = Request([Message("user", "Name three colors.")], max_tokens=12, seed=1, temperature=0.7)
    response = await tokenwire.generate(provider, request, observers=[t])
    await provider.aclose()
    assert_transcript(
        t.events, [{"type": "start", "model": "gemma"}, "text.delta", ..., {"type": "done", "finish_reason": "length"}]
    )
    assert sum(isinstance(e, TextDelta) for e in t.events) >= 3 and response.text.strip()


async def test_cancel_mid_stream_then_the_server_serves_the_next_request(llama_server: str) -> None:
    provider = OpenAICompatible(llama_server, model="gemma")
    t = Transcript()
    handle = tokenwire.generate(
        provider, Request([Message("user", "Tell a long story.")], max_tokens=300), observers=[t]
    )
    await wait_for(lambda: sum(isinstance(e, TextDelta) for e in t.events) >= 3)
    handle.cancel("enough")
    terminal = await handle.wait()
    assert terminal.type == "done" and terminal.finish_reason == "cancelled"
    again = await tokenwire.generate(provider, Request([Message("user", "Hi")], max_tokens=4))
    await provider.aclose()
    assert again.finish_reason in ("stop", "length") and again.error is None
