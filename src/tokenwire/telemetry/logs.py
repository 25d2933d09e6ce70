"""Structured logs: one JSON object per line, with the stream a line is about.

The engine sets :data:`current_stream` in each stream's task, so whatever logs there (the engine,
a provider, the Redis writer) is tagged with the stream id without passing it around; a
``stream_id`` given in a call's ``extra`` wins. Secrets are masked before formatting by
:class:`~tokenwire.telemetry.redact.RedactingFilter` (install both filters on the handler).

>>> import io, json, logging
>>> out = io.StringIO()
>>> handler = logging.StreamHandler(out)
>>> handler.addFilter(StreamContext())
>>> handler.setFormatter(JSONFormatter())
>>> log = logging.getLogger("tokenwire.doc")
>>> log.addHandler(handler); log.propagate = False
>>> token = current_stream.set("s-1")
>>> log.warning("provider slow: %d ms", 120)
>>> current_stream.reset(token)
>>> line = json.loads(out.getvalue())
>>> line["level"], line["logger"], line["message"], line["stream_id"]
('warning', 'tokenwire.doc', 'provider slow: 120 ms', 's-1')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["JSONFormatter", "StreamContext", "current_stream"]

current_stream: ContextVar[str | None] = ContextVar("tokenwire_stream", default=None)
"""The stream whose task is running (set by the engine for the task's whole life)."""

# What a LogRecord has of its own: everything else on it came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "stream_id",
    "color_message",  # uvicorn's copy of the message template with terminal colours
}


class StreamContext(logging.Filter):
    """Adds ``record.stream_id``: the ``extra`` one, else the current stream's, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "stream_id", None) is None:
            record.stream_id = current_stream.get()
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``stream_id`` when known, the ``extra`` fields, ``exc`` with the traceback. uvicorn's access
    lines also get ``client``, ``method``, ``path`` and ``status``. ``redactor`` masks every
    string field once more (``extra`` fields are not seen by a filter)."""

    def __init__(self, redactor: Callable[[str], str] | None = None):
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        stream_id = getattr(record, "stream_id", None)
        if stream_id is not None:
            out["stream_id"] = stream_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            out.update(client=client, method=method, path=path, status=status)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        redact = self.redactor
        if redact is not None:  # each string, before it is JSON-escaped: the line stays valid JSON
            out = {k: redact(v) if isinstance(v, str) else v for k, v in out.items()}
        return json.dumps(out, ensure_ascii=False)
