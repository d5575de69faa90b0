"""离线保存 (offline keep): deliveries for a user no channel reaches now, kept until one does.

Redis layout: `sb:offline:{user}` hash of message id → the kept delivery with the user's bindings at
keep time and its deadline; `sb:offline:users` set of users holding kept deliveries;
`sb:offline:deadline:{message}` the deadline fixed at the first keep, so a delivery released,
decided again and kept again does not get a fresh time-to-live. A user is reachable again when a
binding was added or changed since the keep; the delivery is then released to be decided again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from processors.records import Delivery, Receipt
from state.users import User, UserDirectory

KEPT_KEY = "sb:offline:{}"
USERS_KEY = "sb:offline:users"
DEADLINE_KEY = "sb:offline:deadline:{}"
BATCH = 500

# KEYS: deadline, kept hash, users set. ARGV: deadline (ms), ttl (ms), message id, the kept body
# as JSON without its closing brace, user id. The deadline of an earlier keep wins; returns it.
_KEEP = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local deadline = redis.call('GET', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ',"until":' .. deadline .. '}')
redis.call('SADD', KEYS[3], ARGV[5])
return deadline
"""

# KEYS: kept hash, users set. ARGV: user id, message ids. Removes them, answers 1 per id removed by
# this call, and drops the user from the index once nothing is kept, all at once with `keep`.
_TAKE = """
local removed = {}
for i = 2, #ARGV do removed[i - 1] = redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return removed
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
        self._take_script = redis.register_script(_TAKE)

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
                DEADLINE_KEY.format(delivery.message_id),
                KEPT_KEY.format(delivery.user_id),
                USERS_KEY,
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
        self, now: datetime, directory: UserDirectory
    ) -> tuple[list[Delivery], list[Receipt]]:
        """Deliveries whose user gained a binding since the keep (to decide again), and `expired`
        receipts for those past their deadline. Each is handed to one caller only."""
        user_ids = sorted(_text(u) for u in await self._redis.smembers(USERS_KEY))
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
                for item in await self._take(user_id, ready):
                    if item.until <= deadline:
                        expired.append(_expired(item))
                    else:
                        released.append(item.delivery)
        return released, expired

    async def count(self, user_id: str) -> int:
        return int(await self._redis.hlen(KEPT_KEY.format(user_id)))

    async def _kept(self, user_ids: Sequence[str]) -> list[dict[str, KeptDelivery]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hgetall(KEPT_KEY.format(user_id))
            answers: list[Mapping[bytes | str, bytes | str]] = await pipe.execute()
        return [
            {_text(m): KeptDelivery.model_validate_json(body) for m, body in answer.items()}
            for answer in answers
        ]

    async def _take(self, user_id: str, items: list[tuple[str, KeptDelivery]]) -> list[KeptDelivery]:
        """Remove items; only those this caller removed are its own (HDEL answers 1 once)."""
        if not items:
            return []
        removed = await self._take_script(
            keys=[KEPT_KEY.format(user_id), USERS_KEY], args=[user_id, *(m for m, _ in items)]
        )
        return [item for (_, item), gone in zip(items, removed, strict=True) if gone]


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
