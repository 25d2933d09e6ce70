"""Shared helpers for the test suite."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--log-backend",
        choices=["memory", "redis"],
        default="memory",
        help="run every stream and server on this event log (redis: a redis-server started for the session)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--log-backend") != "redis":
        return
    import os

    from wire import free_port, start_redis

    port = free_port()
    proc = start_redis(port)
    os.environ["TOKENWIRE_LOG"] = f"redis://127.0.0.1:{port}/0"
    config.stash[_REDIS] = proc


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = config.stash.get(_REDIS, None)
    if proc is not None:
        proc.terminate()
        proc.wait(10)


_REDIS = pytest.StashKey["subprocess.Popen[bytes]"]()


def other_tasks() -> set[asyncio.Task[object]]:
    """Tasks alive besides the current one."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fails the test if it leaves a thread running."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


# -- other ecosystems' clients: Node.js packages and headless Chromium ------------------------------

JS = Path(__file__).with_name("js")


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js with tests/js's pinned packages (``npm ci`` when the lock is newer than the install)."""
    binary = shutil.which("node")
    if binary is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed (make test's system-deps installs them)")
    installed = JS / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (JS / "package-lock.json").stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True, timeout=600)
    return binary


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt when missing (no browser download by a test tool)."""
    path = shutil.which("chromium")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=900, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=1800, env=env)
        path = shutil.which("chromium")
    assert path, "chromium could not be installed"
    return path


@pytest.fixture
def page(chromium: str) -> Iterator[Any]:
    """A Playwright page in headless Chromium (flags that keep it off the closed network)."""
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        pg = browser.new_page()
        yield pg
        browser.close()


def weather_agent(answer: str) -> tuple[Any, Any]:
    """A server-side agent whose model, on its first turn, thinks, calls its own ``weather`` tool
    and the client's ``pick_color``, and on its second answers ``answer``: (agent, model)."""
    from tokenwire.events import ReasoningDelta, ToolCall
    from tokenwire.providers import Scripted
    from tokenwire.tools import tool
    from tokenwire.tools.agent import Agent

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = Scripted.turns(
        [
            ReasoningDelta("hm"),
            "Let me look.",
            ToolCall(call_id="c1", name="weather", args={"city": "Paris"}),
            ToolCall(call_id="c2", name="pick_color", args={}),
        ],
        [answer],
    )
    return Agent(model, [weather]), model


def paying_app(ran: list[str], api_keys: list[str] | None) -> Any:
    """An app whose model says it will pay, calls ``wire_money`` (a server tool that needs an
    approval; ``ran`` lists its calls), then says "Sent it." once the call is answered (on the
    suite's log: memory, or Redis in the ``--log-backend redis`` pass)."""
    from tokenwire.events import ToolCall
    from tokenwire.providers import Scripted
    from tokenwire.server import create_app
    from tokenwire.tools import tool

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        ran.append(f"wired {amount}")
        return "sent"

    model = Scripted.turns(
        ["I will pay. ", ToolCall(call_id="c1", name="wire_money", args={"amount": 5})], ["Sent it."]
    )
    return create_app(providers={"m": model}, tools=[wire_money], api_keys=api_keys)
