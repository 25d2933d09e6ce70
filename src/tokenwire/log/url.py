"""Which event log a process uses: the one parser of log URLs (``TOKENWIRE_LOG``, ``tokenwire
serve --log``, ``ServerConfig.log_url``) and the default log of runs started without one.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Literal, TypeAlias

from tokenwire.log.base import EventLog
from tokenwire.log.memory import MemoryLog

__all__ = ["LogKind", "configured_log_url", "default_log", "log_from_url", "log_kind"]

_default: MemoryLog | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventLog] = weakref.WeakKeyDictionary()


LogKind: TypeAlias = Literal["memory", "redis"]
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def log_kind(url: str | None) -> LogKind:
    """Which backend a log URL names: ``memory`` (``"memory"``, empty or None) or ``redis``
    (``redis://``, ``rediss://``, ``unix://``); a ValueError that says what is accepted otherwise.
    The one parser of log URLs (``TOKENWIRE_LOG``, ``tokenwire serve --log``, ``ServerConfig.log_url``).

    >>> log_kind("redis://127.0.0.1:6379/0"), log_kind("memory"), log_kind(None)
    ('redis', 'memory', 'memory')
    """
    if not url or url == "memory":
        return "memory"
    if url.startswith(_REDIS_SCHEMES):
        return "redis"
    raise ValueError(f"an event log URL is 'memory' or redis://HOST:PORT/DB (rediss://, unix://), got {url!r}")


def log_from_url(
    url: str | None, *, max_events: int = 65_536, max_streams: int = 1024, max_total_events: int | None = None
) -> EventLog:
    """The event log ``url`` names (see :func:`log_kind`): a bounded :class:`MemoryLog`, or a
    :class:`~tokenwire.log.redis.RedisLog` (the ``redis`` extra, imported only then; one Redis
    stream keeps ``max_events``)."""
    if log_kind(url) == "redis":
        from tokenwire.log.redis import RedisLog  # an optional extra, loaded only when configured

        assert url is not None
        return RedisLog(url, max_events=max_events)
    return MemoryLog(max_events=max_events, max_streams=max_streams, max_total_events=max_total_events)


def configured_log_url() -> str | None:
    """``TOKENWIRE_LOG`` from the environment (None when unset or empty)."""
    return os.environ.get("TOKENWIRE_LOG") or None


def default_log() -> EventLog:
    """The log that runs use when no ``log`` is passed.

    By default a process-wide in-memory log. Bounds: 65,536 events per stream, 1,024 streams, and
    262,144 events in finished streams together (about 50 MB of one-token deltas); the oldest
    finished streams are evicted first. Pass ``log=MemoryLog(...)`` (or a shared backend) for
    other bounds. With ``TOKENWIRE_LOG=redis://HOST:PORT/DB`` in the environment it is a
    :class:`~tokenwire.log.redis.RedisLog` instead, one per event loop (a Redis client belongs
    to the loop it runs on).
    """
    global _default
    url = configured_log_url()
    if log_kind(url) == "redis":
        loop = asyncio.get_running_loop()
        log = _per_loop.get(loop)
        if log is None:
            log = _per_loop[loop] = log_from_url(url)
        return log
    if _default is None:
        _default = MemoryLog(max_events=65_536, max_streams=1024, max_total_events=262_144)
    return _default
