"""The server over real loopback connections: SSE framing and resume, auth, limits, WebSocket,
fan-out and shutdown — with httpx-sse as an independent SSE parser and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from httpx_sse import aconnect_sse

import tokenwire
from tokenwire.client import Client, SyncClient, WebSocketClient
from tokenwire.errors import Forbidden, ModelNotFound, Unauthorized
from tokenwire.events import Event, ToolCall
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from tokenwire.testing import assert_transcript
from wire import FlakyTransport, serve, wait_for

KEY = "test-key"
WORDS = [f"w{i} " for i in range(30)]


@tokenwire.tool(client_side=True)
def pick_color() -> str:
    """The user picks a color."""
    raise AssertionError("client-side")


def make_app(log: Any = None, **config: Any) -> Any:
    return create_app(
        log=log,
        providers={
            "steady": Scripted(WORDS, interval_s=0.01),
            "fast": Scripted(WORDS),
            "stall": Scripted(["a", Stall()]),
            "picker": Scripted.turns([ToolCall(call_id="c1", name="pick_color", args={})], ["Nice color."]),
        },
        default_provider="steady",
        tools=[pick_color],
        api_keys=[KEY],
        config=ServerConfig(**{"ping_s": 0.05, "shutdown_grace_s": 0.2, **config}),
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(make_app()) as url:
        yield url


async def create(http: httpx.AsyncClient, base_url: str, body: dict[str, Any], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await http.post(f"{base_url}/v1/runs", json=body, headers=headers)


async def test_sse_framing_with_an_independent_parser(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        info = (await create(http, base_url, {"prompt": "hi", "provider": "steady", "meta": {"user": "u1"}})).json()
        assert set(info) == {"stream_id", "token", "read_token", "events_url"}
        raw = b""
        events = []
        async with http.stream(
            "GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            async for chunk in r.aiter_bytes():
                raw += chunk
        assert b"\r" not in raw and raw.startswith(b"retry: 2000\n")
        async with aconnect_sse(
            http, "GET", info["events_url"], headers={"Authorization": f"Bearer {info['token']}"}
        ) as source:
            async for sse in source.aiter_sse():
                assert sse.data, "no empty events (keep-alives must not dispatch)"
                event = tokenwire.events.decode(sse.data)
                assert sse.id == str(event.seq) and sse.event == event.type
                events.append(event)
    assert_transcript(events, [{"type": "start", "meta": {"user": "u1"}}, *["text.delta"] * 30, "done"])
    assert [e.seq for e in events] == list(range(32))


async def test_resume_with_last_event_id_and_from_seq(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        info = (await create(http, base_url, {"prompt": "hi", "provider": "fast"})).json()
        headers = {"Authorization": f"Bearer {info['token']}", "Last-Event-ID": "9"}
        async with aconnect_sse(http, "GET", info["events_url"], headers=headers) as source:
            seqs = [int(s.id) async for s in source.aiter_sse()]
        assert seqs == list(range(10, 32))
        async with aconnect_sse(
            http, "GET", info["events_url"] + "?from_seq=30", headers={"Authorization": f"Bearer {info['token']}"}
        ) as source:
            assert [int(s.id) async for s in source.aiter_sse()] == [30, 31]


async def test_keepalive_is_a_comment_without_a_blank_line(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        info = (
            await create(http, base_url, {"prompt": "hi", "provider": "stall", "limits": {"max_duration_s": 0.3}})
        ).json()
        raw = b""
        auth = {"Authorization": f"Bearer {info['token']}"}
        async with http.stream("GET", info["events_url"], headers=auth) as r:
            async for chunk in r.aiter_bytes():
                raw += chunk
    assert b": ping\n" in raw and b": ping\n\n" not in raw
    assert raw.rstrip().endswith(b"}") and b"event: error" in raw  # the max_duration limit's terminal


async def test_client_resumes_across_forced_disconnects_without_loss_or_duplicates(base_url: str) -> None:
    flaky = FlakyTransport(after_chunks=4)
    async with Client(
        base_url, api_key=KEY, http_client=httpx.AsyncClient(transport=flaky), max_backoff_s=0.05
    ) as client:
        events = [e async for e in client.run("hi", provider="steady")]
    assert flaky.drops >= 3 and client.reconnects >= 3
    assert [e.seq for e in events] == list(range(32))
    assert "".join(getattr(e, "text", "") for e in events) == "".join(WORDS)


async def test_two_hundred_concurrent_subscribers_see_the_same_stream(base_url: str) -> None:
    async with Client(
        base_url, api_key=KEY, http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=300))
    ) as client:
        info = await client.create_run("hi", provider="steady")

        async def one() -> list[int]:
            return [e.seq async for e in client.subscribe(info.stream_id, info.read_token)]

        results = await asyncio.gather(*(one() for _ in range(200)))
    assert all(r == list(range(32)) for r in results), [str(r) for r in results if r != list(range(32))][:3]


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("wrong", 401)],
)
async def test_creating_runs_needs_the_api_key(base_url: str, key: str | None, status: int) -> None:
    async with httpx.AsyncClient() as http:
        r = await create(http, base_url, {"prompt": "hi"}, key=key)
    assert r.status_code == status and r.json()["error"]["code"] == "unauthorized"


async def test_stream_token_matrix(base_url: str) -> None:
    async with httpx.AsyncClient() as http, Client(base_url, api_key=KEY) as client:
        a = await client.create_run("hi", provider="fast")
        b = await client.create_run("hi", provider="fast")
        events = f"{base_url}/v1/streams/{a.stream_id}/events"

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert (await http.get(events)).status_code == 401
        assert (await http.get(events, headers=bearer("garbage.sig"))).status_code == 401
        forged = a.token[:-3] + ("AAA" if not a.token.endswith("AAA") else "BBB")
        assert (await http.get(events, headers=bearer(forged))).status_code == 401
        r = await http.get(events, headers=bearer(b.token))
        assert r.status_code == 403 and "is for stream" in r.json()["error"]["message"]
        r = await http.post(
            f"{base_url}/v1/streams/{a.stream_id}/cancel", headers={"Authorization": f"Bearer {a.read_token}"}
        )
        assert r.status_code == 403 and "does not allow 'cancel'" in r.json()["error"]["message"]
        assert (await http.get(f"{base_url}/v1/streams/nope/events", headers=bearer(a.token))).status_code == 404
        with pytest.raises(Forbidden):
            [e async for e in client.subscribe(a.stream_id, b.token)]


async def test_expired_tokens_and_evicted_seqs() -> None:
    with serve(make_app(token_ttl_s=0.2, max_events=8)) as url:
        async with httpx.AsyncClient() as http, Client(url, api_key=KEY) as client:
            info = await client.create_run("hi", provider="fast")
            await asyncio.sleep(0.3)
            auth = {"Authorization": f"Bearer {info.token}"}
            r = await http.get(f"{url}/v1/streams/{info.stream_id}/events", headers=auth)
            assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
            fresh = await client.create_run("hi", provider="fast")
            await asyncio.sleep(0.05)
            r = await http.get(
                f"{url}/v1/streams/{fresh.stream_id}/events",
                params={"from_seq": 0},
                headers={"Authorization": f"Bearer {fresh.token}"},
            )
            assert r.status_code == 410 and r.json()["error"]["code"] == "gone"
            with pytest.raises(tokenwire.errors.SeqEvicted) as evicted:
                [e async for e in client.subscribe(fresh.stream_id, fresh.token)]
            assert evicted.value.first_available == 24  # 32 events, the last 8 retained
            with pytest.raises(Unauthorized):
                [e async for e in client.subscribe(info.stream_id, info.token)]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "invalid run request: not JSON"),
        (b"", 400, "the body is empty"),
        (json.dumps({"prompt": "hi", "colour": 1}).encode(), 422, "unknown field `colour`"),
        (json.dumps({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}).encode(), 422, "exactly one of"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}] * 300}).encode(),
            422,
            "more than this server accepts",
        ),
        (json.dumps({"prompt": "hi", "provider": "gpt-9"}).encode(), 422, "unknown provider 'gpt-9'"),
        (json.dumps({"prompt": "hi", "model": "gpt-4o"}).encode(), 404, "answers with 'scripted' and cannot switch"),
        (json.dumps({"prompt": "hi", "tools": ["rm_rf"]}).encode(), 422, "unknown tools"),
        (json.dumps({"prompt": "x" * 2_000_000}).encode(), 413, "body"),
    ],
)
async def test_bad_run_requests_get_clear_json_errors(base_url: str, body: bytes, status: int, fragment: str) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base_url}/v1/runs", content=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status
    assert fragment in r.json()["error"]["message"]


async def test_a_run_may_name_the_model_its_provider_answers_with_or_any_when_the_provider_chooses(
    base_url: str,
) -> None:
    async with httpx.AsyncClient() as http:
        for model in ("scripted", "fast"):  # the provider's model, or the provider's own name
            same = await create(http, base_url, {"prompt": "hi", "provider": "fast", "model": model})
            assert same.status_code == 201, same.text
    async with Client(base_url, api_key=KEY) as client:
        with pytest.raises(ModelNotFound, match="cannot switch to 'gpt-4o'"):
            await client.create_run("hi", model="gpt-4o")
    chooser = Scripted(["ok"])
    chooser.chooses_model = True  # type: ignore[misc]  # the default, as OpenAIChat, Anthropic, OpenAIResponses
    with serve(create_app(providers={"cloud": chooser}, api_keys=[KEY])) as url:
        async with httpx.AsyncClient() as http:
            assert (await create(http, url, {"prompt": "hi", "model": "gpt-4o"})).status_code == 201


async def test_status_and_cancel(base_url: str) -> None:
    async with Client(base_url, api_key=KEY) as client:
        info = await client.create_run("hi", provider="stall")
        assert (await client.status(info.stream_id, info.token))["status"] == "running"
        await client.cancel(info.stream_id, info.token)
        events = [e async for e in client.subscribe(info.stream_id, info.token)]
        assert_transcript(events, ["start", "text.delta", {"type": "done", "finish_reason": "cancelled"}])
        status = await client.status(info.stream_id, info.read_token)
        assert status["status"] == "finished" and status["result"]["text"] == "a"


async def test_generation_does_not_depend_on_subscribers(base_url: str) -> None:
    async with Client(base_url, api_key=KEY) as client:
        info = await client.create_run("hi", provider="steady")
        first = []
        async for e in client.subscribe(info.stream_id, info.token):
            first.append(e)
            if len(first) == 3:
                break  # the subscriber goes away
        await asyncio.sleep(0.5)
        status = await client.status(info.stream_id, info.token)
        assert status["status"] == "finished" and status["result"]["text"] == "".join(WORDS)


def test_sync_client(base_url: str) -> None:
    with SyncClient(base_url, api_key=KEY) as client:
        events = list(client.run("hi", provider="fast"))
        assert events[-1].type == "done" and len(events) == 32


# -- WebSocket ------------------------------------------------------------------------------------------


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/ws"


async def test_websocket_run_with_client(base_url: str) -> None:
    async with WebSocketClient(ws_url(base_url), api_key=KEY) as ws:
        events = [e async for e in ws.run("hi", provider="fast")]
    assert_transcript(events, ["start", *["text.delta"] * 30, "done"])


async def test_websocket_bad_messages_get_error_replies_and_the_socket_stays(base_url: str) -> None:
    # max_queue=None: this test leaves events unread, and a bounded client queue stops reading
    # the socket (then the close handshake waits for the client's 10 s timeout).
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(ws_url(base_url), additional_headers=headers, max_queue=None) as ws:
        for bad, code in [
            ("{oops", "bad_json"),
            ('{"op": "dance"}', "unknown_op"),
            ("[1]", "bad_message"),
            ('{"op": "subscribe", "stream_id": "nope", "token": "x"}', "not_found"),
            ('{"op": "run", "prompt": "hi", "colour": 1}', "invalid_request"),
        ]:
            await ws.send(bad)
            reply = json.loads(await ws.recv())
            assert reply["op"] == "error" and reply["code"] == code, reply
        await ws.send(json.dumps({"op": "run", "prompt": "hi", "provider": "fast", "id": 7}))
        reply = json.loads(await ws.recv())
        assert reply["op"] == "run" and reply["id"] == 7
        first = json.loads(await ws.recv())
        assert first["type"] == "start" and first["stream_id"] == reply["stream_id"]


@pytest.mark.parametrize(
    ("send", "code"),
    [(b"\x00binary", 1008), ("x" * 1_100_000, 1009)],
)
async def test_websocket_policy_and_size_violations_close_the_socket(base_url: str, send: Any, code: int) -> None:
    async with websockets.connect(ws_url(base_url), max_size=None) as ws:
        await ws.send(send)
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == code


async def test_websocket_run_without_api_key_closes_with_1008(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "hi"}))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008


async def test_websocket_credit_window_limits_unacknowledged_events(base_url: str) -> None:
    async with Client(base_url, api_key=KEY) as client:
        info = await client.create_run("hi", provider="fast")
    async with websockets.connect(ws_url(base_url)) as ws:
        await ws.send(json.dumps({"op": "subscribe", "stream_id": info.stream_id, "token": info.token, "window": 5}))
        got = [json.loads(await ws.recv()) for _ in range(5)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)  # the window is full: nothing more until an ack
        await ws.send(json.dumps({"op": "ack", "stream_id": info.stream_id, "seq": got[-1]["seq"]}))
        more = [json.loads(await ws.recv()) for _ in range(5)]
        assert [e["seq"] for e in got + more] == list(range(10))


async def test_websocket_cancel_and_client_side_tool_result(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "pick", "provider": "picker", "tools": ["pick_color"]}))
        run = json.loads(await ws.recv())
        seen: list[dict[str, Any]] = []
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("op"):
                assert msg["op"] == "tool_result" and msg["status"] == "accepted"
                continue
            seen.append(msg)
            if msg["type"] == "step" and msg["name"] == "client_tool" and msg["status"] == "started":
                await ws.send(
                    json.dumps(
                        {
                            "op": "tool_result",
                            "stream_id": run["stream_id"],
                            "token": run["token"],
                            "call_id": "c1",
                            "result": "teal",
                        }
                    )
                )
            if msg["type"] in ("done", "error"):
                break
        results = [m for m in seen if m["type"] == "tool_result"]
        assert results[0]["result"] == "teal" and seen[-1]["type"] == "done"

        await ws.send(json.dumps({"op": "run", "prompt": "x", "provider": "stall"}))
        run = json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "cancel", "stream_id": run["stream_id"], "token": run["token"]}))
        types = []
        while not types or types[-1] not in ("done", "error"):
            msg = json.loads(await ws.recv())
            if "type" in msg:
                types.append(msg["type"])
        assert types[-1] == "done"


async def test_shutdown_ends_running_streams_with_a_transport_error() -> None:
    app = make_app()
    with serve(app) as url:
        async with Client(url, api_key=KEY) as client:
            info = await client.create_run("hi", provider="stall")
            collected: list[Event] = []

            async def read() -> None:
                async for e in client.subscribe(info.stream_id, info.token):
                    collected.append(e)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            await app.state.tokenwire.runs.shutdown(grace_s=0.2)
            await asyncio.wait_for(reader, 5)
            assert time.monotonic() - t0 < 2
            r = await client.http.post(
                f"{url}/v1/runs", json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"}
            )
            assert r.status_code == 503
    assert_transcript(
        collected,
        ["start", "text.delta", {"type": "error", "source": "transport", "code": "shutdown", "retryable": True}],
    )


class Closable(Scripted):
    """A real scripted provider that also owns a resource, like ``LlamaCpp`` (a model and thread)."""

    shut = 0

    def close(self) -> None:
        self.shut += 1


async def test_shutdown_closes_the_providers_the_server_made_and_only_those() -> None:
    made: list[Closable] = []

    def factory() -> Closable:
        made.append(Closable(["made"]))
        return made[-1]

    given = Closable(["given"])
    app = create_app(providers={"made": factory, "given": given}, api_keys=[KEY])
    with serve(app, lifespan="on") as url:
        async with Client(url, api_key=KEY) as client:
            for name in ("made", "given", "made"):
                info = await client.create_run("hi", provider=name)
                events = [e async for e in client.subscribe(info.stream_id, info.token)]
                assert_transcript(events, ["start", {"type": "text.delta", "text": name}, "done"])
        assert len(made) == 1 and made[0].shut == 0
    assert made[0].shut == 1
    assert given.shut == 0  # the caller's instance: the caller closes it


def test_tokenwire_serve_drains_on_sigterm(tmp_path: Any) -> None:
    """The real command: SIGTERM mid-stream → the stream ends with error(shutdown), then exit."""
    import signal
    import subprocess
    import sys

    from wire import free_port

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    cmd = [
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--provider",
        "scripted",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--shutdown-grace",
        "0.3",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        info = httpx.post(
            f"{base}/v1/runs", json={"prompt": " ".join(["word"] * 500)}, headers={"Authorization": f"Bearer {KEY}"}
        ).json()
        events = []
        auth = {"Authorization": f"Bearer {info['token']}"}
        with httpx.stream("GET", info["events_url"], headers=auth, timeout=10) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(tokenwire.events.decode(line[6:]))
                    if len(events) == 5:
                        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the captured signal once its graceful shutdown is done.
        assert proc.wait(10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert_transcript(events, ["start", ..., {"type": "error", "source": "transport", "code": "shutdown"}])
    assert 5 <= len(events) < 100


async def test_a_reader_too_far_behind_is_disconnected_not_buffered() -> None:
    """The SSE generator ends when its reader lags more than max_lag_events behind the head.

    On a memory log of its own: the test appends to the log directly and reads it at exact points
    (test_redis_log covers the lag check of the Redis backend's shared tail)."""
    from tokenwire.events import TextDelta
    from tokenwire.log import MemoryLog
    from tokenwire.server.streaming import log_frames

    app = make_app(log=MemoryLog(), max_lag_events=10)
    server = app.state.tokenwire
    writer = server.log.open("s")  # a stream in the server's log, read as any SSE reader reads it
    for i in range(3):
        writer.append(TextDelta(f"t{i}", stream_id="s", seq=i))
    frames = log_frames(server, "s", 0, prelude=b"retry: 2000\n")
    assert (await anext(frames)).startswith(b"retry:")
    assert (await anext(frames)).count(b"\n\n") == 3  # the three ready frames in one write
    for i in range(3, 30):  # the reader is slow: 27 more events arrive before it reads again
        writer.append(TextDelta(f"t{i}", stream_id="s", seq=i))
    with pytest.raises(StopAsyncIteration):
        await anext(frames)  # 27 > 10 behind: disconnected instead of buffering; the client resumes


async def test_no_lasting_credential_is_accepted_in_a_url(base_url: str) -> None:
    """URLs reach access logs (the host's, not only ours): ?token= and ?api_key= are refused."""
    async with httpx.AsyncClient() as http, Client(base_url, api_key=KEY) as client:
        info = await client.create_run("hi", provider="fast")
        for params in ({"token": info.read_token}, {"api_key": KEY}):
            r = await http.get(f"{base_url}/v1/streams/{info.stream_id}/events", params=params)
            assert r.status_code == 401 and "refused in URLs" in r.json()["error"]["message"]
    url = base_url.replace("http", "ws") + f"/v1/ws?api_key={KEY}"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_ticket_reads_its_stream_once_and_never_cancels(base_url: str) -> None:
    async with httpx.AsyncClient() as http, Client(base_url, api_key=KEY) as client:
        a = await client.create_run("hi", provider="fast")
        b = await client.create_run("hi", provider="fast")

        async def ticket(credential: str) -> str:
            r = await http.post(f"{base_url}/v1/tickets", headers={"Authorization": f"Bearer {credential}"})
            assert r.status_code == 201 and r.json()["expires_in"] == 30
            return str(r.json()["ticket"])

        events = f"{base_url}/v1/streams/{a.stream_id}/events"
        t = await ticket(a.token)  # even from the token that can cancel, a ticket only reads
        async with aconnect_sse(http, "GET", events, params={"ticket": t}) as source:
            types = [sse.event async for sse in source.aiter_sse()]
        assert types[0] == "start" and types[-1] == "done"
        again = await http.get(events, params={"ticket": t})
        assert again.status_code == 401 and "already used" in again.json()["error"]["message"]
        r = await http.post(f"{base_url}/v1/streams/{a.stream_id}/cancel", params={"ticket": await ticket(a.token)})
        assert r.status_code == 403 and "does not allow 'cancel'" in r.json()["error"]["message"]
        r = await http.get(f"{base_url}/v1/streams/{b.stream_id}/events", params={"ticket": await ticket(a.token)})
        assert r.status_code == 403 and "is for stream" in r.json()["error"]["message"]
        assert (await http.post(f"{base_url}/v1/tickets")).status_code == 401
        r = await http.post(f"{base_url}/v1/tickets", headers={"Authorization": "Bearer forged.sig"})
        assert r.status_code == 401


async def test_a_browser_websocket_runs_with_a_ticket_for_its_key(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {KEY}"}
        key_ticket = (await http.post(f"{base_url}/v1/tickets", headers=auth)).json()["ticket"]
        run = (await http.post(f"{base_url}/v1/runs", json={"prompt": "x", "provider": "fast"}, headers=auth)).json()
        read = {"Authorization": f"Bearer {run['read_token']}"}
        stream_ticket = (await http.post(f"{base_url}/v1/tickets", headers=read)).json()["ticket"]
    ws_url = base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(f"{ws_url}?ticket={key_ticket}") as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "hi", "provider": "fast"}))
        reply = json.loads(await ws.recv())
        assert reply["op"] == "run" and reply["stream_id"]
    async with websockets.connect(f"{ws_url}?ticket={key_ticket}") as ws:  # used up
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(f"{ws_url}?ticket={stream_ticket}") as ws:  # for reading, not a connection
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and "not for a connection" in closed.value.rcvd.reason


async def test_a_reader_that_stops_reading_is_cut_not_buffered_under_a_plain_uvicorn() -> None:
    """#30 item 5: mounted under plain uvicorn (no listen()), the app bounds each connection's
    kernel send buffer and cuts a write that makes no progress for write_timeout_s, also when
    the stream has ended (reading its history is never 'lagging')."""
    import socket

    app = create_app(
        providers={"big": Scripted(["x" * 4000] * 2000)},  # 8 MB: far more than any socket buffer
        api_keys=[KEY],
        config=ServerConfig(send_buffer=16_384, write_timeout_s=1.0),
    )
    service = app.state.tokenwire
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            info = (await create(http, url, {"prompt": "x"})).json()
        run = service.runs.get(info["stream_id"])
        await wait_for(lambda: run.finished, within=30)  # finished: the reader below only reads history
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client's side holds little too
        port = int(url.rsplit(":", 1)[1])
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        path = info["events_url"].split(str(port), 1)[1]
        request = f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {info['read_token']}\r\n\r\n"
        sock.sendall(request.encode())
        try:
            await wait_for(lambda: service.connections == 1, within=10)
            await wait_for(lambda: service.connections == 0, within=30)  # cut: it read nothing
            sock.setblocking(False)
            received = 0
            with contextlib.suppress(BlockingIOError, ConnectionError):
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            assert received < 1_000_000  # far from the 8 MB stream: the server stopped writing
        finally:
            sock.close()


def test_a_fixed_model_is_named_by_its_model_its_provider_or_its_file() -> None:
    """check_model, on a provider with a model file (as LlamaCpp): what `serve --model` was given
    is accepted too; a provider that picks by name (the default) takes any."""
    from pathlib import Path

    from tokenwire.server.admission import check_model

    local = Scripted(["x"], model="qwen")
    local.model_path = Path("/models/qwen.gguf")  # type: ignore[attr-defined]
    for asked in (None, "", "qwen", "llama", "/models/qwen.gguf", "qwen.gguf"):
        check_model(asked, "llama", local, ["llama"])
    with pytest.raises(ModelNotFound, match=r"answers with 'qwen' and cannot switch to 'gpt-4o'.*: llama, cloud"):
        check_model("gpt-4o", "llama", local, ["llama", "cloud"])

    class Cloud:
        model = "gpt-4o-mini"

    check_model("gpt-4o", "cloud", Cloud(), ["cloud"])  # type: ignore[arg-type]
