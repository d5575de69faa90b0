"""Track: the Redis effects of receipts, in whole batches: advance fallback chains, record engagement.

Receipts reach ClickHouse through the analytics service (`switchboard analytics`), which consumes the
same topic in its own consumer group: the worker never opens ClickHouse. The Redis effects of a batch
are idempotent, so a batch redelivered after a crash is simply applied again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from state.fallback import OBSERVED_STATUSES, FallbackSchedule

ENGAGEMENT_STATUSES = frozenset({"read", "clicked", "opened", "converted"})
TRACKED_STATUSES = OBSERVED_STATUSES | ENGAGEMENT_STATUSES
"""What track acts on; the stage reads only receipts of these (a broadcast's `decided` rows are not)."""


class TrackedReceipt(Protocol):
    """What track reads of a receipt: a `records.topics.Receipt` or the topic's `records.wire.ReceiptItem`."""

    @property
    def message_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def event_time(self) -> datetime | None: ...


class EngagementRecorder(Protocol):
    """What track needs of the engagement history (state/engagement.py)."""

    async def record_many(self, items: Iterable[tuple[str, str, datetime]]) -> int: ...


class Track:
    """Receipts in, Redis effects out; returns how many receipts were tracked."""

    def __init__(
        self, fallback: FallbackSchedule | None = None, engagement: EngagementRecorder | None = None
    ) -> None:
        self._fallback = fallback
        self._engagement = engagement

    async def handle(self, receipts: Sequence[TrackedReceipt]) -> int:
        if not receipts:
            return 0
        await asyncio.gather(self._observe(receipts), self._engaged(receipts))
        return len(receipts)

    async def _observe(self, receipts: Sequence[TrackedReceipt]) -> int:
        if self._fallback is None:
            return 0
        return await self._fallback.observe_many(
            (r.message_id, r.status, r.channel, r.step, r.event_time)
            for r in receipts
            if r.status in OBSERVED_STATUSES
        )

    async def _engaged(self, receipts: Sequence[TrackedReceipt]) -> int:
        if self._engagement is None:
            return 0
        now = datetime.now(UTC)  # a receipt without a time happened when it was published, about now
        items = [
            (r.user_id, r.status, r.event_time or now) for r in receipts if r.status in ENGAGEMENT_STATUSES
        ]
        return await self._engagement.record_many(items) if items else 0
