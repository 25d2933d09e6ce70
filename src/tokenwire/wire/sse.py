"""Server-Sent Events decoding, sans-I/O: bytes in, events out.

Follows the WHATWG event-stream rules: a leading byte-order mark is dropped, lines end with LF,
CRLF or CR (also split across chunks), ``:`` starts a comment, ``data`` lines are joined with LF,
``id`` persists until changed (and is ignored when it contains NUL), ``retry`` takes ASCII digits
only, and a blank line dispatches the event — unless no ``data`` line came, so a keep-alive never
produces an empty event. Work is linear in the input however it is split into chunks
(tests/test_sse.py checks it against httpx-sse for every split, and counts the work).

>>> d = SSEDecoder()
>>> d.feed(b'event: delta\\ndata: {"a"')
[]
>>> d.feed(b': 1}\\nid: 7\\n\\n: ping\\n')
[SSEEvent(event='delta', data='{"a": 1}', id='7', retry=None)]
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEEvent"]


class SSEEvent(NamedTuple):
    """One dispatched event."""

    event: str
    """The ``event:`` field, ``"message"`` when absent."""
    data: str
    """The ``data:`` lines joined with LF."""
    id: str | None
    """The last ``id:`` seen in the stream (it persists across events)."""
    retry: int | None
    """The ``retry:`` reconnection time in ms, when this event set one."""


class SSEDecoder:
    """Incremental SSE parser; feed it byte chunks as they arrive."""

    __slots__ = ("_at_start", "_data", "_event", "_last_id", "_pending", "_pending_cr", "_retry")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the unfinished line, as the chunks that brought it
        self._pending_cr = False
        self._at_start = True
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse a chunk; returns the events it completed."""
        if not chunk:
            return []  # nothing: in particular, a CR stays pending for its LF
        if self._pending_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = chunk[-1:] == b"\r"
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._pending.append(chunk)  # still inside one line: keep the piece, join once
            return []
        if self._pending:
            self._pending.append(chunk)
            buf = b"".join(self._pending)
        else:
            buf = chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        last = lines.pop()
        self._pending = [last] if last else []
        if self._at_start and lines:
            self._at_start = False
            if lines[0][:3] == b"\xef\xbb\xbf":
                lines[0] = lines[0][3:]  # the stream's byte-order mark
        out: list[SSEEvent] = []
        for raw in lines:
            self._line(raw, out)
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream: an event without its final blank line is discarded, as the spec says."""
        self._pending = []
        self._data = []
        self._event = ""
        return []

    def _line(self, raw: bytes, out: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                out.append(SSEEvent(self._event or "message", "\n".join(self._data), self._last_id, self._retry))
            self._data = []
            self._event = ""
            self._retry = None
            return
        if raw[:6] == b"data: ":  # the hot path
            self._data.append(raw[6:].decode("utf-8", "replace"))
            return
        line = raw.decode("utf-8", "replace")
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
