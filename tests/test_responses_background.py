"""The Responses API's background mode through the real ``openai`` SDK: a response outlives its
request; a client that dropped resumes with ``starting_after`` (nothing lost, nothing twice);
``retrieve`` reads it as it stands; ``cancel`` ends it; another API key never sees it."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tokenwire.log import MemoryLog
from tokenwire.providers import Scripted, Stall
from tokenwire.server import ServerConfig, create_app
from wire import serve

KEY, OTHER = "background-key-1", "background-key-2"
WORDS = [f"w{i} " for i in range(40)]


def app() -> Any:
    providers = {"slow": Scripted(WORDS, interval_s=0.02), "endless": Scripted(["a", Stall()])}
    return create_app(providers=providers, api_keys=[KEY, OTHER], log=MemoryLog(), config=ServerConfig(ping_s=0.05))


def client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _text(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def test_a_dropped_background_stream_resumes_after_its_last_sequence_number() -> None:
    application = app()
    runs = application.state.tokenwire.runs
    with serve(application) as url:
        async with client(url) as c:
            stream = await c.responses.create(model="slow", input="hi", background=True, stream=True)
            seen: list[Any] = []
            async for event in stream:
                seen.append(event)
                if len([e for e in seen if e.type == "response.output_text.delta"]) == 5:
                    break
            response_id = seen[0].response.id
            await stream.close()  # the client drops mid-answer: a background response goes on
            run = runs.get(response_id.removeprefix("resp_"))
            assert run is not None

            last = seen[-1].sequence_number
            resumed = [e async for e in await c.responses.retrieve(response_id, stream=True, starting_after=last)]
            assert [e.sequence_number for e in seen + resumed] == list(range(len(seen) + len(resumed)))
            assert resumed[-1].type == "response.completed"
            assert _text(seen + resumed) == "".join(WORDS) == resumed[-1].response.output_text

            # the whole response again, from the start: the same events, numbered the same
            replay = [e async for e in await c.responses.retrieve(response_id, stream=True)]
            assert [e.model_dump() for e in replay] == [e.model_dump() for e in seen + resumed]
            done = await c.responses.retrieve(response_id)
            assert (done.status, done.output_text) == ("completed", "".join(WORDS))
    # it ran to its end: the client's leaving did not cancel it (it does without background)
    assert run.handle.terminal.type == "done" and run.handle.terminal.finish_reason == "stop"


async def test_a_background_response_is_read_as_it_stands_and_cancelled() -> None:
    with serve(app()) as url:
        async with client(url) as c:
            queued = await c.responses.create(model="endless", input="hi", background=True)
            assert queued.status == "in_progress" and queued.id.startswith("resp_")
            now = await c.responses.retrieve(queued.id)
            assert now.status == "in_progress"
            cancelled = await c.responses.cancel(queued.id)
            assert cancelled.status == "cancelled"
            assert (await c.responses.retrieve(queued.id)).status == "cancelled"
            events = [e async for e in await c.responses.retrieve(queued.id, stream=True)]
            assert events[0].type == "response.created" and events[-1].response.status == "cancelled"


async def test_another_key_never_sees_a_response_and_a_bad_cursor_is_a_400() -> None:
    with serve(app()) as url:
        async with client(url) as c, client(url, OTHER) as other:
            mine = await c.responses.create(model="slow", input="hi", background=True)
            with pytest.raises(openai.NotFoundError):
                await other.responses.retrieve(mine.id)
            with pytest.raises(openai.NotFoundError):
                await other.responses.cancel(mine.id)
            with pytest.raises(openai.NotFoundError):
                await c.responses.retrieve("resp_nothing-here")
            async with httpx.AsyncClient() as http:
                r = await http.get(
                    f"{url}/v1/responses/{mine.id}",
                    params={"stream": "true", "starting_after": "x"},
                    headers={"Authorization": f"Bearer {KEY}"},
                )
            assert r.status_code == 400 and "starting_after" in r.json()["error"]["message"]
            await c.responses.cancel(mine.id)
