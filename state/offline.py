"""离线保存 (offline keep): deliveries for a user no channel reaches now, kept until one does.

Redis layout, per shard `{t}` of the users (`state.keyspace`: a user's keys and the index entry
naming them share a hash tag, so each script runs in one Redis Cluster slot):
`sb:offline:{t}:kept:{user}` hash of message id → the kept delivery with the user's bindings at
keep time and its deadline; `sb:offline:{t}:users` set of the shard's users holding kept deliveries;
`sb:offline:{t}:deadline:{message}` the deadline fixed at the first keep, so a delivery released,
decided again and kept again does not get a fresh time-to-live. A user is reachable again when a
binding was added or changed since the keep; the delivery is then released to be decided again.

Release can be two-phase, like the schedules: `due_for_release(confirm=True)` leases what it hands out
(`sb:offline:{t}:lease:{user}`, message id → lease end), and `done` forgets it once the caller has
re-emitted it. A caller dying in between loses nothing: the lease lapses and the next call hands the
delivery out again (the send ledger stops a second send). Keeping a message again clears its lease,
so `done` of the earlier release cannot delete the fresh keep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from records.topics import Delivery, Receipt
from state.keyspace import SHARD_TAGS, shard_tag
from state.users import User, UserDirectory

LEASE_MS = 60_000
BATCH = 500
USER_INDEXES = tuple(f"sb:offline:{t}:users" for t in SHARD_TAGS)


def kept_key(user_id: str) -> str:
    return f"sb:offline:{shard_tag(user_id)}:kept:{user_id}"


def lease_key(user_id: str) -> str:
    return f"sb:offline:{shard_tag(user_id)}:lease:{user_id}"


def users_key(user_id: str) -> str:
    """The index of the shard holding `user_id`'s kept deliveries."""
    return f"sb:offline:{shard_tag(user_id)}:users"


def deadline_key(user_id: str, message_id: str) -> str:
    return f"sb:offline:{shard_tag(user_id)}:deadline:{message_id}"

# KEYS: deadline, kept hash, users set, lease hash. ARGV: deadline (ms), ttl (ms), message id, the
# kept body as JSON without its closing brace, user id. The deadline of an earlier keep wins.
_KEEP = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local deadline = redis.call('GET', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ',"until":' .. deadline .. '}')
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
return deadline
"""

# KEYS: kept hash, lease hash. ARGV: now (ms), lease end (ms), message ids. Answers 1 per id this
# call leased: still kept, and not leased or its lease lapsed.
_LEASE = """
local now = tonumber(ARGV[1])
local leased = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local held = redis.call('HGET', KEYS[2], id)
  if redis.call('HEXISTS', KEYS[1], id) == 1 and (not held or tonumber(held) <= now) then
    redis.call('HSET', KEYS[2], id, ARGV[2])
    leased[i - 2] = 1
  else
    leased[i - 2] = 0
  end
end
return leased
"""

# KEYS: kept hash, lease hash, users set. ARGV: user id, message ids. Forgets the leased ones (a
# message kept again since has no lease and stays) and drops the user from the index once empty.
_DONE = """
local forgotten = 0
for i = 2, #ARGV do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then
    forgotten = forgotten + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[2])
end
return forgotten
"""


class KeptDelivery(BaseModel):
    """A delivery waiting for its user to become reachable, and what the user had at keep time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery: Delivery
    bindings: dict[str, str]
    until: int
    """Deadline, ms since the epoch."""
    variant: str = ""
    rule_id: str = ""
    rule_version: str = ""


class OfflineKeep:
    """Keeps, releases and expires deliveries for unreachable users; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._keep = redis.register_script(_KEEP)
        self._lease = redis.register_script(_LEASE)
        self._done = redis.register_script(_DONE)

    async def keep(
        self,
        delivery: Delivery,
        bindings: Mapping[str, str],
        until: datetime,
        *,
        variant: str = "",
        rule_id: str = "",
        rule_version: str = "",
        now: datetime | None = None,
    ) -> datetime:
        """Keep `delivery` until `until` (or the deadline of an earlier keep); returns the deadline."""
        at = now or datetime.now(UTC)
        if until <= at:
            raise ValueError(f"keep of {delivery.message_id}: until {until.isoformat()} is not in the future")
        body = KeptDelivery(
            delivery=delivery,
            bindings=dict(bindings),
            until=0,
            variant=variant,
            rule_id=rule_id,
            rule_version=rule_version,
        ).model_dump_json(exclude={"until"})
        deadline_ms = int(until.timestamp() * 1000)
        kept = await self._keep(
            keys=[
                deadline_key(delivery.user_id, delivery.message_id),
                kept_key(delivery.user_id),
                users_key(delivery.user_id),
                lease_key(delivery.user_id),
            ],
            args=[
                deadline_ms,
                deadline_ms - int(at.timestamp() * 1000),
                delivery.message_id,
                body[:-1],
                delivery.user_id,
            ],
        )
        return datetime.fromtimestamp(int(kept) / 1000, UTC)

    async def due_for_release(
        self, now: datetime, directory: UserDirectory, *, confirm: bool = False
    ) -> tuple[list[Delivery], list[Receipt]]:
        """Deliveries whose user gained a binding since the keep (to decide again), and `expired`
        receipts for those past their deadline. With `confirm`, they are leased to this caller, who
        calls `done` once they are re-emitted (else they are handed out again after the lease);
        without, they are forgotten at once."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in USER_INDEXES:
                pipe.smembers(index)
            members: list[set[bytes | str]] = await pipe.execute()
        user_ids = sorted(_text(u) for shard in members for u in shard)
        deadline = now.timestamp() * 1000
        released: list[Delivery] = []
        expired: list[Receipt] = []
        for start in range(0, len(user_ids), BATCH):
            chunk = user_ids[start : start + BATCH]
            users = await directory.get_many(chunk)
            kept = await self._kept(chunk)
            for user_id, items in zip(chunk, kept, strict=True):
                ready = [
                    (message_id, item)
                    for message_id, item in items.items()
                    if item.until <= deadline or _reachable_again(item, users.get(user_id))
                ]
                for item in await self._take(user_id, ready, now):
                    if item.until <= deadline:
                        expired.append(_expired(item))
                    else:
                        released.append(item.delivery)
        if not confirm:
            await self.done([*released, *expired])
        return released, expired

    async def done(self, items: Sequence[Delivery | Receipt]) -> int:
        """Forget released deliveries (or the messages of `expired` receipts) now re-emitted."""
        by_user: dict[str, list[str]] = {}
        for item in items:
            by_user.setdefault(item.user_id, []).append(item.message_id)
        forgotten = 0
        for user_id, message_ids in by_user.items():
            keys = [kept_key(user_id), lease_key(user_id), users_key(user_id)]
            forgotten += int(await self._done(keys=keys, args=[user_id, *message_ids]))
        return forgotten

    async def count(self, user_id: str) -> int:
        return int(await self._redis.hlen(kept_key(user_id)))

    async def _kept(self, user_ids: Sequence[str]) -> list[dict[str, KeptDelivery]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hgetall(kept_key(user_id))
            answers: list[Mapping[bytes | str, bytes | str]] = await pipe.execute()
        return [
            {_text(m): KeptDelivery.model_validate_json(body) for m, body in answer.items()}
            for answer in answers
        ]

    async def _take(
        self, user_id: str, items: list[tuple[str, KeptDelivery]], now: datetime
    ) -> list[KeptDelivery]:
        """Lease items to this caller; those another caller holds are not its own."""
        if not items:
            return []
        at = int(now.timestamp() * 1000)
        leased = await self._lease(
            keys=[kept_key(user_id), lease_key(user_id)],
            args=[at, at + LEASE_MS, *(m for m, _ in items)],
        )
        return [item for (_, item), mine in zip(items, leased, strict=True) if mine]


def _reachable_again(item: KeptDelivery, user: User | None) -> bool:
    """A binding added or changed since the keep; raw-address recipients never change."""
    if user is None:
        return False
    return any(item.bindings.get(channel) != address for channel, address in user.bindings.items())


def _expired(item: KeptDelivery) -> Receipt:
    until = datetime.fromtimestamp(item.until / 1000, UTC)
    delivery = item.delivery
    return Receipt.of(
        delivery.event,
        delivery.user_id,
        "expired",
        message_id=delivery.message_id,
        reason=f"kept offline until {until.isoformat()}; the user never became reachable",
        variant=item.variant,
        rule_id=item.rule_id,
        rule_version=item.rule_version,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
