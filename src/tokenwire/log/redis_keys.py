"""Where a stream's keys live in Redis, the same on one instance and on a Redis Cluster.

Redis Cluster runs a command (or a script) on several keys only when they hash to one slot, and
a blocking ``XREAD`` over several streams only when every stream is in that slot. So each stream
belongs to one of ``shards`` shards (by a CRC-32 of its id), and every key of the stream carries
its shard's hash tag:

- ``{prefix}:{<tag>}:<stream_id>`` — the events (a Redis stream), and beside it, with the same
  tag, ``…:end`` (the terminal), ``…:lease``, ``…:run`` (a durable run's definition),
  ``…:readers`` (readers on other nodes), ``…:bytes`` (the bytes retained);
- ``{prefix}:{<tag>}#due`` — the shard's durable runs by when a supervisor should look at them;
- ``{prefix}:{<tag>}#control`` — the shard's control channel (sharded pub/sub on a cluster);
- ``{prefix}:{<tag>}#wake:<process>`` — a reading process's wake-up stream for the shard;
- ``{prefix}:{<tag>}#owner:<owner>`` — an owner's runs (a sorted set by position), with
  ``…:n``, the count of runs listed; the tag is that of the owner's id, as for a stream's.

A stream's append script, its lease scripts and its shard's blocking read each touch one slot.
The tags are chosen so that the shards' slots are spread evenly over the 16,384 slots: the masters
a cluster is created with (each an equal run of slots) get an equal share of the shards, and of
the writes. Every node sharing a log must use the same ``prefix`` and ``shards``: both name keys.

>>> keys = KeyLayout("demo", shards=4)
>>> keys.key("s1"), keys.due_key(0)
('demo:{s0.0}:s1', 'demo:{s0.0}#due')
"""

from __future__ import annotations

import functools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["SHARDS", "KeyLayout", "shard_tags"]

SHARDS = 24
"""Default shard count: on a cluster, at most this many blocking reads per reading process; 24
spreads evenly over 2, 3, 4, 6, 8 or 12 masters."""


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """One hash tag per shard, the i-th hashing into the i-th of ``shards`` equal runs of slots.

    >>> [key_slot(("{%s}" % t).encode()) * 4 // 16384 for t in shard_tags(4)]
    [0, 1, 2, 3]
    """
    tags = []
    for i in range(shards):
        lo, hi = i * REDIS_CLUSTER_HASH_SLOTS // shards, (i + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        j = 0
        while not lo <= key_slot(f"s{i}.{j}".encode()) < hi:
            j += 1
        tags.append(f"s{i}.{j}")
    return tuple(tags)


class KeyLayout:
    """The names of a log's keys (see the module docstring)."""

    __slots__ = ("_tags", "prefix", "shards")

    def __init__(self, prefix: str, shards: int = SHARDS):
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a Redis log's prefix may not hold braces (they make hash tags), got {prefix!r}")
        if not 1 <= shards <= 1024:
            raise ValueError(f"shards is 1 to 1024, got {shards}")
        self.prefix = prefix
        self.shards = shards
        self._tags = tuple(f"{prefix}:{{{t}}}" for t in shard_tags(shards))

    def shard(self, stream_id: str) -> int:
        """The stream's shard (the same in every process: CRC-32, not Python's salted hash)."""
        return zlib.crc32(stream_id.encode()) % self.shards

    def key(self, stream_id: str) -> str:
        """The stream's events; its other keys are this plus ``:end``, ``:lease``, ``:run``, ..."""
        return f"{self._tags[self.shard(stream_id)]}:{stream_id}"

    def due_key(self, shard: int) -> str:
        return f"{self._tags[shard]}#due"

    def channel(self, shard: int) -> str:
        return f"{self._tags[shard]}#control"

    def wake_key(self, shard: int, process: str) -> str:
        return f"{self._tags[shard]}#wake:{process}"

    def owner_key(self, owner: str) -> str:
        """The sorted set of ``owner``'s runs (its counter is this plus ``:n``)."""
        return f"{self._tags[self.shard(owner)]}#owner:{owner}"
