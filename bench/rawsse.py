"""The raw HTTP request the benchmarks' SSE readers send (no client library in the way): the
stream token in the Authorization header, as the server requires (no credential in a URL)."""

from __future__ import annotations


def sse_request(path: str) -> bytes:
    """``GET path`` for an event stream; a ``?token=`` in ``path`` goes into ``Authorization: Bearer``."""
    base, _, token = path.partition("?token=")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {base} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n{auth}\r\n".encode()
