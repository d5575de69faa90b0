"""Durable schedules in Redis: records due later, in a sorted set scored by due time.

Claiming moves due items to an in-flight set atomically, so two workers never release the same item,
and an item claimed by a worker that died before re-emitting it is put back by `requeue_stale`.
Two schedules exist: deliveries whose `send_at` is ahead, and dispatches parked while another
claim on the same send is unresolved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

from records.topics import Delivery, Dispatch

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

Item = TypeVar("Item", bound=BaseModel)
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


@dataclass(frozen=True)
class Held(Generic[Item]):
    """An item a schedule still holds: due at `due`, or claimed by a worker re-emitting it (`due` None)."""

    item: Item
    due: datetime | None


class Schedule(Generic[Item]):
    """Items waiting for their time; `ident` names an item, so scheduling one twice keeps one."""

    def __init__(self, redis: Redis, name: str, model: type[Item], ident: Callable[[Item], str]) -> None:
        self._redis = redis
        self._model = model
        self._ident = ident
        self._due, self._inflight, self._bodies = f"{name}", f"{name}:inflight", f"{name}:body"
        self._claim = redis.register_script(_CLAIM)
        self._requeue = redis.register_script(_REQUEUE)

    async def add(self, item: Item, due: datetime) -> None:
        await self.add_many([(item, due)])

    async def add_many(self, items: Sequence[tuple[Item, datetime]]) -> None:
        """Schedule every (item, due) in one round trip: a paced campaign parks thousands at once."""
        if not items:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for item, due in items:
                ident = self._ident(item)
                pipe.hset(self._bodies, ident, item.model_dump_json())
                pipe.zadd(self._due, {ident: due.timestamp()})
            await pipe.execute()

    async def size(self) -> int:
        """How many items it holds, due or claimed (the `waiting` gauges of the metrics)."""
        return int(await self._redis.hlen(self._bodies))

    async def due_within(self, seconds: float, now: float | None = None) -> int:
        """How many items fall due within `seconds` from now, or are claimed and not yet done."""
        until = (time.time() if now is None else now) + seconds
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self._due, "-inf", until)
            pipe.zcard(self._inflight)
            due, inflight = await pipe.execute()
        return int(due) + int(inflight)

    async def held(self, idents: Sequence[str]) -> list[Held[Item]]:
        """The items named `idents` that are still waiting or claimed; read-only (for `why`)."""
        if not idents:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._bodies, list(idents))
            for ident in idents:
                pipe.zscore(self._due, ident)
            bodies, *scores = await pipe.execute()
        return [
            Held(self._model.model_validate_json(body), _moment(score))
            for body, score in zip(bodies, scores, strict=True)
            if body is not None
        ]

    async def idents_starting(self, prefix: str, count: int = 1000) -> list[str]:
        """Names of held items beginning with `prefix` (scans the bodies: for inspection, not the flow)."""
        pattern = prefix.translate(_GLOB) + "*"
        found = [
            key.decode() if isinstance(key, bytes) else str(key)
            async for key, _ in self._redis.hscan_iter(self._bodies, match=pattern, count=count)
        ]
        return sorted(found)

    async def claim_due(self, limit: int = 500, now: float | None = None) -> list[Item]:
        at = time.time() if now is None else now
        bodies = await self._claim(keys=[self._due, self._inflight, self._bodies], args=[at, limit, at])
        return [self._model.model_validate_json(b) for b in bodies if b is not None]

    async def done(self, items: list[Item]) -> None:
        """Forget items whose re-emission is confirmed."""
        if not items:
            return
        idents = [self._ident(item) for item in items]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._inflight, *idents)
            pipe.hdel(self._bodies, *idents)
            await pipe.execute()

    async def requeue_stale(self, older_than_seconds: float = 60.0, now: float | None = None) -> int:
        """Put back items claimed more than `older_than_seconds` ago and never done; `now` is on the
        clock `claim_due` was given (claims are stamped with it), the real one by default."""
        at = time.time() if now is None else now
        return int(
            await self._requeue(keys=[self._due, self._inflight], args=[at - older_than_seconds, at])
        )


def _moment(score: float | None) -> datetime | None:
    return None if score is None else datetime.fromtimestamp(float(score), UTC)


class DeliverySchedule(Schedule[Delivery]):
    """Deliveries whose `send_at` is still ahead, decided again when due."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, "sb:schedule", Delivery, lambda d: d.message_id)


class ParkedDispatches(Schedule[Dispatch]):
    """Dispatches waiting to go out: for a lapsed claim, a cap's window, a pacing slot, quiet hours' end."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, "sb:parked", Dispatch, lambda d: f"{d.message_id}:{d.channel}:{d.step}")

    async def held_for(self, message_id: str) -> list[Held[Dispatch]]:
        """Every parked dispatch of one message (any channel, any step)."""
        return await self.held(await self.idents_starting(f"{message_id}:"))
