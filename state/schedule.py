"""The durable schedule of deliveries due later, a sorted set in Redis scored by due time.

Claiming moves due items to an in-flight set atomically, so two workers never release the same item,
and an item claimed by a worker that died before re-emitting it is put back by `requeue_stale`.
"""

from __future__ import annotations

import time
from datetime import datetime

from redis.asyncio import Redis

from processors.records import Delivery

_DUE = "sb:schedule"
_INFLIGHT = "sb:schedule:inflight"
_BODIES = "sb:schedule:body"

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
if #due == 0 then return {} end
return redis.call('HMGET', KEYS[3], unpack(due))
"""

_REQUEUE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return #stale
"""


class DeliverySchedule:
    """Deliveries waiting for their time; ids are message ids, so rescheduling is idempotent."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._requeue = redis.register_script(_REQUEUE)

    async def add(self, delivery: Delivery, due: datetime) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_BODIES, delivery.message_id, delivery.model_dump_json())
            pipe.zadd(_DUE, {delivery.message_id: due.timestamp()})
            await pipe.execute()

    async def claim_due(self, limit: int = 500, now: float | None = None) -> list[Delivery]:
        at = time.time() if now is None else now
        bodies = await self._claim(keys=[_DUE, _INFLIGHT, _BODIES], args=[at, limit, at])
        return [Delivery.model_validate_json(b) for b in bodies if b is not None]

    async def done(self, message_ids: list[str]) -> None:
        """Forget items whose re-emission is confirmed."""
        if not message_ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(_INFLIGHT, *message_ids)
            pipe.hdel(_BODIES, *message_ids)
            await pipe.execute()

    async def requeue_stale(self, older_than_seconds: float = 60.0) -> int:
        now = time.time()
        return int(await self._requeue(keys=[_DUE, _INFLIGHT], args=[now - older_than_seconds, now]))

    async def pending(self) -> int:
        return int(await self._redis.zcard(_DUE)) + int(await self._redis.zcard(_INFLIGHT))
