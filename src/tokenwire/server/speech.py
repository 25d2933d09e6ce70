"""``GET /v1/streams/{id}/speech``: a run's answer as audio, sentence by sentence, while it streams.

A reader of the run's log like any other (a read token; from seq 0): its text deltas go through
:class:`tokenwire.consumers.speech.Speech` (espeak-ng, in a worker thread) and every sentence's audio goes
out as soon as it is synthesised, as an SSE event ``audio`` whose data is
``{"index", "text", "sample_rate", "wav"}`` (``wav``: a base64 WAV file the browser's
``decodeAudioData`` plays), then ``event: end``. The client leaving (the Stop button, a barge-in)
drops everything queued at once. 501 when the server has no text-to-speech engine.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import shutil
import struct
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from tokenwire.consumers.speech import AudioChunk, Speech
from tokenwire.core.tasks import TaskSet
from tokenwire.errors import SeqEvicted, StreamNotFound, Unsupported
from tokenwire.events import TERMINAL_TYPES
from tokenwire.server.http import authorized, guarded
from tokenwire.server.service import RunService
from tokenwire.server.streaming import EventStreamResponse

__all__ = ["route", "speech_stream", "wav"]


def wav(pcm: bytes, sample_rate: int) -> bytes:
    """A RIFF/WAVE file around 16-bit mono PCM."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16, b"data", len(pcm),
    )  # fmt: skip
    return header + pcm


def _frame(chunk: AudioChunk) -> bytes:
    data = {
        "index": chunk.index,
        "text": chunk.text,
        "sample_rate": chunk.sample_rate,
        "wav": base64.b64encode(wav(chunk.pcm, chunk.sample_rate)).decode(),
    }
    return b"event: audio\ndata: " + msgspec.json.encode(data) + b"\n\n"


@guarded
async def speech_stream(service: RunService, request: HTTPRequest) -> Response:
    """The handler (see the module docstring)."""
    stream_id: str = request.path_params["stream_id"]
    await authorized(service, request, stream_id, "read")
    if shutil.which("espeak-ng") is None:
        raise Unsupported("this server has no text-to-speech engine (espeak-ng)")
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[AudioChunk | None] = asyncio.Queue()
    speech = Speech(lambda chunk: loop.call_soon_threadsafe(chunks.put_nowait, chunk))

    async def feed() -> None:
        try:
            with service.reading(stream_id, 0, lagging=False) as batches:
                async for batch in batches:
                    for event in batch:
                        speech.on_event(event)
                        if event.__class__ in TERMINAL_TYPES:
                            return
        except (SeqEvicted, StreamNotFound):
            speech.interrupt()
        finally:
            await asyncio.to_thread(speech.wait, 120)
            chunks.put_nowait(None)

    async def frames() -> AsyncIterator[bytes]:
        tasks = TaskSet(f"speech {stream_id}")  # this response's: the client leaving ends it
        reader = tasks.start(feed(), name=f"tokenwire-speech-{stream_id}")
        try:
            while (chunk := await chunks.get()) is not None:
                yield _frame(chunk)
            yield b"event: end\ndata: {}\n\n"
        finally:
            if not reader.done():  # the client left: drop what is queued, stop reading
                speech.interrupt()
                speech.close()
            await tasks.aclose()

    return EventStreamResponse(service, frames(), transport="speech")


def route(service: RunService) -> Route:
    """``GET /v1/streams/{stream_id}/speech``, bound to ``service``."""
    return Route("/v1/streams/{stream_id}/speech", functools.partial(speech_stream, service), methods=["GET"])
