"""tokenwire serve --http2 (hypercorn): many SSE streams multiplexed over one HTTP/2 connection,
resume and cancel over h2c; h2 over TLS; the web UI over h2 in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tokenwire
from wire import free_port, wait_http

KEY, KEY2 = "h2-key-1234567", "h2-key-7654321"  # two keys: 100 live runs is over one key's cap (64)


@contextlib.contextmanager
def serve_h2(*extra: str) -> Iterator[int]:
    port = free_port()
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--http2", "--provider", "scripted", "--port", str(port)]
    cmd += ["--api-key", KEY, "--api-key", KEY2, "--shutdown-grace", "0.5", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        scheme = "https" if "--certfile" in extra else "http"
        wait_http(f"{scheme}://127.0.0.1:{port}/healthz", proc) if scheme == "http" else _wait_tls(port, proc)
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_tls(port: int, proc: Any) -> None:
    import socket
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


def sse_events(body: bytes) -> list[Any]:
    return [tokenwire.events.decode(line[6:]) for line in body.splitlines() if line.startswith(b"data: ")]


async def test_a_hundred_streams_share_one_h2c_connection_with_resume_and_cancel() -> None:
    with serve_h2() as port:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(http1=False, http2=True, base_url=base, timeout=30) as h2:

            def create(i: int) -> Any:
                key = KEY if i % 2 else KEY2
                return h2.post("/v1/runs", json={"prompt": f"n{i}"}, headers={"Authorization": f"Bearer {key}"})

            runs = await asyncio.gather(*(create(i) for i in range(100)))
            infos = [r.json() for r in runs]
            assert all(r.status_code == 201 for r in runs), [r.text for r in runs if r.status_code != 201][:2]
            assert all(r.http_version == "HTTP/2" for r in runs)

            async def read(info: dict[str, Any]) -> list[Any]:
                headers = {"Authorization": f"Bearer {info['read_token']}"}
                async with h2.stream("GET", info["events_url"], headers=headers) as r:
                    assert r.http_version == "HTTP/2"
                    return sse_events(await r.aread())

            streams = await asyncio.gather(*(read(info) for info in infos))
            connections = h2._transport._pool.connections  # type: ignore[attr-defined]
            assert len(connections) == 1  # 100 concurrent streams, one TCP connection
            for i, events in enumerate(streams):
                assert events[0].type == "start" and events[-1].type == "done"
                assert "".join(e.text for e in events if e.type == "text.delta") == f"You said: n{i}"
            # Resume from a seq (Last-Event-ID), and cancel, over the same connection.
            info = infos[0]
            headers = {"Authorization": f"Bearer {info['token']}", "Last-Event-ID": "2"}
            async with h2.stream("GET", info["events_url"], headers=headers) as r:
                resumed = sse_events(await r.aread())
            assert [e.seq for e in resumed] == [e.seq for e in streams[0]][3:]
            long = (await h2.post("/v1/runs", json={"prompt": " ".join(["w"] * 300)}, headers=auth)).json()
            cancelled = await h2.post(
                f"/v1/streams/{long['stream_id']}/cancel", headers={"Authorization": f"Bearer {long['token']}"}
            )
            assert cancelled.status_code == 202
            async with h2.stream("GET", long["events_url"], headers={"Authorization": f"Bearer {long['token']}"}) as r:
                end = sse_events(await r.aread())[-1]
            assert end.type == "done" and end.finish_reason == "cancelled"
            assert len(h2._transport._pool.connections) == 1  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, str(certfile), str(keyfile)


async def test_h2_over_tls(tls: tuple[Any, str, str]) -> None:
    ca, certfile, keyfile = tls
    with serve_h2("--certfile", certfile, "--keyfile", keyfile) as port:
        import ssl

        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with httpx.AsyncClient(http2=True, verify=context, base_url=f"https://127.0.0.1:{port}") as client:
            info = (
                await client.post("/v1/runs", json={"prompt": "secure"}, headers={"Authorization": f"Bearer {KEY}"})
            ).json()
            async with client.stream(
                "GET", info["events_url"], headers={"Authorization": f"Bearer {info['read_token']}"}
            ) as r:
                assert r.http_version == "HTTP/2"
                events = sse_events(await r.aread())
        assert "".join(e.text for e in events if e.type == "text.delta") == "You said: secure"


@pytest.mark.e2e  # headless Chromium
@pytest.mark.timeout(1800)
def test_the_web_ui_over_h2_in_chromium(chromium: str, tls: tuple[Any, str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, certfile, keyfile = tls
    with serve_h2("--certfile", certfile, "--keyfile", keyfile) as port, sync_playwright() as p:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://127.0.0.1:{port}/")
            page.fill("#apikey", KEY)
            page.fill("#prompt", "over h2")
            page.click("#send")
            page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=20_000)
            assert page.inner_text("#answer").strip() == "You said: over h2"
            protocols = page.evaluate("performance.getEntriesByType('navigation').map(e => e.nextHopProtocol)")
            assert protocols == ["h2"]
            page.screenshot(path=str(tmp_path / "ui-h2.png"))
        finally:
            browser.close()
