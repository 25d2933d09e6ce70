"""The web UI in headless Chromium driven by Playwright: text grows, cancel, resume after a drop.

The test installs what it needs: Debian's chromium (apt) when it is missing; the Python
playwright package (a dev dependency) drives it through its executable_path, no browser download.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenwire.providers import Scripted
from tokenwire.server import ServerConfig, create_app
from wire import free_port, serve

# The first test may install chromium with apt on a fresh machine: minutes, not the default 120 s.
pytestmark = [pytest.mark.timeout(1800), pytest.mark.e2e]  # headless Chromium, installed with apt

KEY = "ui-key"
WORDS = [f"word{i} " for i in range(120)]
CODE = ["Here is code:\n", "```py\n", "print('hi')\n", "```\n", "Done."]


class DroppableProxy:
    """A loopback TCP proxy whose open connections the test can cut (a real network drop)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def drop(self) -> None:
        def cut() -> None:
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()

        self.loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        async def shutdown() -> None:  # every connection's task ends before the loop does
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, DroppableProxy]]:
    app = create_app(
        providers={"slow": Scripted(WORDS, interval_s=0.02), "code": Scripted(CODE, interval_s=0.05)},
        default_provider="slow",
        api_keys=[KEY],
        config=ServerConfig(retry_ms=300),
    )
    with serve(app) as url:
        proxy = DroppableProxy(int(url.rsplit(":", 1)[1]))
        yield f"http://127.0.0.1:{proxy.port}/", proxy
        proxy.close()


def ask(page: Any, url: str, provider: str | None = None) -> None:
    page.unroute("**/v1/runs")
    page.goto(url)
    page.fill("#apikey", KEY)
    page.fill("#prompt", "Tell me things")
    if provider:  # the UI always asks the server's default; route the request body for other scripts
        page.route(
            "**/v1/runs", lambda route: route.continue_(post_data=f'{{"prompt": "x", "provider": "{provider}"}}')
        )
    page.click("#send")


def test_text_grows_and_renders_markdown(page: Any, site: Any, tmp_path: Path) -> None:
    url, _ = site
    ask(page, url, provider="code")
    page.wait_for_selector("#answer pre code", timeout=10_000)
    page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=10_000)
    assert page.inner_text("#answer pre code").strip() == "print('hi')"
    page.screenshot(path=str(tmp_path / "code.png"))

    ask(page, url)
    lengths = []
    for i in range(4):
        page.wait_for_timeout(400)
        page.screenshot(path=str(tmp_path / f"grow{i}.png"))
        lengths.append(len(page.inner_text("#answer")))
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1], lengths
    assert "tok/s" in page.inner_text("#metrics")
    assert page.inner_text("#model") == "scripted"  # which model answers (the start event's)
    page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=20_000)
    # Ended: the footer shows the engine's own figures (done.stats, from telemetry.Metrics).
    assert page.inner_text("#tokens") == str(len(WORDS))
    assert page.inner_text("#ttft").endswith(" s") and float(page.inner_text("#rate")) > 0


def test_cancel_button_stops_the_stream(page: Any, site: Any) -> None:
    url, _ = site
    ask(page, url)
    page.wait_for_function("document.getElementById('answer').innerText.length > 20", timeout=10_000)
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=10_000)
    text = page.inner_text("#answer").strip()
    assert text and "".join(WORDS).startswith(text) and text != "".join(WORDS).strip()


def test_resumes_after_a_network_drop_without_loss_or_duplication(page: Any, site: Any) -> None:
    url, proxy = site
    ask(page, url)
    page.wait_for_function("document.getElementById('answer').innerText.length > 30", timeout=10_000)
    proxy.drop()  # every open connection is cut mid-stream
    page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=20_000)
    assert page.inner_text("#answer").strip() == "".join(WORDS).strip()


def test_a_conversation_with_citations_and_lint_notes(page: Any, tmp_path: Path) -> None:
    """Two turns: the second request carries the first question and answer; a turn's citation
    and lint steps render beside its answer, and the first turn stays on the page."""
    from tokenwire.events import Step

    citation = Step(
        name="citation",
        status="finished",
        detail={"source": "README.md", "heading": "Resume", "score": 3.2, "snippet": "Last-Event-ID resumes"},
    )
    lint = Step(
        name="lint",
        status="finished",
        detail={
            "block": 1,
            "language": "python",
            "diagnostics": [{"code": "F821", "message": "Undefined name `x`", "line": 1}],
        },
    )
    model = Scripted.turns(
        [citation, "Clients resume with ", "Last-Event-ID."],
        ["Like this:\n", "```py\n", "print(x)\n", "```\n", lint, "Done."],
    )
    app = create_app(providers={"rag": model}, api_keys=[KEY])
    with serve(app) as url:
        page.goto(f"{url}/?provider=rag")
        page.fill("#apikey", KEY)
        page.fill("#prompt", "How do clients resume?")
        page.click("#send")
        page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=10_000)
        assert "README.md § Resume" in page.inner_text("#citations")
        page.fill("#prompt", "Show me code.")
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('status').textContent === 'stop' && document.querySelector('#lints .lint')",
            timeout=10_000,
        )
        page.screenshot(path=str(tmp_path / "conversation.png"), full_page=True)
        history = page.inner_text("#history")
        lint_note = page.inner_text("#lints")
        code = page.inner_text("#answer pre code")
    assert "How do clients resume?" in history and "Clients resume with Last-Event-ID." in history
    assert "README.md § Resume" in history  # the first turn keeps its citation
    assert "F821" in lint_note and code.strip() == "print(x)"
    second = model.requests[1].messages
    assert [(m.role, m.content) for m in second] == [
        ("user", "How do clients resume?"),
        ("assistant", "Clients resume with Last-Event-ID."),
        ("user", "Show me code."),
    ]


@pytest.mark.parametrize("keyed", [True, False], ids=["api-key", "no-auth"])
def test_a_pending_approval_is_shown_after_a_reload_and_in_another_tab_and_approved(page: Any, keyed: bool) -> None:
    """A call that needs approval suspends the run; the page shows the call's arguments with
    Approve / Deny, also after a reload and in a second tab (both rebuild it from the log), and
    Approve resumes the run to its answer. Without API keys the run's own token answers (the
    page keeps it for a run it started without a key)."""
    from tokenwire.events import ToolCall
    from tokenwire.tools import tool

    wired: list[int] = []

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        wired.append(amount)
        return "sent"

    model = Scripted.turns([ToolCall(call_id="c1", name="wire_money", args={"amount": 42})], ["Sent ", "42."])
    app = create_app(providers={"bank": model}, tools=[wire_money], api_keys=[KEY] if keyed else None)
    context = page.context.browser.new_context()  # two tabs of one browser profile (one localStorage)
    page = context.new_page()
    with serve(app, lifespan="on") as url:
        page.goto(f"{url}/?provider=bank&tools=wire_money")
        if keyed:
            page.fill("#apikey", KEY)
        page.fill("#prompt", "Pay 42")
        page.click("#send")
        page.wait_for_selector(".tool .approval button.approve", timeout=10_000)
        assert '"amount": 42' in page.inner_text(".tool .args")
        page.reload()  # the run waits on the server, not in this page
        page.wait_for_selector(".tool .approval button.approve", timeout=10_000)
        assert page.inner_text("#stall") == "waiting for your approval"
        other = context.new_page()
        try:
            other.goto(f"{url}/?provider=bank&tools=wire_money")
            other.wait_for_selector(".tool .approval button.approve", timeout=10_000)
            other.click(".tool .approval button.approve")
            other.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=10_000)
        finally:
            other.close()
        page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=10_000)
        assert page.inner_text(".tool .approval") == "approved (api)"
        assert page.inner_text("#answer").strip() == "Sent 42."
    context.close()
    assert wired == [42]


def test_the_page_says_it_waits_for_the_first_token_and_calls_only_a_gap_between_tokens_a_stall(page: Any) -> None:
    from tokenwire.providers.scripted import Delay

    model = Scripted([Delay(3.0), "Hello ", Delay(2.0), "world."])  # 2 s to see the wait, however late the page
    app = create_app(providers={"slow": model}, api_keys=[KEY])
    with serve(app, lifespan="on") as url:
        page.goto(f"{url}/?provider=slow")
        page.fill("#apikey", KEY)
        page.fill("#prompt", "Hi")
        page.click("#send")
        page.wait_for_function("document.getElementById('stall').textContent.startsWith('waiting for the first token')")
        page.wait_for_function("document.getElementById('stall').textContent.startsWith('⏸ stalled')")
        assert page.inner_text("#answer").strip() == "Hello"
        page.wait_for_function("document.getElementById('status').textContent === 'stop'")
        assert page.inner_text("#stall").startswith("1 stalls, longest ")  # done.stats: the gap, not the wait


def test_sub_agents_show_nested_live_and_survive_a_network_drop(page: Any) -> None:
    """A lead whose tool asks two research sub-agents in parallel, each asking a slow leaf: the
    page shows each child run inside the card of the call that started it (the leaves inside
    their research boxes), their text as it streams, each box folded with its end; a network
    drop mid-tree resumes every stream from the tree's cursor, nothing lost or shown twice."""
    import tokenwire
    from test_trees import Delegates, calls

    leaf = tokenwire.sub_agent(Scripted(WORDS[:40], interval_s=0.02), name="leaf", description="Reads.")
    middle = Delegates(calls(("m", "leaf", {"task": "t"})), ["found"])
    research = tokenwire.sub_agent(middle, name="research", description="Researches.", tools=[leaf])
    lead = Delegates(calls(("r1", "research", {"task": "a"}), ("r2", "research", {"task": "b"})), ["Merged."])
    app = create_app(providers={"lead": lead}, tools=[research], api_keys=[KEY], config=ServerConfig(retry_ms=300))
    with serve(app) as url:
        proxy = DroppableProxy(int(url.rsplit(":", 1)[1]))
        try:
            page.goto(f"http://127.0.0.1:{proxy.port}/?provider=lead&tools=research")
            page.fill("#apikey", KEY)
            page.fill("#prompt", "Research this")
            page.click("#send")
            leaves = "document.querySelectorAll('details.child details.child')"
            page.wait_for_function(
                f"{leaves}.length === 2 && [...{leaves}].every(b => b.open && "
                "b.querySelector('.ctext').textContent.length > 20)",
                timeout=20_000,
            )
            proxy.drop()  # mid-tree: both leaves are still streaming
            page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=30_000)
            boxes = page.eval_on_selector_all(
                "details.child",
                "bs => bs.map(b => ({agent: b.querySelector('.agent').textContent, open: b.open, "
                "status: b.querySelector(':scope > summary .cstatus').textContent, "
                "text: b.querySelector(':scope > .ctext').textContent, "
                "depth: b.parentElement.closest('details.child') ? 2 : 1}))",
            )
        finally:
            proxy.close()
    assert sorted((b["agent"], b["depth"]) for b in boxes) == [
        ("↳ leaf", 2),
        ("↳ leaf", 2),
        ("↳ research", 1),
        ("↳ research", 1),
    ]
    assert all(b["status"] == "stop" and not b["open"] for b in boxes)
    assert [b["text"] for b in boxes if b["depth"] == 2] == ["".join(WORDS[:40])] * 2  # nothing lost, nothing twice
    assert [b["text"] for b in boxes if b["depth"] == 1] == ["found"] * 2
    assert page.inner_text("#answer").strip() == "Merged."


def test_two_tabs_follow_their_own_keys_runs_on_one_connection_each(page: Any) -> None:
    """``/?view=runs``: every run of the tab's API key, started after it opened, on one fetch
    connection (``POST /v1/events``, ``mine``); the other key's runs never show; after a network
    drop one new connection resumes all five, nothing lost or shown twice."""
    import httpx

    keys = ["tab-key-a", "tab-key-b"]
    words = WORDS[:30]
    app = create_app(providers={"slow": Scripted(words, interval_s=0.03)}, api_keys=keys)
    with serve(app) as url:
        proxy = DroppableProxy(int(url.rsplit(":", 1)[1]))
        tabs = [page, page.context.browser.new_page()]  # a second tab (its own context)
        for tab, key in zip(tabs, keys, strict=True):
            tab.goto(f"http://127.0.0.1:{proxy.port}/?view=runs")
            tab.fill("#runs-key", key)
            tab.click("#follow button")
            tab.wait_for_function("document.getElementById('runs-status').textContent === 'following'")
        made: dict[str, list[str]] = {key: [] for key in keys}
        with httpx.Client() as http:
            for _ in range(5):
                for key in keys:
                    r = http.post(f"{url}/v1/runs", json={"prompt": "go"}, headers={"Authorization": f"Bearer {key}"})
                    made[key].append(r.json()["stream_id"])
        for tab in tabs:  # every run under way in both tabs, then the network drops
            tab.wait_for_function(
                "[...document.querySelectorAll('.run .rtext')].filter((t) => t.textContent).length === 5"
            )
        proxy.drop()
        done = "[...document.querySelectorAll('.run .rstatus')].filter((s) => s.textContent === 'done').length"
        for tab, key in zip(tabs, keys, strict=True):
            tab.wait_for_function(f"{done} === 5", timeout=30_000)
            shown = tab.eval_on_selector_all(
                ".run", "(els) => els.map((e) => [e.dataset.stream, e.querySelector('.rtext').textContent])"
            )
            assert sorted(sid for sid, _ in shown) == sorted(made[key])
            assert all(text == "".join(words) for _, text in shown)
            assert tab.evaluate("window.runsConnections") == 2  # one, and one after the drop
        proxy.close()


def test_a_reload_mid_answer_rejoins_from_a_snapshot_and_shows_the_answer_once(page: Any, site: Any) -> None:
    """The page reloaded while the run streams: it asks for the run's snapshot (one event with the
    text so far) and then the rest; the answer ends whole, nothing shown twice."""
    url, _ = site
    ask(page, url)
    page.wait_for_function("document.getElementById('answer').innerText.length > 40", timeout=10_000)
    page.reload()
    page.wait_for_function("document.getElementById('status').textContent === 'stop'", timeout=20_000)
    assert page.evaluate("window.snapshotJoins") == 1
    assert page.inner_text("#answer").strip() == "".join(WORDS).strip()
