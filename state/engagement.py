"""Engagement history: when each user reads, clicks and opens, for best send time and activity rules.

Redis layout: `sb:engaged:{user}` sorted set of the user's latest engagements, member
`{ms}:{status}` scored by time (ms), so recording a redelivered receipt again changes nothing;
`sb:active` sorted set of user → last activity (ms, only ever moved forward);
`sb:besttime:{message}` the best-time send moment chosen for a message (ms), so a delivery decided
again at that moment (or redelivered) keeps its time instead of being deferred once more.
Hour-of-day counts are taken when asked, in the user's timezone of that moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from state.users import User

HISTORY_KEY = "sb:engaged:{}"
ACTIVE_KEY = "sb:active"
CHOSEN_KEY = "sb:besttime:{}"
ENGAGED: frozenset[str] = frozenset({"opened", "clicked", "read", "converted"})
"""Statuses that show the person engaged; `delivered` and `sent` say nothing about them."""
KEEP = 200
"""Engagements kept per user: recent habits are the ones that predict the next."""
KEEP_FOR = timedelta(days=180)
MIN_HISTORY = 3
"""Fewer engagements than this say nothing about a best hour."""


class EngagementHistory:
    """Records engagement receipts and answers best hour and last activity; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def record_many(self, items: Iterable[tuple[str, str, datetime]]) -> int:
        """Record (user id, status, at) triples; statuses other than engagement are ignored."""
        engaged = [(u, status, at) for u, status, at in items if status in ENGAGED and u]
        if not engaged:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, status, at in engaged:
                if at.tzinfo is None:
                    raise ValueError(f"engagement of {user_id} at {at}: the time needs a timezone")
                ms = int(at.timestamp() * 1000)
                key = HISTORY_KEY.format(user_id)
                pipe.zadd(key, {f"{ms}:{status}": ms})
                pipe.zremrangebyrank(key, 0, -(KEEP + 1))
                pipe.expire(key, KEEP_FOR)
                pipe.zadd(ACTIVE_KEY, {user_id: ms}, gt=True)
            await pipe.execute()
        return len(engaged)

    async def best_hours(self, users: Sequence[User]) -> dict[str, int]:
        """Each user's most engaged hour on their own clock (earliest on a tie); users with little
        history are absent."""
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrange(HISTORY_KEY.format(user.user_id), 0, -1, withscores=True)
            answers: list[list[tuple[bytes, float]]] = await pipe.execute()
        best: dict[str, int] = {}
        for user, history in zip(users, answers, strict=True):
            if len(history) < MIN_HISTORY:
                continue
            zone = ZoneInfo(user.timezone)
            hours = Counter(datetime.fromtimestamp(ms / 1000, zone).hour for _, ms in history)
            best[user.user_id] = min(hours, key=lambda h: (-hours[h], h))
        return best

    async def best_hour(self, user: User) -> int | None:
        return (await self.best_hours([user])).get(user.user_id)

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
        # GETs in a pipeline rather than one MGET: the keys lie in many Redis Cluster slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.get(CHOSEN_KEY.format(message_id))
            values = await pipe.execute()
        return {
            message_id: datetime.fromtimestamp(int(_text(value)) / 1000, UTC)
            for message_id, value in zip(message_ids, values, strict=True)
            if value is not None
        }

    async def choose_times(
        self,
        chosen: Mapping[str, datetime],
        keep: timedelta = timedelta(days=2),
        now: datetime | None = None,
    ) -> None:
        """Remember the best-time moment chosen per message, until `keep` after that moment.

        `now` is the decision's time, on the same clock as the chosen moments (default: the real one)."""
        if not chosen:
            return
        at_now = now or datetime.now(UTC)
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id, at in chosen.items():
                # Relative to the caller's now, never an absolute expiry on Redis's own clock: a
                # decision made at an injected time (a replay, a test) keeps its choice just as long.
                ttl_ms = int((at + keep - at_now).total_seconds() * 1000)
                if ttl_ms <= 0:
                    continue  # that moment and its keep are over: nothing left to hold in place
                # NX: the first choice stands, so a redelivered delivery cannot move its own time.
                pipe.set(CHOSEN_KEY.format(message_id), int(at.timestamp() * 1000), nx=True, px=ttl_ms)
            await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
