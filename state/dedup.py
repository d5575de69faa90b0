"""Event deduplication on (app, event_id), safe under redelivery of the same Kafka record.

The key holds the identity of the first record that carried the event. The same record seen again
(a redelivery after a crash before commit) is let through so its deliveries are produced again —
harmless, since message ids are deterministic and sends idempotent. A different record with the same
(app, event_id) is a duplicate from upstream and is dropped.
"""

from __future__ import annotations

from redis.asyncio import Redis

_KEY = "sb:dedup:{}:{}"


class EventDedup:
    """First-seen wins, per (app, event_id), for `ttl_seconds`."""

    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    async def first_seen(self, app: str, event_id: str, record: str) -> bool:
        key = _KEY.format(app, event_id)
        if await self._redis.set(key, record, nx=True, ex=self._ttl):
            return True
        holder = await self._redis.get(key)
        held = holder.decode() if isinstance(holder, bytes) else holder
        return held == record
