"""Owned tasks (core/tasks.TaskSet) and the sync bridge (core/bridge.Bridge)."""

from __future__ import annotations

import asyncio
import contextlib

from tokenwire.core.bridge import Bridge
from tokenwire.core.tasks import TaskSet


async def test_a_task_set_whose_owner_is_cancelled_while_waiting_cancels_its_tasks() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def owner() -> None:
        async with TaskSet("t") as tasks:
            tasks.start(forever(), name="child")

    task = asyncio.get_running_loop().create_task(owner())
    await started.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "child" and not t.done()]


async def test_a_failing_task_is_logged_and_its_siblings_go_on(caplog: object) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    async with TaskSet("t") as tasks:
        ok = tasks.start(asyncio.sleep(0, "fine"), name="ok")
        tasks.start(boom(), name="boom")
    assert ok.result() == "fine" and len(tasks) == 0
    assert "task boom of t failed" in caplog.text  # type: ignore[attr-defined]


def test_the_bridge_runs_coroutines_from_sync_code_and_closes() -> None:
    bridge = Bridge("test-bridge")
    assert bridge.call(asyncio.sleep, 0, "slept") == "slept"
    assert bridge.submit(asyncio.sleep, 0, 7).result(5) == 7
    bridge.close()
    bridge.close()  # idempotent
