"""Event deduplication on (app, event_id), safe under redelivery of the same Kafka record.

The key holds the identity of the first record that carried the event. The same record seen again
(a redelivery after a crash before commit) is let through so its deliveries are produced again —
harmless, since message ids are deterministic and sends idempotent. A different record with the same
(app, event_id) is a duplicate from upstream and is dropped.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from state.coalesced import CoalescedPipeline, plain_pipeline

_KEY = "sb:dedup:{}:{}"


class EventDedup:
    """First-seen wins, per (app, event_id), for `ttl_seconds`."""

    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        # Ingest asks for a batch's events at once: their checks share a round trip.
        self._round_trips = CoalescedPipeline(plain_pipeline(redis))

    async def first_seen(self, app: str, event_id: str, record: str) -> bool:
        key = _KEY.format(app, event_id)

        def fill(pipe: Pipeline) -> int:
            pipe.set(key, record, nx=True, ex=self._ttl)
            pipe.get(key)  # after the SET: the first record's identity, whoever set it
            return 2

        created, holder = await self._round_trips.run(fill)
        if created:
            return True
        held = holder.decode() if isinstance(holder, bytes) else holder
        return bool(held == record)

    async def accepted(self, app: str, event_id: str) -> bool:
        """Whether an event with this (app, event_id) was accepted within the window: another record of
        it (a replay) would be dropped as a duplicate."""
        return bool(await self._redis.exists(_KEY.format(app, event_id)))
