"""Run ownership on Redis (:class:`~tokenwire.log.ownership.RunOwnership`): leases as fencing
tokens, run definitions, and one sorted set of the durable runs by when a supervisor should look
at them.

Keys, beside a stream's (:mod:`tokenwire.log.redis_keys`; all in the stream's shard's slot):

- ``…:lease`` — the producer's token (expires ``lease_s`` after its last refresh), or
  ``suspended`` (expires with the stream);
- ``…:run`` — the run's definition; it expires with the stream once the terminal is written;
- the shard's ``#due`` — durable run ids scored by the wall time (ms) a supervisor should look at
  them: a live producer's lease expiry (pushed on with every refresh), a suspended run's deadline.

Every change of a lease is one script on one slot (Redis Cluster allows no more), so each is
atomic: of three nodes claiming one run, one wins; a producer refreshes, suspends or releases
only a lease that is still its own; and the append script
(:data:`tokenwire.log.redis_writer.APPEND_SCRIPT`) writes only for the token that holds the lease.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from tokenwire.errors import LogUnavailable
from tokenwire.log.ownership import MAX_INDEXED, SUSPENDED, RunOwnership
from tokenwire.log.redis_keys import KeyLayout
from tokenwire.log.redis_writer import REDIS_ERRORS

__all__ = ["OwnershipHost", "RedisOwnership"]

RENEW = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[6], ARGV[5])
return 1
"""
"""A producer's heartbeat: take or refresh the lease unless another token holds it or the stream
has ended (0: it lost the run to another node, the run is suspended, or another node ended it);
list a durable run as due at the lease's expiry; keep the stream, the run's definition and the
byte count ``idle_ttl_s`` ahead while it is live (a tool call may append nothing for longer)."""

CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == false then
  if ARGV[1] == 'suspended' then return 0 end
elseif v ~= 'suspended' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
return 1
"""

SUSPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
-- A suspended run's keys live until its deadline and a day (the stream's idle expiry) beyond.
local ttl = tonumber(ARGV[4])
local ttl_ms = redis.call('PTTL', KEYS[3])
if ttl_ms > ttl then ttl = ttl_ms end
redis.call('SET', KEYS[1], 'suspended', 'PX', ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl, 'GT')
redis.call('PEXPIRE', KEYS[5], ttl)
return 1
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""


INDEX = """
local n = redis.call('INCR', KEYS[2]) - 1
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', n - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""
"""List a run under its owner at the next position and keep the newest ``MAX_INDEXED``, for as
long as a run's keys (``idle_ttl_s`` after the owner's last new run). The count of runs listed
never expires (a few bytes per API key): a position is never given twice, so a reader's cursor
stays true however long it was away."""


class OwnershipHost(Protocol):
    """What :class:`RedisOwnership` needs of its log (:class:`~tokenwire.log.redis.RedisLog`)."""

    prefix: str
    lease_s: float
    idle_ttl_s: float
    index_poll_s: float
    keys: KeyLayout
    clock: Callable[[], float]

    async def client(self) -> Any: ...

    def key(self, stream_id: str) -> str: ...

    def lease_key(self, stream_id: str) -> str: ...

    def run_key(self, stream_id: str) -> str: ...


def _ms(t: float) -> int:
    return round(t * 1000)


CLOCK_SYNC_S = 60.0
"""How often a node measures its clock against Redis's: every due score is in Redis's time."""


class RedisOwnership(RunOwnership):
    """Run ownership of a :class:`~tokenwire.log.redis.RedisLog` (see the module docstring)."""

    def __init__(self, log: OwnershipHost):
        self._log = log
        self._scripts: dict[str, Any] = {}
        self._offset = 0.0
        self._synced_at: float | None = None  # monotonic

    async def _score(self, t: float) -> int:
        """The node's wall time ``t`` (``log.clock``'s) as a score on Redis's clock, the one every
        node's scores share: a node whose clock is off neither delays another's takeover of its
        runs (a clock ahead) nor has them taken over early (behind). The offset is measured with
        ``TIME`` every :data:`CLOCK_SYNC_S`, halfway through the round trip."""
        mono = time.monotonic()
        if self._synced_at is None or mono - self._synced_at >= CLOCK_SYNC_S:
            clock = self._log.clock
            before = clock()
            seconds, micros = await (await self._log.client()).time()
            self._offset = seconds + micros / 1e6 - (before + clock()) / 2
            self._synced_at = mono
        return _ms(t + self._offset)

    async def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = (await self._log.client()).register_script(source)
        return script

    def run_key(self, stream_id: str) -> str:
        return self._log.run_key(stream_id)

    def due_key(self, stream_id: str) -> str:
        """The due set of the stream's shard (in the slot of the stream's lease)."""
        return self._log.keys.due_key(self._log.keys.shard(stream_id))

    async def save_run(self, stream_id: str, record: bytes) -> None:
        try:
            # Kept as long as the stream: every append and heartbeat push both ``idle_ttl_s`` ahead.
            await (await self._log.client()).set(self.run_key(stream_id), record, px=_ms(self._log.idle_ttl_s))
        except REDIS_ERRORS as exc:
            raise LogUnavailable(f"Redis did not take the run's definition: {exc}") from None

    async def load_run(self, stream_id: str) -> bytes | None:
        data = await (await self._log.client()).get(self.run_key(stream_id))
        return data.encode() if isinstance(data, str) else data

    async def name_run(self, owner: str, name: str, value: bytes) -> None:
        try:
            await (await self._log.client()).set(self._name_key(owner, name), value, px=_ms(self._log.idle_ttl_s))
        except REDIS_ERRORS as exc:
            raise LogUnavailable(f"Redis did not take the run's name: {exc}") from None

    async def named_run(self, owner: str, name: str) -> bytes | None:
        try:
            data = await (await self._log.client()).get(self._name_key(owner, name))
        except REDIS_ERRORS as exc:
            raise LogUnavailable(f"Redis did not answer for the run's name: {exc}") from None
        return data.encode() if isinstance(data, str) else data

    def _name_key(self, owner: str, name: str) -> str:
        """A client's name for a run, hashed (it is the client's string: any length, any bytes)."""
        return f"{self._log.keys.owner_key(owner)}:name:{hashlib.sha256(name.encode()).hexdigest()[:32]}"

    async def renew(self, stream_id: str, token: str, *, durable: bool) -> bool:
        """The producer's heartbeat (see :data:`RENEW`)."""
        log = self._log
        expiry = str(await self._score(log.clock() + log.lease_s)) if durable else ""
        args = [token, _ms(log.lease_s), stream_id, expiry, _ms(log.idle_ttl_s)]
        key = log.key(stream_id)
        keys = [log.lease_key(stream_id), self.due_key(stream_id), key, self.run_key(stream_id), key + ":end"]
        keys.append(key + ":bytes")
        return bool(await (await self._script("renew", RENEW))(keys=keys, args=args))

    async def claim(self, stream_id: str, token: str, *, suspended_only: bool = False) -> bool:
        log = self._log
        mode = SUSPENDED if suspended_only else "any"
        args = [mode, token, _ms(log.lease_s), stream_id, await self._score(log.clock() + log.lease_s)]
        keys = [log.lease_key(stream_id), self.due_key(stream_id)]
        return bool(await (await self._script("claim", CLAIM))(keys=keys, args=args))

    async def suspend(self, stream_id: str, token: str, until: float) -> bool:
        log = self._log
        key = log.key(stream_id)
        keys = [log.lease_key(stream_id), self.due_key(stream_id), key, self.run_key(stream_id), key + ":bytes"]
        keep = _ms(max(0.0, until - log.clock()) + log.idle_ttl_s)
        args = [token, stream_id, await self._score(until), keep]
        return bool(await (await self._script("suspend", SUSPEND))(keys=keys, args=args))

    async def release(self, stream_id: str, token: str) -> None:
        keys = [self._log.lease_key(stream_id), self.due_key(stream_id)]
        await (await self._script("release", RELEASE))(keys=keys, args=[token, stream_id])

    async def due(self, now: float, limit: int = 32) -> list[str]:
        """The due runs of every shard, the most overdue first (one pipelined read per shard)."""
        cutoff = await self._score(now)
        pipe: Any = (await self._log.client()).pipeline(transaction=False)
        for shard in range(self._log.keys.shards):
            pipe.zrangebyscore(self._log.keys.due_key(shard), "-inf", cutoff, start=0, num=limit, withscores=True)
        found = [(score, i) for rows in await pipe.execute() for i, score in rows]
        found.sort()
        return [i.decode() if isinstance(i, bytes) else str(i) for _, i in found[:limit]]

    async def forget(self, stream_id: str) -> None:
        await (await self._log.client()).zrem(self.due_key(stream_id), stream_id)

    async def present(self, node: str, now: float, within_s: float, *, kind: str = "") -> int:
        key = f"{self._log.prefix}:runs:nodes"
        at, within = await self._score(now), _ms(within_s)
        pipe: Any = (await self._log.client()).pipeline(transaction=False)
        pipe.zadd(key, {f"{kind}/{node}": at})
        pipe.zremrangebyscore(key, "-inf", at - 10 * within)  # long gone nodes
        pipe.zrangebyscore(key, at - within, "+inf")
        members = (await pipe.execute())[2]
        same = [m for m in members if (m.decode() if isinstance(m, bytes) else m).startswith(f"{kind}/")]
        return max(0, len(same) - 1)

    async def absent(self, node: str, *, kind: str = "") -> None:
        await (await self._log.client()).zrem(f"{self._log.prefix}:runs:nodes", f"{kind}/{node}")

    async def lease_state(self, stream_id: str) -> str | None:
        value = await (await self._log.client()).get(self._log.lease_key(stream_id))
        return value.decode() if isinstance(value, bytes) else value

    async def index_run(self, owner: str, stream_id: str) -> None:
        key = self._log.keys.owner_key(owner)
        args = [stream_id, MAX_INDEXED, _ms(self._log.idle_ttl_s)]
        try:
            await (await self._script("index", INDEX))(keys=[key, key + ":n"], args=args)
        except REDIS_ERRORS as exc:
            raise LogUnavailable(f"Redis did not list the run under its owner: {exc}") from None

    async def latest_runs(self, owner: str, count: int) -> tuple[int, list[str]]:
        key = self._log.keys.owner_key(owner)
        pipe: Any = (await self._log.client()).pipeline(transaction=False)
        pipe.get(key + ":n")
        if count > 0:
            pipe.zrange(key, -count, -1)
        listed, *rows = await pipe.execute()
        return int(listed or 0), [sid.decode() if isinstance(sid, bytes) else str(sid) for sid in (rows or [[]])[0]]

    async def runs_of(self, owner: str, from_pos: int, *, wait_s: float) -> list[tuple[int, str]]:
        """Polls every ``index_poll_s`` while it waits: a new run is seen that long after it is
        listed, at most (its events are read as they come, as any stream's)."""
        client, key = await self._log.client(), self._log.keys.owner_key(owner)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        while True:
            rows = await client.zrangebyscore(key, from_pos, "+inf", start=0, num=256, withscores=True)
            if rows or loop.time() >= until:
                return [(int(pos), sid.decode() if isinstance(sid, bytes) else str(sid)) for sid, pos in rows]
            await asyncio.sleep(min(self._log.index_poll_s, max(0.0, until - loop.time())))
