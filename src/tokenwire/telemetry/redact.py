"""Credentials masked wherever text leaves the process: log records and transcripts written to disk.

One :class:`Redactor` (patterns for URL parameters, bearer values, authorization headers and JSON
fields named like a credential, plus literal secrets and patterns of the caller's); a
:class:`RedactingFilter` applies it to every log record of a handler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

__all__ = ["RedactingFilter", "Redactor"]

_SECRET_PARAMS = r"(?:token|read_token|api_key|apikey|access_token|key|ticket)"
_PATTERNS = (
    # ?token=… / &api_key=… in URLs and query strings (also percent-encoded '=' as %3D)
    # (also a bare query string, as in the ASGI scope that trace level prints: b'token=…')
    (re.compile(r"(?i)((?:^|[?&;\s'\"])" + _SECRET_PARAMS + r"(?:=|%3D))[^&\s\"';]*"), r"\1[redacted]"),
    # Authorization: Bearer …, in log text and in header reprs (b'authorization', b'Bearer …')
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=%-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(authorization['\"]?\s*[,:=]\s*b?['\"])[^'\"]*"), r"\1[redacted]"),
    # "token": "…" / "read_token": "…" in JSON bodies echoed at trace level
    (re.compile(r"(?i)([\"']" + _SECRET_PARAMS + r"[\"']\s*:\s*[\"'])[^\"']*"), r"\1[redacted]"),
)


class Redactor:
    """Masks credentials in text: URL parameters named like a credential (``token``,
    ``api_key`` …), bearer values, authorization headers, JSON fields named like a credential, any
    literal secret registered with :meth:`add` (the server registers its API keys), and whatever
    the ``patterns`` (regular expressions) match. The one redactor of logs and of transcripts
    written to disk.

    >>> r = Redactor(["k-123456"], patterns=[r"sk-[A-Za-z0-9]{8,}"])
    >>> r("GET /v1/streams/s/events?token=abc.def&from_seq=3 HTTP/1.1 key k-123456")
    'GET /v1/streams/s/events?token=[redacted]&from_seq=3 HTTP/1.1 key [redacted]'
    >>> r("(b'authorization', b'Bearer xyz')")
    "(b'authorization', b'[redacted]')"
    >>> r("my key is sk-abcdefgh12")
    'my key is [redacted]'
    """

    def __init__(self, secrets: Iterable[str] = (), *, patterns: Iterable[str | re.Pattern[str]] = ()):
        self._literals: set[str] = set()
        for secret in secrets:
            self.add(secret)
        self._patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]

    def add(self, secret: str) -> None:
        """Also mask this exact string wherever it appears (ignored when shorter than 6 characters)."""
        if len(secret) >= 6:
            self._literals.add(secret)

    def __call__(self, text: str) -> str:
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        for pattern in self._patterns:
            text = pattern.sub("[redacted]", text)
        for secret in self._literals:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's final message (install it on handlers).

    ``tokenwire serve`` puts it on every handler of its logging configuration, so uvicorn's access
    log (which prints query strings) and its trace output (which prints WebSocket handshake
    headers) never show a credential.
    """

    def __init__(self, redactor: Redactor | None = None):
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are redacted one by one, keeping their place: formatters such as uvicorn's
        # access formatter unpack them.
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._clean(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: self._clean(v) for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = self.redactor(record.msg)
        if record.exc_info and record.exc_text is None and record.exc_info[0] is not None:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
        return True

    def _clean(self, value: object) -> object:
        if value is None or isinstance(value, int | float):
            return value
        text = value if isinstance(value, str) else str(value)
        redacted = self.redactor(text)
        return value if redacted == text else redacted
