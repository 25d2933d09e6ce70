"""The provider protocol: the one thing every model backend implements.

A provider maps its backend's native stream to tokenwire events and nothing else: no seq, no
timestamps, no limits, no observers (the engine does all of that). ``stream(request)`` is an async
iterator of *parts*:

- a ``str`` — a text delta (the fast path: the engine builds the ``text.delta`` event);
- any event built without an envelope (``ReasoningDelta("…")``, ``ToolCall(...)``, ``Usage(...)``);
- ``Done(finish_reason=…)`` — the provider finished for this reason (the engine stops reading and
  emits the real terminal with usage and stats);
- ``Error(code=…, message=…, source="provider")`` — an in-stream error reported by the backend.

Raising an exception ends the stream with an ``error`` event (source ``provider``; a
:class:`~tokenwire.errors.ProviderError` supplies ``code`` and ``retryable``). Closing the iterator
(``aclose``) must stop generation and release connections: the engine closes it on cancel and on
every limit.

>>> from tokenwire.core.provider import Provider
>>> class Echo:
...     model = "echo"
...     async def stream(self, request):
...         for word in request.messages[-1].content.split():
...             yield word + " "
>>> isinstance(Echo(), Provider)
True
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeAlias, runtime_checkable

from tokenwire.core.request import Request
from tokenwire.events import EventBase

__all__ = ["Part", "Provider"]

Part: TypeAlias = "str | EventBase"
"""What a provider yields: a text delta string or an event without envelope."""


@runtime_checkable
class Provider(Protocol):
    """A model backend. ``model`` names the model; ``stream`` yields parts for one request."""

    model: str

    def stream(self, request: Request) -> AsyncIterator[Part]: ...
