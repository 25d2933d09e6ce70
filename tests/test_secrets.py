"""No secret in any log line, at any level: the real ``tokenwire serve`` process at trace level.

The test issues API keys and stream tokens through every path a client uses (HTTP with bearer
headers, single-use tickets in URLs and a refused ``?token=``, SSE resume, cancel, WebSocket with
``?ticket=`` and with an Authorization header, subscribe with tokens) and then scans everything the
server printed.
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
        async with http.stream(
            "GET", body["events_url"], params={"from_seq": 1}, headers={"Authorization": f"Bearer {body['token']}"}
        ) as s:
            async for _ in s.aiter_bytes():
                pass
        await http.get(
            f"{base}/v1/streams/{body['stream_id']}", headers={"Authorization": f"Bearer {body['read_token']}"}
        )
        await http.post(
            f"{base}/v1/streams/{body['stream_id']}/cancel", headers={"Authorization": f"Bearer {body['token']}"}
        )
        await http.get(f"{base}/v1/streams/{body['stream_id']}/events", params={"ticket": "forged." + KEYS[0]})
        for credential in (body["token"], body["read_token"], KEYS[0]):  # answers: token, read token, a key
            for what, answer in (("approvals", {"approved": True}), ("tool_results", {"result": "teal"})):
                await http.post(
                    f"{base}/v1/streams/{body['stream_id']}/{what}",
                    json={"call_id": "c1", **answer},
                    headers={"Authorization": f"Bearer {credential}"},
                )

        async def read_events() -> None:  # one of several readers of a stream: the fan-out's path
            headers = {"Authorization": f"Bearer {body['read_token']}"}
            async with http.stream("GET", body["events_url"], headers=headers) as s:
                async for _ in s.aiter_bytes():
                    pass

        await asyncio.gather(*(read_events() for _ in range(5)))
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
        answered = {
            "type": "tool-x",
            "state": "approval-responded",
            "approval": {"id": "s.forged.c1", "approved": True},
        }
        ui["messages"].append({"id": "m", "role": "assistant", "parts": [answered]})  # an answer, refused
        await http.post(f"{base}/api/chat", json=ui, headers={"Authorization": f"Bearer {KEYS[1]}"})
        agui["resume"] = [{"interruptId": "s.forged.c1", "status": "resolved"}]
        await http.post(f"{base}/agui", json=agui, headers={"Authorization": f"Bearer {KEYS[0]}"})
        # the Responses API's background mode (retrieve, resume, cancel), a snapshot join, and
        # many streams on one connection (tokens in the body; the key's own runs, by the key)
        bearer = {"Authorization": f"Bearer {KEYS[0]}"}
        answer = {"model": "scripted", "input": "hi", "background": True}
        rid = (await http.post(f"{base}/v1/responses", json=answer, headers=bearer)).json()["id"]
        params = {"stream": "true", "starting_after": 0}
        async with http.stream("GET", f"{base}/v1/responses/{rid}", params=params, headers=bearer) as s:
            async for _ in s.aiter_bytes():
                pass
        await http.post(f"{base}/v1/responses/{rid}/cancel", headers=bearer)
        read = {"Authorization": f"Bearer {body['read_token']}"}
        await http.get(f"{base}/v1/streams/{body['stream_id']}/events", params={"snapshot": 1}, headers=read)
        many = {"streams": [{"stream_id": body["stream_id"], "token": body["read_token"]}]}
        async with http.stream("POST", f"{base}/v1/events", json=many) as s:
            async for _ in s.aiter_bytes():
                pass
        mine = {"mine": True, "streams": [{"stream_id": info.stream_id}]}
        async with http.stream("POST", f"{base}/v1/events", json=mine, headers=bearer) as s:
            async for chunk in s.aiter_bytes():
                if b"event: done" in chunk:
                    break  # "mine" follows until the client leaves
    ws_url = base.replace("http", "ws") + "/v1/ws"
    async with httpx.AsyncClient() as http:  # what a browser does: single-use tickets in URLs
        r = await http.post(f"{base}/v1/tickets", headers={"Authorization": f"Bearer {KEYS[0]}"})
        key_ticket = r.json()["ticket"]
        r = await http.post(f"{base}/v1/tickets", headers={"Authorization": f"Bearer {body['read_token']}"})
        read_ticket = r.json()["ticket"]
        issued |= {key_ticket, read_ticket}
        await http.get(f"{base}/v1/streams/{body['stream_id']}/events", params={"ticket": read_ticket})
        await http.get(f"{base}/v1/streams/{body['stream_id']}/events", params={"token": body["read_token"]})  # 401
    async with websockets.connect(f"{ws_url}?ticket={key_ticket}") as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "over ws"}))
        reply = json.loads(await ws.recv())
        issued |= {reply["token"], reply["read_token"]}
        await ws.send(json.dumps({"op": "subscribe", "stream_id": reply["stream_id"], "token": reply["read_token"]}))
        await ws.recv()
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEYS[1]}"}) as ws:
        await ws.send(json.dumps({"op": "run", "prompt": "again"}))
        reply = json.loads(await ws.recv())
        issued |= {reply["token"], reply["read_token"]}
        approve = {"op": "approve", "stream_id": reply["stream_id"], "call_id": "c1", "approved": True}
        await ws.send(json.dumps({**approve, "token": reply["token"]}))


METRICS_TOKEN = f"tw-metrics-{secrets.token_hex(12)}"


def serve_and_exercise(tmp_path: Path, *extra: str) -> tuple[str, set[str]]:
    """A real ``tokenwire serve`` at trace level, exercised through every path; what it printed."""
    port = free_port()
    env = {**os.environ, "TOKENWIRE_SECRET": secrets.token_hex(32), "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), "--provider", "scripted"]
    cmd += ["--log-level", "trace", "--shutdown-grace", "0.5", "--metrics-token", METRICS_TOKEN, *extra]
    for key in KEYS:
        cmd += ["--api-key", key]
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    issued: set[str] = set()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/", proc)
            asyncio.run(exercise(base, issued))
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200 and "tokenwire_runs_total" in scraped.text
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    return out.read_text() + err.read_text(), issued


def assert_no_secret(printed: str, issued: set[str]) -> None:
    assert "WebSocket" in printed and "GET /v1/streams/" in printed, "trace/access output must exist to be scanned"
    assert "[redacted]" in printed
    assert len(issued) >= 8
    for secret in [*KEYS, METRICS_TOKEN, *issued]:
        assert secret not in printed, f"a secret appears in the server's output: {secret[:12]}…"
        # the token's signature alone is a credential too
        assert secret.rpartition(".")[2] not in printed


def test_the_server_at_trace_level_prints_no_key_and_no_token(tmp_path: Path) -> None:
    printed, issued = serve_and_exercise(tmp_path)
    assert_no_secret(printed, issued)


def test_json_log_lines_name_their_stream_and_hold_no_secret(tmp_path: Path) -> None:
    """--log-format json: every line one JSON object; run lines carry the stream id and outcome;
    --redact masks what the operator names (here the prompts' "hi" / "over ws" are left alone)."""
    printed, issued = serve_and_exercise(tmp_path, "--log-format", "json", "--redact", r"tw-key-[0-9a-f]{24}")
    assert_no_secret(printed, issued)
    lines = [json.loads(line) for line in printed.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    started = [line for line in lines if line["message"].startswith("run ") and "started" in line["message"]]
    ended = [line for line in lines if line.get("outcome")]
    assert len(started) >= 6 and len(ended) >= 6
    assert {line["stream_id"] for line in ended} <= {line["stream_id"] for line in started}
    assert all(line["logger"].startswith("tokenwire") and line["events"] >= 2 for line in ended)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access and all({"method", "path", "status"} <= set(line) for line in access)
    assert any("ticket=[redacted]" in line["path"] for line in access)


def test_a_transcript_on_disk_goes_through_the_same_redactor(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    secret = "sk-" + secrets.token_hex(10)
    env = {**os.environ, "OPENAI_API_KEY": "env-key-" + secrets.token_hex(8)}
    prompt = f"keys {secret} and {env['OPENAI_API_KEY']} and https://x.test/?api_key=abcdef"
    cmd = [sys.executable, "-m", "tokenwire", "chat", prompt, "--provider", "scripted", "--transcript", str(path)]
    done = subprocess.run([*cmd, "--redact", r"sk-[0-9a-f]{20}"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    written = path.read_text()
    assert secret not in written and env["OPENAI_API_KEY"] not in written and "abcdef" not in written
    assert written.count("[redacted]") == 3
    assert all(json.loads(line) for line in written.splitlines())  # still one valid event per line
