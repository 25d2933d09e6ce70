"""Speech: an observer that turns a stream's text into audio while the answer is still streaming.

Text deltas go through a sentence coalescer (:func:`tokenwire.consumers.chunking.sentences`); each complete
sentence is synthesised at once, off the event loop, in one worker thread, and handed to
``on_audio`` as an :class:`AudioChunk` (16-bit PCM). The first sentence is speaking while the
model writes the second: time to first audio is one sentence's generation plus its synthesis, not
the whole answer's. Barge-in: :meth:`Speech.interrupt` (or the stream ending cancelled / in error)
drops every queued sentence at once and discards the one being synthesised.

The engine is any object with ``synthesize(text) -> (pcm, sample_rate)``; :class:`EspeakNG` runs
the ``espeak-ng`` program (Debian's ``espeak-ng``: ``make test`` installs it).

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> chunks = []
>>> speech = Speech(chunks.append)                                       # doctest: +SKIP
>>> _ = tokenwire.run_sync(Scripted(["Hello there. ", "Bye."]), "hi", observers=[speech])  # doctest: +SKIP
>>> speech.wait(10)                                                      # doctest: +SKIP
>>> [c.text for c in chunks]                                             # doctest: +SKIP
['Hello there.', ' Bye.']
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from tokenwire.consumers.chunking import Coalescer, sentences
from tokenwire.events import Done, Error, Event, TextDelta

__all__ = ["AudioChunk", "EspeakNG", "Speech", "SpeechEngine"]


class AudioChunk(msgspec.Struct, frozen=True):
    """The audio of one sentence: 16-bit little-endian mono PCM at ``sample_rate``."""

    index: int
    """0 for the stream's first sentence, then 1, 2 …"""
    text: str
    pcm: bytes
    sample_rate: int
    latency_s: float
    """From the stream's first text delta to this chunk's audio being ready (the speech clock)."""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


class SpeechEngine(Protocol):
    def synthesize(self, text: str) -> tuple[bytes, int]:
        """Blocking: the PCM of ``text`` and its sample rate."""


class EspeakNG:
    """The ``espeak-ng`` program: ``voice`` (``en``, ``de`` …), ``words_per_minute``."""

    def __init__(self, *, voice: str = "en", words_per_minute: int = 175, binary: str | None = None):
        found = binary or shutil.which("espeak-ng")
        if found is None:
            raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self.binary = found
        self.voice = voice
        self.words_per_minute = words_per_minute

    def synthesize(self, text: str) -> tuple[bytes, int]:
        wav = subprocess.run(
            [self.binary, "--stdout", "-v", self.voice, "-s", str(self.words_per_minute), "--", text],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        return _pcm_of_wav(wav)


def _pcm_of_wav(wav: bytes) -> tuple[bytes, int]:
    """The samples and rate of a RIFF/WAVE file (espeak-ng's header on a pipe gives no true sizes)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    rate = int.from_bytes(wav[24:28], "little")
    at = 12
    while at + 8 <= len(wav):
        chunk, size = wav[at : at + 4], int.from_bytes(wav[at + 4 : at + 8], "little")
        if chunk == b"data":
            return wav[at + 8 :], rate  # to the end: the declared size is a placeholder on a pipe
        at += 8 + size
    return b"", rate


_STOP = object()


class Speech:
    """Speaks a stream (see the module docstring): an observer; ``on_audio`` runs in the speech
    thread (hop to your loop with ``loop.call_soon_threadsafe`` if it touches async state)."""

    def __init__(
        self,
        on_audio: Callable[[AudioChunk], object],
        *,
        engine: SpeechEngine | None = None,
        coalescer: Coalescer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.on_audio = on_audio
        self.engine = engine or EspeakNG()
        self.coalescer = coalescer or sentences(max_delay_s=None)
        self.clock = clock
        self.spoken: list[AudioChunk] = []
        self.dropped = 0
        """Sentences dropped by a barge-in (queued, or being synthesised when it came)."""
        self._first_text: float | None = None
        self._index = 0
        self._generation = 0
        self._queue: queue.Queue[tuple[int, int, str] | object] = queue.Queue()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._work, name="tokenwire-speech", daemon=True)
        self._thread.start()

    # -- observer ---------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            now = self.clock()
            if self._first_text is None:
                self._first_text = now
            for sentence in self.coalescer.feed(event.text, now):
                self._say(sentence)
        elif isinstance(event, Done | Error):
            if isinstance(event, Error) or event.finish_reason == "cancelled":
                self.interrupt()
                self.coalescer.flush()
            else:
                for rest in self.coalescer.flush():
                    self._say(rest)
            self._queue.put(_STOP)

    def _say(self, text: str) -> None:
        if text.strip():
            self._queue.put((self._generation, self._index, text))
            self._index += 1

    # -- control ----------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Barge-in: drop every queued sentence now and discard the one being synthesised."""
        self._generation += 1
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            self.dropped += 1

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream ended and everything queued was spoken (or dropped)."""
        return self._finished.wait(timeout)

    def close(self) -> None:
        """Stop the speech thread (after what is queued; :meth:`interrupt` first to stop at once)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._finished.set()
                return
            assert isinstance(item, tuple)
            generation: int = item[0]
            index: int = item[1]
            text: str = item[2]
            if generation != self._generation:
                self.dropped += 1
                continue
            pcm, rate = self.engine.synthesize(text)
            if generation != self._generation:  # interrupted while it was being synthesised
                self.dropped += 1
                continue
            started = self._first_text if self._first_text is not None else self.clock()
            chunk = AudioChunk(index, text, pcm, rate, latency_s=self.clock() - started)
            self.spoken.append(chunk)
            self.on_audio(chunk)
