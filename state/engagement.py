"""Engagement history: when each user reads, clicks and opens, for best send time and activity rules.

Redis layout: `sb:engaged:{user}` hash of hour-of-day (0-23, in the user's own timezone) → count;
`sb:active` sorted set of user → last activity (ms, only ever moved forward); `sb:besttime:{message}`
the best-time send moment chosen for a message (ms), so a delivery decided again at that moment
(or redelivered) keeps its time instead of being deferred once more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from state.users import UserDirectory

HOURS_KEY = "sb:engaged:{}"
ACTIVE_KEY = "sb:active"
CHOSEN_KEY = "sb:besttime:{}"
ENGAGED: frozenset[str] = frozenset({"opened", "clicked", "read", "converted"})
"""Statuses that show the person engaged; `delivered` and `sent` say nothing about them."""
MIN_HISTORY = 3
"""Fewer engagements than this say nothing about a best hour."""


class EngagementHistory:
    """Records engagement receipts and answers best hour and last activity; clients passed in."""

    def __init__(self, redis: Redis, directory: UserDirectory) -> None:
        self._redis = redis
        self._directory = directory

    async def record_many(self, items: Iterable[tuple[str, str, datetime]]) -> int:
        """Record (user id, status, at) triples; statuses other than engagement are ignored."""
        engaged = [(u, at) for u, status, at in items if status in ENGAGED and u]
        if not engaged:
            return 0
        users = await self._directory.get_many(u for u, _ in engaged)
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, at in engaged:
                if at.tzinfo is None:
                    raise ValueError(f"engagement of {user_id} at {at}: the time needs a timezone")
                user = users.get(user_id)
                zone = ZoneInfo(user.timezone) if user is not None else UTC
                pipe.hincrby(HOURS_KEY.format(user_id), str(at.astimezone(zone).hour), 1)
                pipe.zadd(ACTIVE_KEY, {user_id: int(at.timestamp() * 1000)}, gt=True)
            await pipe.execute()
        return len(engaged)

    async def best_hours(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's most engaged local hour (earliest on a tie); users with little history are absent."""
        if not user_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hgetall(HOURS_KEY.format(user_id))
            answers: list[Mapping[bytes | str, bytes | str]] = await pipe.execute()
        best: dict[str, int] = {}
        for user_id, counts in zip(user_ids, answers, strict=True):
            hours = {int(_text(h)): int(_text(c)) for h, c in counts.items()}
            if sum(hours.values()) >= MIN_HISTORY:
                best[user_id] = min(hours, key=lambda h: (-hours[h], h))
        return best

    async def best_hour(self, user_id: str) -> int | None:
        return (await self.best_hours([user_id])).get(user_id)

    async def last_active(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each user was last seen engaging; users never seen are absent."""
        if not user_ids:
            return {}
        scores = await self._redis.zmscore(ACTIVE_KEY, list(user_ids))
        return {
            user_id: datetime.fromtimestamp(score / 1000, UTC)
            for user_id, score in zip(user_ids, scores, strict=True)
            if score is not None
        }

    async def chosen_times(self, message_ids: Sequence[str]) -> dict[str, datetime]:
        """The best-time moments already chosen for these messages."""
        if not message_ids:
            return {}
        values = await self._redis.mget([CHOSEN_KEY.format(m) for m in message_ids])
        return {
            message_id: datetime.fromtimestamp(int(_text(value)) / 1000, UTC)
            for message_id, value in zip(message_ids, values, strict=True)
            if value is not None
        }

    async def choose_times(self, chosen: Mapping[str, datetime], keep: timedelta = timedelta(days=2)) -> None:
        """Remember the best-time moment chosen per message, until `keep` after that moment."""
        if not chosen:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id, at in chosen.items():
                # NX: the first choice stands, so a redelivered delivery cannot move its own time.
                pipe.set(CHOSEN_KEY.format(message_id), int(at.timestamp() * 1000), nx=True, pxat=at + keep)
            await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
