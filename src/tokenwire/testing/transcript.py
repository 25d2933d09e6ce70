"""Transcripts: a recorded stream, one JSON event per line (JSONL).

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> from tokenwire.testing import Transcript
>>> t = Transcript()
>>> _ = tokenwire.run_sync(Scripted(["Hi"]), "hello", observers=[t])
>>> t.types
['start', 'text.delta', 'done']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import IO

from tokenwire.events import TERMINAL_TYPES, Event, TextDelta, encode, load_jsonl

__all__ = ["Transcript"]


class Transcript:
    """An observer that records every event, and writes them as JSONL to ``path`` if given.

    The file is written as events arrive and closed after the terminal event, so a crash leaves
    every event up to it on disk.
    """

    def __init__(
        self, path: str | os.PathLike[str] | IO[bytes] | None = None, *, redactor: Callable[[str], str] | None = None
    ):
        """``path``: a file to write (created), or an open binary stream such as
        ``sys.stdout.buffer`` (flushed per event, left open: ``--format jsonl`` in a script)."""
        self.path = path if isinstance(path, str | os.PathLike) else None
        self.redactor = redactor
        """Masks secrets in each line written to ``path`` (:class:`tokenwire.telemetry.redact.Redactor`);
        the events kept in memory are left as they came."""
        self.events: list[Event] = []
        self._owned = False
        self._file: IO[bytes] | None = None
        if isinstance(path, str | os.PathLike):
            self._file = open(path, "wb")  # noqa: SIM115 - closed after the terminal event
            self._owned = True
        elif path is not None:
            self._file = path

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        f = self._file
        if f is not None:
            line = encode(event)
            if self.redactor is not None:
                line = self.redactor(line.decode()).encode()
            f.write(line + b"\n")
            if not self._owned:
                f.flush()
            if event.__class__ in TERMINAL_TYPES:
                self.close()

    def close(self) -> None:
        """Flush and close the JSONL file (done automatically after the terminal event)."""
        if self._file is not None:
            if self._owned:
                self._file.close()
            self._file = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transcript:
        """Read a JSONL transcript; raises :class:`~tokenwire.errors.EventDecodeError` at the first bad line."""
        transcript = cls()
        transcript.events = load_jsonl(path)
        transcript.path = path
        return transcript

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recorded events as JSONL (through :attr:`redactor`, if set)."""
        redact = self.redactor
        with open(path, "wb") as f:
            for e in self.events:
                line = encode(e)
                f.write((redact(line.decode()).encode() if redact is not None else line) + b"\n")

    @property
    def types(self) -> list[str]:
        """The event types in order."""
        return [e.type for e in self.events]

    @property
    def text(self) -> str:
        """The concatenated text deltas."""
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> Event:
        return self.events[index]
