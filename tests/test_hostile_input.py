"""Odd and hostile input gets a clear 4xx / a proper close code / EventDecodeError — never a 500,
an abnormal close or another exception. Each case is a class of input, generated where it can be."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenwire
from tokenwire.errors import EventDecodeError
from tokenwire.providers import Scripted
from tokenwire.server import ServerConfig, create_app
from wire import serve

KEY = "hostile-key"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(providers={"s": Scripted(["a", "b"])}, api_keys=[KEY], config=ServerConfig(ping_s=0.05))
    with serve(app) as url:
        yield url


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


# -- events.decode raises EventDecodeError and nothing else ---------------------------------------


def test_nested_event_data_decodes_until_it_is_too_deep() -> None:
    def step(depth: int) -> str:
        return '{"type":"step","name":"x","status":"started","detail":' + nested(depth) + "}"

    assert tokenwire.events.decode(step(100)).type == "step"
    for depth in (10_000, 100_000):
        with pytest.raises(EventDecodeError, match="nested too deeply"):
            tokenwire.events.decode(step(depth))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_decode_of_any_text_raises_only_event_decode_error(text: str) -> None:
    for data in (text, '{"type":"text.delta","text":"' + text + '"}'):
        with contextlib.suppress(EventDecodeError):  # anything else fails the test
            tokenwire.events.decode(data)


def test_lone_surrogates_are_a_decode_error_that_quotes_the_input() -> None:
    with pytest.raises(EventDecodeError, match="not valid Unicode"):
        tokenwire.events.decode('{"type":"text.delta","text":"\ud800"}')


# -- the HTTP API -------------------------------------------------------------------------------------


async def post_run(base_url: str, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base_url}/v1/runs", content=content, headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"prompt": "hi", "meta": {"x": ' + nested(1_000) + "}}", "nested too deeply"),
        ('{"prompt": "hi", "meta": {"x": ' + nested(50_000) + "}}", "nested too deeply"),
        ({"prompt": "hi", "max_steps": 0}, "max_steps"),
        ({"prompt": "hi", "max_steps": -3}, "max_steps"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 10**12}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"prompt": "hi", "temperature": -1}, "temperature"),
    ],
)
async def test_meaningless_run_requests_are_422(base_url: str, body: Any, fragment: str) -> None:
    r = await post_run(base_url, body.encode() if isinstance(body, str) else body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize("bad", ["-1", "-5", "1.5", "x", "١٢", "²"])
async def test_a_meaningless_resume_position_is_422_not_410(base_url: str, bad: str) -> None:
    info = (await post_run(base_url, {"prompt": "hi"})).json()
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {info['token']}"}
        tries: list[tuple[dict[str, str], dict[str, str]]] = [({"from_seq": bad}, auth)]
        if bad.isascii():  # a header value must be ASCII on the wire
            tries.append(({}, {**auth, "Last-Event-ID": bad}))
        for params, headers in tries:
            r = await http.get(info["events_url"], params=params, headers=headers)
            assert r.status_code == 422, (bad, r.status_code)
            assert "integer >= 0" in r.json()["error"]["message"]


@pytest.mark.parametrize("token", ["é", "tok\u00e9n.sig", "\u2603.\u2603", "a" * 5000])
async def test_a_forged_or_non_ascii_ticket_is_401(base_url: str, token: str) -> None:
    info = (await post_run(base_url, {"prompt": "hi"})).json()
    async with httpx.AsyncClient() as http:
        r = await http.get(info["events_url"], params={"ticket": token})  # garbage where a URL credential goes
    assert r.status_code == 401


# -- the WebSocket ---------------------------------------------------------------------------------------


async def test_websocket_bad_messages_get_error_replies_and_the_socket_stays_open(base_url: str) -> None:
    url = base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        for text in (
            '{"op": "run", "meta": ' + nested(5_000) + "}",
            nested(100_000),
            '{"op": "subscribe", "stream_id": "x", "token": "t", "from_seq": -1}',
            '{"op": "run", "prompt": "hi", "max_steps": 0}',
        ):
            await ws.send(text)
            reply = json.loads(await ws.recv())
            assert reply["op"] == "error", reply
        await ws.send('{"op": "run", "prompt": "hi"}')  # the socket still works
        assert json.loads(await ws.recv())["op"] == "run"


async def test_one_websocket_serves_any_number_of_sequential_runs(base_url: str) -> None:
    from tokenwire.client import WebSocketClient

    url = base_url.replace("http", "ws") + "/v1/ws"
    async with WebSocketClient(url, api_key=KEY) as ws:
        for i in range(150):  # more than the 64 live subscriptions a socket may hold at once
            events = [e async for e in ws.run(f"run {i}")]
            assert [e.type for e in events] == ["start", "text.delta", "text.delta", "done"], i


async def test_a_socket_over_its_subscription_cap_starts_no_run(base_url: str) -> None:
    from tokenwire.server import session

    # The cap is per socket: fill it with runs that stay live (window 1, never acked), then ask once more.
    url = base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        started = 0
        for _ in range(session.MAX_SUBSCRIPTIONS):
            await ws.send('{"op": "run", "prompt": "hi", "window": 1}')  # window 1: stays live, unacked
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("op") == "run":
                    started += 1
                    break
        await ws.send('{"op": "run", "prompt": "one too many", "window": 1}')
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("op") in ("error", "run"):
                break
        assert reply["op"] == "error" and reply["code"] == "too_many_subscriptions"
    assert started == session.MAX_SUBSCRIPTIONS


# -- capacity limits ------------------------------------------------------------------------------------


async def test_live_run_caps_answer_429_with_retry_after_globally_and_per_key() -> None:
    from tokenwire.providers import Stall

    keys = ["key-one-123456", "key-two-123456"]
    app = create_app(
        providers={"stall": Scripted(["a", Stall()])},
        api_keys=keys,
        config=ServerConfig(max_live_runs=3, max_live_runs_per_key=2, retry_after_s=2),
    )
    with serve(app) as base:
        async with httpx.AsyncClient() as http:

            async def run(key: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {key}"}
                return await http.post(f"{base}/v1/runs", json={"prompt": "x"}, headers=headers)

            first = [await run(keys[0]), await run(keys[0])]
            assert [r.status_code for r in first] == [201, 201]
            r = await run(keys[0])  # over this key's cap
            assert r.status_code == 429 and r.headers["retry-after"] == "2"
            assert "this API key" in r.json()["error"]["message"]
            assert (await run(keys[1])).status_code == 201  # the other key is not affected
            r = await run(keys[1])  # over the global cap
            assert r.status_code == 429 and "the server is generating 3 runs" in r.json()["error"]["message"]
            cancel = first[0].json()
            headers = {"Authorization": f"Bearer {cancel['token']}"}
            await http.post(f"{base}/v1/streams/{cancel['stream_id']}/cancel", headers=headers)
            for _ in range(100):  # the slot frees when the run has ended
                r = await run(keys[1])
                if r.status_code == 201:
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 201


async def test_connection_cap_answers_429_for_sse_and_1013_for_websockets() -> None:
    from tokenwire.providers import Stall

    app = create_app(
        providers={"stall": Scripted(["a", Stall()])},
        api_keys=[KEY],
        config=ServerConfig(max_connections=2, ping_s=0.05),
    )
    with serve(app) as base:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base}/v1/runs", json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"})
            info = r.json()
            async with (
                http.stream("GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}) as a,
                http.stream("GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}) as b,
            ):
                assert a.status_code == b.status_code == 200
                reading = [a.aiter_bytes(), b.aiter_bytes()]  # kept: a dropped iterator closes its stream
                for body in reading:
                    await anext(body)
                server = app.state.tokenwire
                assert server.connections == 2, server.connections
                third = await asyncio.wait_for(
                    http.get(info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}), 10
                )
                assert third.status_code == 429 and "retry-after" in third.headers
                url = base.replace("http", "ws") + "/v1/ws"
                async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
                assert server.connections == 2


# -- a half-open connection --------------------------------------------------------------------------


async def test_the_client_notices_a_silent_connection_and_resumes() -> None:
    """The first connection sends two events, then nothing — no pings, no close (a NAT dropped it).
    The server announced 0.1 s keep-alives, so the client gives up on it after 0.25 s and resumes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from tokenwire.client import Client
    from tokenwire.events import Done, Start, TextDelta, encode

    events = [Start(model="m", stream_id="s", seq=0), TextDelta("a", stream_id="s", seq=1)]
    events += [TextDelta("b", stream_id="s", seq=2), Done(stream_id="s", seq=3)]
    seen_last_ids: list[str | None] = []

    def frame(e: Any) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (e.seq, e.type.encode(), encode(e))

    async def stream(request: Request) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        seen_last_ids.append(last)
        start = 0 if last is None else int(last) + 1

        async def body() -> Any:
            if last is None:
                for e in events[:2]:
                    yield frame(e)
                await asyncio.sleep(3600)  # silent for good, the socket still open
            for e in events[start:]:
                yield frame(e)

        return StreamingResponse(body(), media_type="text/event-stream", headers={"x-tokenwire-ping-s": "0.1"})

    app = Starlette(routes=[Route("/v1/streams/{sid}/events", stream)])
    with serve(app) as base:
        async with Client(base, idle_timeout_s=60) as client:
            got = [e async for e in client.subscribe("s", "token")]
            assert client.reconnects == 1
    assert [(e.type, e.seq) for e in got] == [("start", 0), ("text.delta", 1), ("text.delta", 2), ("done", 3)]
    assert seen_last_ids == [None, "1"]


async def test_keep_alives_keep_a_quiet_stream_connected(base_url: str) -> None:
    """A run that is thinking (no events for 20 keep-alive intervals) is not mistaken for a dead connection."""
    from tokenwire.client import Client
    from tokenwire.providers import Stall

    app = create_app(providers={"think": Scripted(["a", Stall()])}, api_keys=[KEY], config=ServerConfig(ping_s=0.02))
    with serve(app) as base:
        async with Client(base, api_key=KEY) as client:
            info = await client.create_run("hi")
            seen: list[str] = []

            async def read() -> None:
                async for event in client.subscribe(info.stream_id, info.read_token):
                    seen.append(event.type)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.4)
            assert seen == ["start", "text.delta"] and client.reconnects == 0
            await client.cancel(info.stream_id, info.token)
            await asyncio.wait_for(reader, 10)
            assert seen[-1] == "done" and client.reconnects == 0


# -- the other ecosystems' endpoints: a 4xx in OpenAI's error shape, never a 500 ----------------------

_UI = {"id": "c", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
_AGUI = {"threadId": "t", "runId": "r", "messages": [{"id": "u", "role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/chat", b"{", 400),
        ("/api/chat", b"[]", 400),
        ("/api/chat", json.dumps({**_UI, "messages": []}).encode(), 400),
        ("/api/chat", json.dumps({**_UI, "messages": [{"role": "wizard", "parts": []}]}).encode(), 400),
        ("/api/chat", json.dumps({**_UI, "tools": [{"description": "no name"}]}).encode(), 400),
        ("/api/chat", json.dumps({**_UI, "messages": [{"role": "user", "parts": "x"}]}).encode(), 400),
        ("/api/chat", nested(100_000).encode(), 400),
        ("/agui", b"{", 400),
        ("/agui", json.dumps({**_AGUI, "messages": []}).encode(), 400),
        ("/agui", json.dumps({**_AGUI, "messages": [{"role": "tool", "content": 3}]}).encode(), 400),
        ("/agui", json.dumps({"threadId": "t"}).encode(), 400),
        ("/agui", b"x" * 3_000_000, 413),
    ],
)
async def test_malformed_ui_chat_and_agui_requests_are_4xx_in_openai_s_shape(
    base_url: str, path: str, body: bytes, status: int
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post(path, content=body, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == status, (path, body[:80], r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert (await c.post(path, content=json.dumps(_UI if path == "/api/chat" else _AGUI))).status_code == 401


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool-x", "reasoning", 3])},
    optional={"text": _json, "state": st.sampled_from(["output-available", "output-error", None]), "toolCallId": _json},
)
_ui_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", None])},
    optional={"id": _json, "parts": st.lists(_part, max_size=3) | _json},
)
_agui_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "reasoning", "developer", 7])},
    optional={"id": _json, "content": _json, "toolCalls": _json, "toolCallId": _json},
)


@settings(max_examples=120, deadline=None)
@given(
    ui=st.fixed_dictionaries({"id": st.text(max_size=4) | _json, "messages": st.lists(_ui_message, max_size=3)}),
    agui=st.fixed_dictionaries(
        {"threadId": st.just("t"), "runId": st.just("r"), "messages": st.lists(_agui_message, max_size=3)},
        optional={"tools": _json},
    ),
)
def test_generated_ui_chat_and_agui_bodies_never_get_a_5xx(base_url: str, ui: Any, agui: Any) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base_url) as c:
        for path, body in (("/api/chat", ui), ("/agui", agui)):
            r = c.post(path, json=body, headers=headers)
            assert r.status_code < 500, (path, body, r.text)


def test_an_ai_sdk_chat_belongs_to_the_key_that_started_it() -> None:
    """Chat ids are the client's choice: another key's resume and stop see no chat (204), and its
    own chat of the same id is a different chat."""
    from tokenwire.log import MemoryLog
    from tokenwire.providers import Stall

    mine, theirs = "chat-owner-key-1", "chat-other-key-2"
    app = create_app(providers={"s": Scripted(["partial", Stall()])}, api_keys=[mine, theirs], log=MemoryLog())
    body = {"id": "shared-id", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
    with serve(app) as url, httpx.Client(base_url=url) as http:
        with http.stream("POST", "/api/chat", json=body, headers={"Authorization": f"Bearer {mine}"}) as r:
            for line in r.iter_lines():
                if "text-delta" in line:
                    break
        other = {"Authorization": f"Bearer {theirs}"}
        assert http.get("/api/chat/shared-id/stream", headers=other).status_code == 204
        assert http.delete("/api/chat/shared-id/stream", headers=other).status_code == 204
        (run,) = [r for r in app.state.tokenwire.runs.live_runs()]
        assert not run.finished  # the other key could not stop it
        owner = {"Authorization": f"Bearer {mine}"}
        with http.stream("GET", "/api/chat/shared-id/stream", headers=owner) as resumed:
            assert resumed.status_code == 200
        assert http.delete("/api/chat/shared-id/stream", headers=owner).status_code == 204
