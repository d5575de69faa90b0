"""Durable schedules in Redis: records due later, in a sorted set scored by due time.

Claiming moves due items to an in-flight set atomically, so two workers never release the same item,
and an item claimed by a worker that died before re-emitting it is put back by `requeue_stale`.
Two schedules exist: deliveries whose `send_at` is ahead, and dispatches parked while another
claim on the same send is unresolved.

Each schedule is split into `keyspace.SHARDS` shards so it spreads over a Redis Cluster: shard `{t}`
of schedule `name` is `name:{t}` (due set), `name:{t}:inflight` and `name:{t}:body`, and an item
lives in the shard of its `shard_key` (the message id), so every script touches one slot.
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
from state.keyspace import SHARD_TAGS, shard_of, share

# KEYS: one shard's due set, in-flight set and bodies. ARGV: now, limit, claim stamp.
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

# KEYS: one shard's due set and bodies. ARGV: (ident, due, body) per item: body and due entry together.
_ADD = """
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
return #ARGV / 3
"""

# KEYS: one shard's in-flight set and bodies. ARGV: idents re-emitted.
_DONE = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return 0
"""

Item = TypeVar("Item", bound=BaseModel)
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


@dataclass(frozen=True)
class Held(Generic[Item]):
    """An item a schedule still holds: due at `due`, or claimed by a worker re-emitting it (`due` None)."""

    item: Item
    due: datetime | None


@dataclass(frozen=True)
class Shard:
    """The keys of one shard of a schedule: due set, in-flight set, bodies (one hash tag)."""

    due: str
    inflight: str
    bodies: str


def schedule_shards(name: str) -> tuple[Shard, ...]:
    return tuple(Shard(f"{name}:{t}", f"{name}:{t}:inflight", f"{name}:{t}:body") for t in SHARD_TAGS)


class Schedule(Generic[Item]):
    """Items waiting for their time; `ident` names an item, so scheduling one twice keeps one.
    `shard_key` picks its shard (default: its ident)."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        model: type[Item],
        ident: Callable[[Item], str],
        shard_key: Callable[[Item], str] | None = None,
    ) -> None:
        self._redis = redis
        self._model = model
        self._ident = ident
        self._shard_key = shard_key or ident
        self.shards = schedule_shards(name)
        self._claim = redis.register_script(_CLAIM)
        self._requeue = redis.register_script(_REQUEUE)
        self._add = redis.register_script(_ADD)
        self._done = redis.register_script(_DONE)

    def shard(self, item: Item) -> Shard:
        return self.shards[shard_of(self._shard_key(item))]

    async def add(self, item: Item, due: datetime) -> None:
        await self.add_many([(item, due)])

    async def add_many(self, items: Sequence[tuple[Item, datetime]]) -> None:
        """Schedule every (item, due) in one round trip: a paced campaign parks thousands at once."""
        if not items:
            return
        by_shard: dict[Shard, list[str | float]] = {}
        for item, due in items:
            by_shard.setdefault(self.shard(item), []).extend(
                [self._ident(item), due.timestamp(), item.model_dump_json()]
            )
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, args in by_shard.items():
                await self._add(keys=[shard.due, shard.bodies], args=args, client=pipe)
            await pipe.execute()

    async def size(self) -> int:
        """How many items it holds, due or claimed (the `waiting` gauges of the metrics)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.hlen(shard.bodies)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)

    async def due_within(self, seconds: float, now: float | None = None) -> int:
        """How many items fall due within `seconds` from now, or are claimed and not yet done."""
        until = (time.time() if now is None else now) + seconds
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.zcount(shard.due, "-inf", until)
                pipe.zcard(shard.inflight)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)

    async def held(self, idents: Sequence[str]) -> list[Held[Item]]:
        """The items named `idents` that are still waiting or claimed; read-only (for `why`)."""
        if not idents:
            return []
        found: list[Held[Item]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.hmget(shard.bodies, list(idents))
            bodies = await pipe.execute()
        located = [
            (shard, ident, body)
            for shard, answer in zip(self.shards, bodies, strict=True)
            for ident, body in zip(idents, answer, strict=True)
            if body is not None
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, ident, _ in located:
                pipe.zscore(shard.due, ident)
            scores = await pipe.execute()
        for (_, _, body), score in zip(located, scores, strict=True):
            found.append(Held(self._model.model_validate_json(body), _moment(score)))
        return found

    async def idents_starting(self, prefix: str, count: int = 1000) -> list[str]:
        """Names of held items beginning with `prefix` (scans the bodies: for inspection, not the flow)."""
        pattern = prefix.translate(_GLOB) + "*"
        found = [
            key.decode() if isinstance(key, bytes) else str(key)
            for shard in self.shards
            async for key, _ in self._redis.hscan_iter(shard.bodies, match=pattern, count=count)
        ]
        return sorted(found)

    async def claim_due(self, limit: int = 500, now: float | None = None) -> list[Item]:
        """Up to `limit` items due by `now`, moved to in-flight; fewer than `limit` when no more are due.

        The due items are counted per shard first, so `limit` is shared among the shards holding them."""
        at = time.time() if now is None else now
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.zcount(shard.due, "-inf", at)
            counts = [int(c) for c in await pipe.execute()]
        takes = share(limit, counts)
        if not any(takes):
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, take in zip(self.shards, takes, strict=True):
                if take:
                    await self._claim(
                        keys=[shard.due, shard.inflight, shard.bodies], args=[at, take, at], client=pipe
                    )
            answers = await pipe.execute()
        return [self._model.model_validate_json(b) for bodies in answers for b in bodies if b is not None]

    async def done(self, items: list[Item]) -> None:
        """Forget items whose re-emission is confirmed."""
        if not items:
            return
        by_shard: dict[Shard, list[str]] = {}
        for item in items:
            by_shard.setdefault(self.shard(item), []).append(self._ident(item))
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, idents in by_shard.items():
                await self._done(keys=[shard.inflight, shard.bodies], args=idents, client=pipe)
            await pipe.execute()

    async def requeue_stale(self, older_than_seconds: float = 60.0, now: float | None = None) -> int:
        """Put back items claimed more than `older_than_seconds` ago and never done; `now` is on the
        clock `claim_due` was given (claims are stamped with it), the real one by default."""
        at = time.time() if now is None else now
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                await self._requeue(
                    keys=[shard.due, shard.inflight], args=[at - older_than_seconds, at], client=pipe
                )
            counts = await pipe.execute()
        return sum(int(c) for c in counts)


def _moment(score: float | None) -> datetime | None:
    return None if score is None else datetime.fromtimestamp(float(score), UTC)


class DeliverySchedule(Schedule[Delivery]):
    """Deliveries whose `send_at` is still ahead, decided again when due."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, "sb:schedule", Delivery, lambda d: d.message_id)


class ParkedDispatches(Schedule[Dispatch]):
    """Dispatches waiting to go out: for a lapsed claim, a cap's window, a pacing slot, quiet hours' end."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(
            redis,
            "sb:parked",
            Dispatch,
            lambda d: f"{d.message_id}:{d.channel}:{d.step}",
            shard_key=lambda d: d.message_id,
        )

    async def held_for(self, message_id: str) -> list[Held[Dispatch]]:
        """Every parked dispatch of one message (any channel, any step)."""
        return await self.held(await self.idents_starting(f"{message_id}:"))
