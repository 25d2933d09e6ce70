"""Shared helpers for the test suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

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
