"""The native wire formats: our event JSON as SSE frames and as WebSocket text messages.

SSE frame: ``id`` is the seq (``Last-Event-ID`` resumes), ``event`` the type, ``data`` the event's
JSON; LF line endings only (DESIGN.md, wire notes).
"""

from __future__ import annotations

from tokenwire.events import Event, encode
from tokenwire.wire.cache import WireFormat

__all__ = ["JSON_TEXT", "SSE", "sse_frame"]


def sse_frame(event: Event) -> bytes:
    """The native SSE frame of one event."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), encode(event))


def _json_text(event: Event) -> str:
    return encode(event).decode()


SSE = WireFormat("sse", sse_frame)
"""Native Server-Sent Events frames (bytes)."""
JSON_TEXT = WireFormat("json", _json_text)
"""The event's JSON as text: one WebSocket text message per event."""
