"""What the nodes sharing a Redis log tell each other besides events: which streams have readers
where (so a producer does not cancel a run read on another node as abandoned), single-use claims
(tickets), and cancels routed to the node that produces a run (a pub/sub control channel: one
channel on one instance; on a cluster, one sharded channel per shard, ``SPUBLISH`` /
``SSUBSCRIBE``, so a cancel travels to one master instead of every node of the cluster).
Mixed into :class:`~tokenwire.log.redis.RedisLog`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from tokenwire.log.redis_keys import KeyLayout
from tokenwire.log.redis_writer import REDIS_ERRORS

__all__ = ["RedisControl"]

logger = logging.getLogger("tokenwire")


class RedisControl:
    """Reader presence, claims and the control channel of a Redis log (see the module docstring)."""

    prefix: str
    keys: KeyLayout
    cluster: bool
    _listener: asyncio.Task[None] | None

    async def client(self) -> Any:
        raise NotImplementedError

    def key(self, stream_id: str) -> str:
        raise NotImplementedError

    # -- reader presence: a producing node sees readers on other nodes ---------------------------------

    def readers_key(self, stream_id: str) -> str:
        return self.key(stream_id) + ":readers"

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        claimed = await (await self.client()).set(
            f"{self.prefix}:once:{key}", b"1", nx=True, px=max(1, round(ttl_s * 1000))
        )
        return bool(claimed)

    async def announce_readers(self, stream_ids: Sequence[str], ttl_s: float) -> None:
        pipe: Any = (await self.client()).pipeline(transaction=False)
        for sid in stream_ids:
            pipe.set(self.readers_key(sid), b"1", px=max(1, round(ttl_s * 1000)))
        await pipe.execute()

    async def read_elsewhere(self, stream_ids: Sequence[str]) -> set[str]:
        pipe: Any = (await self.client()).pipeline(transaction=False)
        for sid in stream_ids:
            pipe.exists(self.readers_key(sid))
        found = await pipe.execute()
        return {sid for sid, n in zip(stream_ids, found, strict=True) if n}

    # -- control: cancels routed to the producing node ------------------------------------------------

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    async def forward_cancel(self, stream_id: str, reason: str) -> bool:
        message = msgspec.json.encode({"op": "cancel", "stream_id": stream_id, "reason": reason})
        r = await self.client()
        if self.cluster:
            receivers: int = await r.spublish(self.keys.channel(self.keys.shard(stream_id)), message)
        else:
            receivers = await r.publish(self.control_channel, message)
        return receivers > 0

    def listen_cancels(self, handler: Callable[[str, str], None]) -> None:
        """Start (once) the task that hears forwarded cancels; owned by this log, ended by aclose()."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(handler), name="tokenwire-control")

    async def _listen(self, handler: Callable[[str, str], None]) -> None:
        failures = 0
        while True:
            try:
                r = await self.client()
                async with r.pubsub() as pubsub:
                    if self.cluster:
                        await pubsub.ssubscribe(*(self.keys.channel(i) for i in range(self.keys.shards)))
                    else:
                        await pubsub.subscribe(self.control_channel)
                    if failures:
                        logger.warning("event log: control channel back after %d failed attempts", failures)
                    failures = 0
                    async for message in self._messages(pubsub):
                        try:
                            body = msgspec.json.decode(message["data"])
                            handler(str(body["stream_id"]), str(body.get("reason") or "cancelled on another node"))
                        except (msgspec.DecodeError, KeyError, TypeError):
                            logger.warning("event log: ignored a malformed control message")
            except REDIS_ERRORS as exc:
                # Once per outage at warning level, then quietly, with backoff (0.5 s doubling to 8 s).
                level = logging.WARNING if failures == 0 else logging.DEBUG
                logger.log(level, "event log: control channel lost (%s); reconnecting", exc)
                await asyncio.sleep(min(8.0, 0.5 * 2 ** min(failures, 4)))
                failures += 1

    async def _messages(self, pubsub: Any) -> Any:
        """The control messages one subscription hears, polled (a blocking read would end at the
        pool's ``command_timeout_s``; sharded ones are polled node by node)."""
        while True:
            if self.cluster:
                message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
            else:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") in ("message", "smessage"):
                yield message
