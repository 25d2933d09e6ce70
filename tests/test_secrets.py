"""No secret in any log line, at any level: the real ``tokenwire serve`` process at trace level.

The test issues API keys and stream tokens through every path a client uses (HTTP with bearer
headers and ``?token=``, SSE resume, cancel, WebSocket with ``?api_key=`` and with an
Authorization header, subscribe with tokens) and then scans everything the server printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import websockets

from tokenwire.client import Client
from wire import free_port, wait_http

KEYS = [f"tw-key-{secrets.token_hex(12)}", f"tw-key-{secrets.token_hex(12)}"]


async def exercise(base: str, issued: set[str]) -> None:
    async with Client(base, api_key=KEYS[0]) as client:
        info = await client.create_run("hello", provider="scripted")
        issued |= {info.token, info.read_token}
        [e async for e in client.subscribe(info.stream_id, info.read_token)]
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/v1/runs", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {KEYS[1]}"})
        body = r.json()
        issued |= {body["token"], body["read_token"]}
        async with http.stream("GET", body["events_url"], params={"token": body["token"], "from_seq": 1}) as s:
            async for _ in s.aiter_bytes():
                pass
        await http.get(f"{base}/v1/streams/{body['stream_id']}", params={"token": body["read_token"]})
        await http.post(
            f"{base}/v1/streams/{body['stream_id']}/cancel", headers={"Authorization": f"Bearer {body['token']}"}
        )
        await http.get(f"{base}/v1/streams/{body['stream_id']}/events", params={"token": "forged." + KEYS[0]})
        chat = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.stream(  # the OpenAI-compatible endpoint: the key as a bearer header
            "POST", f"{base}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {KEYS[0]}"}
        ) as s:
            async for _ in s.aiter_bytes():
                pass
        await http.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEYS[1]}"})
        agui = {"threadId": "t", "runId": "r", "messages": [{"id": "u", "role": "user", "content": "hi"}]}
        await http.post(f"{base}/agui", json=agui, headers={"Authorization": f"Bearer {KEYS[0]}"})
        ui = {"id": "chat", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        await http.post(f"{base}/api/chat", json=ui, headers={"Authorization": f"Bearer {KEYS[1]}"})
        await http.get(f"{base}/api/chat/chat/stream", headers={"Authorization": f"Bearer {KEYS[0]}"})
    ws_url = base.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(f"{ws_url}?api_key={KEYS[0]}") as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "over ws"}))
        reply = json.loads(await ws.recv())
        issued |= {reply["token"], reply["read_token"]}
        await ws.send(json.dumps({"op": "subscribe", "stream_id": reply["stream_id"], "token": reply["read_token"]}))
        await ws.recv()
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEYS[1]}"}) as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "again"}))
        reply = json.loads(await ws.recv())
        issued |= {reply["token"], reply["read_token"]}


def test_the_server_at_trace_level_prints_no_key_and_no_token(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TOKENWIRE_SECRET": secrets.token_hex(32), "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), "--provider", "scripted"]
    cmd += ["--log-level", "trace", "--shutdown-grace", "0.5"]
    for key in KEYS:
        cmd += ["--api-key", key]
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/", proc)
            issued: set[str] = set()
            asyncio.run(exercise(base, issued))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    printed = out.read_text() + err.read_text()
    assert "WebSocket" in printed and "GET /v1/streams/" in printed, "trace/access output must exist to be scanned"
    assert "[redacted]" in printed
    assert len(issued) >= 8
    for secret in [*KEYS, *issued]:
        assert secret not in printed, f"a secret appears in the server's output: {secret[:12]}…"
        # the token's signature alone is a credential too
        assert secret.rpartition(".")[2] not in printed
