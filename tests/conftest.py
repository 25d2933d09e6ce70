"""Shared helpers for the test suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

pytest_plugins = ["pytester"]


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
