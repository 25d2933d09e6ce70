"""The non-streaming fallback: a coroutine that returns the whole answer, with the stream API.

>>> import tokenwire
>>> from tokenwire.providers import Batch
>>> async def answer(request):
...     return "42"
>>> [ev.type for ev in tokenwire.stream_sync(Batch(answer), "meaning of life?")]
['start', 'text.delta', 'done']
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from tokenwire.core.provider import Part
from tokenwire.core.request import Request

__all__ = ["Batch"]


class Batch:
    """Wraps ``fn(request) -> str`` (async) as a provider: start → one text.delta → done."""

    def __init__(self, fn: Callable[[Request], Awaitable[str]], *, model: str = "batch"):
        self.fn = fn
        self.model = model

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        text = await self.fn(request)
        if not isinstance(text, str):
            raise TypeError(f"Batch function {self.fn!r} must return str, got {type(text).__name__}")
        if text:
            yield text
