"""A provider that replays a recorded stream (a transcript), with original or scaled timing.

>>> import tokenwire
>>> from tokenwire.events import Start, TextDelta, Done
>>> recorded = [Start(model="m", seq=0, ts=10.0), TextDelta("Hi", seq=1, ts=10.2), Done(seq=2, ts=10.3)]
>>> tokenwire.run_sync(tokenwire.providers.Replay(recorded, speed=None), "ignored").text
'Hi'

The replayed stream gets a new ``stream_id``, ``seq`` and ``ts``; ``start`` comes from the engine
(the recorded model name is kept), and the recorded terminal event decides how the replay ends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from tokenwire.core.provider import Part
from tokenwire.core.request import Request
from tokenwire.events import Event, Start, TextDelta, load_jsonl

__all__ = ["Replay"]


class Replay:
    """Replays ``events`` (or a JSONL transcript path).

    ``speed``: 1.0 keeps the recorded pauses, 2.0 halves them, None replays as fast as possible.
    ``sleep`` waits for a pause (``asyncio.sleep``; tests pass a recorder instead of a clock).
    """

    chooses_model = False
    """It plays what it was given, whatever model a request names."""

    def __init__(
        self,
        events: Iterable[Event] | str | os.PathLike[str],
        *,
        speed: float | None = 1.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ):
        if isinstance(events, str | os.PathLike):
            events = load_jsonl(events)
        self.events = list(events)
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be > 0 or None, got {speed!r}")
        self.speed = speed
        self._sleep = sleep
        starts = [e for e in self.events if isinstance(e, Start)]
        self.model = starts[0].model if starts else "replay"

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        prev_ts: float | None = None
        for event in self.events:
            if isinstance(event, Start):
                prev_ts = event.ts
                continue
            if self.speed is not None and prev_ts is not None and event.ts > prev_ts:
                await self._sleep((event.ts - prev_ts) / self.speed)
            prev_ts = event.ts
            yield event.text if isinstance(event, TextDelta) else event
