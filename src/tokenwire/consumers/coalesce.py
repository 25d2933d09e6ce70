"""Coalescing a stream's text deltas into words, sentences, lines or code blocks for a reader:
an observer wrapper (:func:`coalesce`) and an async-iterator filter (:func:`coalesce_events`),
both over one :class:`~tokenwire.consumers.chunking.Coalescer` (the sans-I/O core) with its
timed flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from time import time
from typing import Any

import msgspec

from tokenwire.consumers.chunking import Coalescer, Unit, coalescer
from tokenwire.consumers.observers import Dispatcher
from tokenwire.events import Event, TextDelta

__all__ = ["Coalesce", "coalesce", "coalesce_events"]


def _chunk_event(template: TextDelta, text: str) -> TextDelta:
    return msgspec.structs.replace(template, text=text)


class Coalesce:
    """Observer wrapper: text deltas reach ``observer`` coalesced into units; other events pass.

    Pending text is flushed before any other event, so order is kept. A coalesced delta carries
    the envelope (seq, ts) of the delta that completed it. Create it with :func:`coalesce`.
    """

    def __init__(self, observer: object, unit: Coalescer, *, clock: Callable[[], float] = time):
        self.coalescer = unit
        self._inner = Dispatcher([observer])
        if not self._inner.inline_only:
            raise TypeError(
                "coalesce() wraps an inline observer (an object or a callable); to read through a queue, "
                "wrap it the other way round: tokenwire.queued(tokenwire.coalesce(observer))"
            )
        self._clock = clock
        self._last: TextDelta | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    async def _deliver(self, chunks: list[str]) -> None:
        last = self._last
        if last is None:
            return
        for chunk in chunks:
            r = self._inner.deliver(_chunk_event(last, chunk))
            if r is not None:
                await r

    async def on_event(self, event: Event) -> None:
        async with self._lock:
            if isinstance(event, TextDelta):
                self._last = event
                await self._deliver(self.coalescer.feed(event.text, self._clock()))
                self._arm()
                return
            await self._deliver(self.coalescer.flush())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            r = self._inner.deliver(event)
            if r is not None:
                await r
        if event.type in ("done", "error") and self._flushes:
            await asyncio.gather(*self._flushes)

    def _arm(self) -> None:
        deadline = self.coalescer.deadline
        if deadline is None or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(deadline - self._clock(), 0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._timed_flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _timed_flush(self) -> None:
        async with self._lock:
            await self._deliver(self.coalescer.poll(self._clock()))
            self._arm()


def coalesce(
    observer: object, by: Unit = "words", *, max_delay_s: float | None = 0.016, min_chars: int = 1
) -> Coalesce:
    """Wrap an observer so its ``on_delta`` sees whole words / sentences / lines / code lines.

    >>> import tokenwire
    >>> from tokenwire.providers import Scripted
    >>> got = []
    >>> _ = tokenwire.run_sync(Scripted(["Hel", "lo wo", "rld", "!"]), "hi",
    ...                        observers=[tokenwire.coalesce(got.append, by="words", max_delay_s=None)])
    >>> texts = [e.text for e in got if e.type == "text.delta"]
    >>> texts
    ['Hello', ' world!']
    """
    return Coalesce(observer, coalescer(by, max_delay_s=max_delay_s, min_chars=min_chars))


async def coalesce_events(
    events: AsyncIterable[Event], by: Unit = "words", *, max_delay_s: float | None = 0.016, min_chars: int = 1
) -> AsyncIterator[Event]:
    """Async-iterator transform: the same events with text deltas coalesced into units.

    >>> import asyncio, tokenwire
    >>> from tokenwire.providers import Scripted
    >>> async def main():
    ...     async with tokenwire.stream(Scripted(["a", "b c", "d"]), "hi") as s:
    ...         return [e.text async for e in coalesce_events(s, max_delay_s=None) if e.type == "text.delta"]
    >>> asyncio.run(main())
    ['ab', ' cd']
    """
    unit = coalescer(by, max_delay_s=max_delay_s, min_chars=min_chars)
    iterator = aiter(events)
    last: TextDelta | None = None
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            deadline = unit.deadline
            timeout = None if deadline is None else max(deadline - time(), 0)
            done, _ = await asyncio.wait({pending}, timeout=timeout)
            if not done:
                for chunk in unit.poll(time()):
                    if last is not None:
                        yield _chunk_event(last, chunk)
                continue
            future, pending = pending, None
            try:
                event = future.result()
            except StopAsyncIteration:
                break
            if isinstance(event, TextDelta):
                last = event
                for chunk in unit.feed(event.text, time()):
                    yield _chunk_event(event, chunk)
                continue
            for chunk in unit.flush():
                if last is not None:
                    yield _chunk_event(last, chunk)
            yield event
        for chunk in unit.flush():
            if last is not None:
                yield _chunk_event(last, chunk)
    finally:
        if pending is not None:
            pending.cancel()
