"""Counters of the flow's progress, shared by every worker through Redis.

Each stage adds to its counter only after its effect is durable, so `caught_up()` is true exactly
when everything produced so far has been consumed and written. The analytics service counts here too
(`rows` of receipts and `logged` accepted events in ClickHouse), so waiting for ClickHouse is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from redis.asyncio import Redis

from metrics import catalog

_KEY = "sb:flow"

Counter = Literal[
    "events",
    "dead_lettered",
    "duplicates",
    "deliveries",
    "decided",
    "dispatched",
    "sent_done",
    "receipts",
    "tracked",
    "accepted",
    "rows",
    "logged",
    "conversions",
    "scheduled",
    "released",
    "parked",
    "unparked",
    "broadcasts",
    "broadcasts_done",
]


class FlowCounters:
    """A Redis hash of monotonically increasing counters."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(self, counts: Mapping[Counter, int]) -> None:
        live = {name: n for name, n in counts.items() if n}
        if not live:
            return
        catalog.flow(live)
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, n in live.items():
                pipe.hincrby(_KEY, name, n)
            await pipe.execute()

    async def read(self) -> dict[str, int]:
        raw = await self._redis.hgetall(_KEY)
        return {_text(k): int(v) for k, v in raw.items()}


def caught_up(
    counts: Mapping[str, int], events_emitted: int, extra_receipts: int = 0, *, analytics: bool = True
) -> bool:
    """True when every emitted event went through every stage and every receipt was tracked; with
    `analytics`, also when every receipt and accepted event is in ClickHouse (the analytics service
    runs). `extra_receipts`: receipts produced by something that does not count them here."""
    c = {k: counts.get(k, 0) for k in ("events", "deliveries", "decided", "dispatched", "sent_done")}
    receipts = counts.get("receipts", 0) + extra_receipts
    flowed = (
        c["events"] >= events_emitted
        and c["decided"] == c["deliveries"]
        and c["sent_done"] == c["dispatched"]
        and counts.get("tracked", 0) >= receipts
        and counts.get("unparked", 0) >= counts.get("parked", 0)
        # A broadcast still expanding has deliveries to come.
        and counts.get("broadcasts_done", 0) >= counts.get("broadcasts", 0)
    )
    return flowed and (not analytics or in_clickhouse(counts, extra_receipts))


def in_clickhouse(counts: Mapping[str, int], extra_receipts: int = 0) -> bool:
    """Every receipt and every accepted event produced so far is written to ClickHouse."""
    return (
        counts.get("rows", 0) >= counts.get("receipts", 0) + extra_receipts
        and counts.get("logged", 0) >= counts.get("accepted", 0)
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
