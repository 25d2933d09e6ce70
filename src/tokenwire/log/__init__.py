"""The event log: the append-only backbone every consumer reads with a cursor.

A run's producer (the engine) appends its events through the :class:`StreamWriter` that
:meth:`EventLog.open` returns, and does nothing else per event. Every consumer reads the log from
a position:

- **inline readers** (the stream's observers) are called by :meth:`StreamWriter.append` itself,
  in order, before it returns: zero copies, no task switch, and an async observer holds the
  producer (natural backpressure);
- **cursors** (:meth:`StreamWriter.cursor`: async iterators, queued observers) read the stored
  events from their own position, in batches; their overflow policy says what happens when one
  lags (the producer waits, the oldest events are skipped, deltas are merged, or the cursor is
  detached) — a lagging cursor costs its position, never a copy of the events;
- **readers** (:meth:`EventLog.read` / :meth:`EventLog.batches`: SSE and WebSocket connections,
  late joiners, other processes) never hold the producer; one that falls behind retention gets
  :class:`~tokenwire.errors.SeqEvicted` and resumes from the oldest retained seq.

Resume, replay, late join and fan-out are all "read from seq N, then tail" (DESIGN.md). The
interface is shaped for a networked backend too (Redis Streams): ``append`` never blocks on I/O,
``flush`` is the durability point the engine awaits after the terminal event, reads are async.

>>> import asyncio
>>> from tokenwire.events import Start, Done
>>> async def demo():
...     log = MemoryLog()
...     w = log.open("s1")
...     w.append(Start(model="m", stream_id="s1", seq=0))
...     w.append(Done(stream_id="s1", seq=1))
...     return [e.type for e in [ev async for ev in log.read("s1")]], (await log.info("s1")).next_seq
>>> asyncio.run(demo())
(['start', 'done'], 2)
"""

from tokenwire.log.base import OVERFLOWS, Cursor, EventLog, Overflow, StreamInfo, StreamWriter
from tokenwire.log.memory import MemoryLog, Ring, StreamRing
from tokenwire.log.owned import OWNED, live_runs, owned_batches, subscription_cursor
from tokenwire.log.tree import TreeCursor, child_started
from tokenwire.log.tree_read import check_tree, follow_tree, read_tree
from tokenwire.log.url import configured_log_url, default_log, log_from_url, log_kind

__all__ = [
    "OVERFLOWS",
    "OWNED",
    "Cursor",
    "EventLog",
    "MemoryLog",
    "Overflow",
    "Ring",
    "StreamInfo",
    "StreamRing",
    "StreamWriter",
    "TreeCursor",
    "check_tree",
    "child_started",
    "configured_log_url",
    "default_log",
    "follow_tree",
    "live_runs",
    "log_from_url",
    "log_kind",
    "owned_batches",
    "read_tree",
    "subscription_cursor",
]
