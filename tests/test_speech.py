"""Speech: sentences become audio while the answer streams, and barge-in drops what is queued.
With the real espeak-ng (make test installs it)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import tokenwire
from tokenwire.consumers.speech import AudioChunk, EspeakNG, Speech
from tokenwire.events import Event, TextDelta
from tokenwire.providers import Delay, Scripted, Stall

pytestmark = pytest.mark.e2e  # espeak-ng from apt


def test_the_first_sentence_is_audio_before_the_answer_is_written(no_thread_leaks: None) -> None:
    """Sentences paced 0.4 s apart: the first one's audio is ready while the model is still on the
    later ones (ordering, not a wall-clock bound), and every sentence is spoken once, in order."""
    log: list[str] = []
    lock = threading.Lock()

    def heard(chunk: AudioChunk) -> None:
        with lock:
            log.append(f"audio {chunk.index}")

    def wrote(event: Event) -> None:
        if isinstance(event, TextDelta):
            with lock:
                log.append(f"text {event.text.strip()}")

    answer = ["The river ", "is long. ", Delay(0.4), "It runs ", "to the sea. ", Delay(0.4), "Boats sail ", "on it."]
    speech = Speech(heard)
    tokenwire.run_sync(Scripted(answer), "rivers?", observers=[wrote, speech])
    assert speech.wait(30)
    assert [c.text.strip() for c in speech.spoken] == ["The river is long.", "It runs to the sea.", "Boats sail on it."]
    assert log.index("audio 0") < log.index("text on it.")  # spoken before the answer was finished
    first = speech.spoken[0]
    assert first.sample_rate == 22050 and first.duration_s > 0.5 and first.latency_s < speech.spoken[-1].latency_s


def test_barge_in_drops_queued_sentences_and_a_cancelled_stream_stops_speaking(no_thread_leaks: None) -> None:
    sentences = [f"Sentence number {i} is here. " for i in range(8)]
    first_audio = threading.Event()
    speech = Speech(lambda chunk: first_audio.set())

    async def main() -> None:
        handle = tokenwire.generate(Scripted([*sentences, Stall()]), "talk", observers=[speech])
        await asyncio.to_thread(first_audio.wait, 30)  # the user starts talking over the first sentence
        handle.cancel("the user interrupted")
        await handle.wait()

    asyncio.run(main())
    assert speech.wait(30)
    assert 1 <= len(speech.spoken) < 8 and speech.dropped >= 1
    assert len(speech.spoken) + speech.dropped == 8
    interrupted = Speech(lambda chunk: None, engine=EspeakNG(words_per_minute=300))
    interrupted.on_event(TextDelta("One. Two. Three. Four. ", stream_id="s", seq=1, ts=0))
    interrupted.interrupt()
    interrupted.close()
    assert (len(interrupted.spoken), interrupted.dropped) == (0, 4)  # nothing spoken after the barge-in


# -- the server: GET /v1/streams/{id}/speech, and the web UI playing it ------------------------------

KEY = "speech-key-1234"


def test_the_speech_endpoint_streams_wav_sentences_as_the_run_writes_them() -> None:
    import base64
    import io
    import json
    import wave

    import httpx

    from tokenwire.server import create_app
    from wire import serve

    answer = ["Rivers are long. ", Delay(0.3), "They reach the sea. ", Delay(0.3), "The end."]
    app = create_app(providers={"s": Scripted(answer)}, api_keys=[KEY])
    with serve(app) as url:
        info = httpx.post(f"{url}/v1/runs", json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"}).json()
        assert httpx.get(f"{url}/v1/streams/{info['stream_id']}/speech").status_code == 401  # a read token is needed
        chunks, kinds = [], []
        with httpx.stream(
            "GET",
            f"{url}/v1/streams/{info['stream_id']}/speech",
            headers={"Authorization": f"Bearer {info['read_token']}"},
        ) as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    kinds.append(kind)
                elif line.startswith("data: ") and kind == "audio":
                    chunks.append(json.loads(line[6:]))
    assert kinds == ["audio", "audio", "audio", "end"]
    assert [c["text"].strip() for c in chunks] == ["Rivers are long.", "They reach the sea.", "The end."]
    with wave.open(io.BytesIO(base64.b64decode(chunks[0]["wav"]))) as w:  # a real WAV file
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2) and w.getnframes() > 5000


@pytest.mark.timeout(600)
def test_the_web_ui_plays_the_answer_as_it_streams(page: Any, tmp_path: Any) -> None:
    from tokenwire.server import create_app
    from wire import serve

    answer = ["Rivers are long. ", Delay(0.5), "They reach the sea. ", Delay(0.5), "The end."]
    app = create_app(providers={"s": Scripted(answer)}, api_keys=[KEY])
    with serve(app) as url:
        page.goto(url + "/")
        page.fill("#apikey", KEY)
        page.check("#speak")
        page.fill("#prompt", "Tell me about rivers")
        page.click("#send")
        page.wait_for_function("window.spoken.length >= 1", timeout=10_000)
        status_at_first_audio = page.inner_text("#status")
        page.wait_for_function("window.spoken.length === 3", timeout=20_000)
        spoken = page.evaluate("window.spoken")
    assert status_at_first_audio == "streaming"  # the first sentence played before the answer ended
    assert [s["text"].strip() for s in spoken] == ["Rivers are long.", "They reach the sea.", "The end."]
    assert all(s["seconds"] > 0.3 for s in spoken)
