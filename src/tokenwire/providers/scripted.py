"""A provider that plays a script: deterministic streams for tests, demos and benchmarks.

>>> import tokenwire
>>> from tokenwire.providers import Scripted, Delay, Stall
>>> from tokenwire.events import ReasoningDelta
>>> provider = Scripted([ReasoningDelta("thinking"), "Hel", Delay(0.01), "lo", RuntimeError("boom")])
>>> response = tokenwire.run_sync(provider, "hi")
>>> response.text, response.reasoning, response.error.code
('Hello', 'thinking', 'provider_error')

Items: ``str`` (text delta), any event without envelope, :class:`Delay` (pause), :class:`Stall`
(pause forever: exercises stall limits and cancellation), an exception instance (raised at that
point). ``interval_s`` pauses before every item, to mimic a model's token rate.
``closed`` tells whether the engine closed the provider's generator (leak checks in tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import msgspec

from tokenwire.core.provider import Part
from tokenwire.core.request import Request
from tokenwire.events import EventBase

__all__ = ["Delay", "Scripted", "Stall"]


class Delay(msgspec.Struct, frozen=True):
    """Pause the script for ``seconds``."""

    seconds: float


class Stall(msgspec.Struct, frozen=True):
    """Pause the script forever (until the engine cancels it)."""


ScriptItem = str | EventBase | Delay | Stall | BaseException


class Scripted:
    """Plays ``items`` as a model stream; reusable: every ``stream()`` call plays the script again."""

    chooses_model = False
    """It plays what it was given, whatever model a request names."""

    def __init__(self, items: Iterable[ScriptItem], *, model: str = "scripted", interval_s: float = 0.0):
        self.items = list(items)
        for item in self.items:
            if not isinstance(item, str | EventBase | Delay | Stall | BaseException):
                raise TypeError(f"Scripted item {item!r} is not a str, event, Delay, Stall or exception instance")
        self.model = model
        self.interval_s = interval_s
        self._turns: list[list[ScriptItem]] = [self.items]
        self.started = 0
        """How many times ``stream`` began."""
        self.closed = 0
        """How many generators ran to the end or were closed (``started - closed`` are live)."""
        self.last_request: Request | None = None
        self.requests: list[Request] = []
        """Every request received, in order (one per agent turn)."""

    @classmethod
    def turns(cls, *turns: Iterable[ScriptItem], model: str = "scripted", interval_s: float = 0.0) -> Scripted:
        """A script per model turn (agent loops): call N plays turn N; later calls replay the last one."""
        provider = cls([item for turn in turns for item in turn], model=model, interval_s=interval_s)
        provider._turns = [list(turn) for turn in turns] or [[]]
        return provider

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        items = self._turns[min(self.started, len(self._turns) - 1)]
        self.started += 1
        self.last_request = request
        self.requests.append(request)
        interval = self.interval_s
        try:
            for item in items:
                if interval:
                    await asyncio.sleep(interval)
                if isinstance(item, str | EventBase):
                    yield item
                elif isinstance(item, Delay):
                    await asyncio.sleep(item.seconds)
                elif isinstance(item, Stall):
                    await asyncio.Event().wait()
                else:
                    raise item
        finally:
            self.closed += 1
