"""Serving a model to several users: ready means ready, defaults and ceilings, abandoned runs.

Real servers (uvicorn on a free loopback port, the app's lifespan on) and real clients; the
provider that never ends (``Stall``) stands for a model generating to its context limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tokenwire.client import Client, WebSocketClient
from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from tokenwire.testing import assert_transcript
from wire import free_port, serve, wait_for

KEY = "serving-key-123456"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Loadable(Scripted):
    """A scripted model with a model to load, as LlamaCpp has (Scripted records its requests)."""

    def __init__(self, items: list[Any]):
        super().__init__(items)
        self.loads = 0

    def load(self) -> None:
        self.loads += 1


def app_with(**config: Any) -> tuple[Any, Loadable]:
    model = Loadable(["Hi"])
    app = create_app(
        providers={"model": model, "endless": Scripted(["a", Stall()])},
        api_keys=[KEY],
        log=MemoryLog(),
        config=ServerConfig(**{"ping_s": 0.05, "shutdown_grace_s": 0.2, **config}),
    )
    return app, model


async def status(http: httpx.AsyncClient, url: str, info: dict[str, str]) -> dict[str, Any]:
    r = await http.get(
        f"{url}/v1/streams/{info['stream_id']}", headers={"Authorization": f"Bearer {info['read_token']}"}
    )
    body: dict[str, Any] = r.json()
    return body


async def create(http: httpx.AsyncClient, url: str, **body: Any) -> httpx.Response:
    return await http.post(f"{url}/v1/runs", json={"prompt": "x", **body}, headers=AUTH)


# -- ready means ready ---------------------------------------------------------------------------------


async def test_the_default_model_is_loaded_at_start_up_and_readyz_says_so() -> None:
    app, model = app_with()
    with serve(app, lifespan="on") as url:
        assert model.loads == 1 and not model.requests  # loaded before any request
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/healthz")).json() == {"status": "ok"}
            r = await http.get(f"{url}/readyz")
            assert r.status_code == 200
            assert r.json() == {"status": "ready", "checks": {"provider": "ok", "log": "ok", "runs": "ok"}}


async def test_readyz_is_503_while_the_model_loads_and_when_the_log_is_unreachable() -> None:
    from tokenwire.log.redis import RedisLog

    dead_log = RedisLog(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    app = create_app(providers={"model": Scripted(["x"])}, api_keys=[KEY], log=dead_log)
    with serve(app) as url:  # lifespan off: nothing was preloaded
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{url}/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["provider"] == "loading" and checks["log"].startswith("unreachable")


# -- defaults and ceilings -----------------------------------------------------------------------------


async def test_runs_get_the_default_max_tokens_and_may_ask_for_less_never_more() -> None:
    app, model = app_with(default_max_tokens=64, max_tokens_ceiling=256)
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            for asked in (None, 16, 256):
                r = await create(http, url, **({} if asked is None else {"max_tokens": asked}))
                assert r.status_code == 201
            r = await create(http, url, max_tokens=257)
            assert r.status_code == 422 and "above this server's ceiling (256)" in r.json()["error"]["message"]
            await wait_for(lambda: len(model.requests) == 3)
    assert [req.max_tokens for req in model.requests] == [64, 16, 256]


async def test_runs_get_the_default_duration_and_a_longer_one_is_refused() -> None:
    app, _ = app_with(default_max_duration_s=0.3, max_duration_ceiling_s=60)
    with serve(app) as url:
        async with httpx.AsyncClient() as http, Client(url, api_key=KEY) as client:
            r = await create(http, url, provider="endless", background=True)
            events = [e async for e in client.subscribe(r.json()["stream_id"], r.json()["read_token"])]
            r = await create(http, url, limits={"max_duration_s": 61})
            assert r.status_code == 422 and "max_duration_s 61 is above" in r.json()["error"]["message"]
        async with WebSocketClient(url.replace("http://", "ws://") + "/v1/ws", api_key=KEY) as ws:
            with pytest.raises(Exception, match="above this server's ceiling"):
                [e async for e in ws.run("x", max_tokens=10**5)]
    assert_transcript(events, ["start", "text.delta", {"type": "error", "code": "timeout", "source": "limit"}])


# -- abandoned runs --------------------------------------------------------------------------------------


async def test_a_run_nobody_reads_is_cancelled_as_abandoned_and_a_background_run_is_not() -> None:
    app, _ = app_with(abandon_after_s=0.3)
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            unread = (await create(http, url, provider="endless")).json()
            background = (await create(http, url, provider="endless", background=True)).json()
            await wait_for(lambda: app.state.tokenwire.runs.get(unread["stream_id"]).finished)
            ended = await status(http, url, unread)
            assert ended["terminal"]["type"] == "done"
            assert (ended["terminal"]["finish_reason"], ended["terminal"]["reason"]) == ("cancelled", "abandoned")
            await asyncio.sleep(1.0)  # over three grace periods
            assert (await status(http, url, background))["status"] == "running"
            r = await http.post(
                f"{url}/v1/streams/{background['stream_id']}/cancel",
                headers={"Authorization": f"Bearer {background['token']}"},
            )
            assert r.status_code == 202


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_a_run_being_read_is_never_abandoned_and_a_reader_may_leave_and_come_back(transport: str) -> None:
    app, _ = app_with(abandon_after_s=0.3)
    runs = app.state.tokenwire.runs
    with serve(app) as url:
        async with httpx.AsyncClient() as http, Client(url, api_key=KEY) as client:
            info = (await create(http, url, provider="endless")).json()
            sid = info["stream_id"]

            async def read_for(seconds: float) -> list[str]:
                types: list[str] = []

                async def read() -> None:
                    if transport == "sse":
                        async for e in client.subscribe(sid, info["read_token"]):
                            types.append(e.type)
                    else:
                        async with WebSocketClient(url.replace("http://", "ws://") + "/v1/ws", api_key=KEY) as ws:
                            async for e in ws.subscribe(sid, info["read_token"]):
                                types.append(e.type)

                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(read(), seconds)
                return types

            seen = await read_for(1.0)  # three grace periods, read all along: still generating
            assert seen == ["start", "text.delta"] and not runs.get(sid).finished
            await asyncio.sleep(0.1)  # the reader left; it comes back within the grace period
            assert (await read_for(0.5)) == ["start", "text.delta"] and not runs.get(sid).finished
            await wait_for(lambda: runs.get(sid).finished)  # left for good: abandoned
            assert (await status(http, url, info))["terminal"]["reason"] == "abandoned"
