"""Track: write receipts to ClickHouse `message_events` in whole batches, advance fallback chains,
record engagement, and write accepted events to the event log.

The ClickHouse client is synchronous (and chdb runs in process), so inserts run on a worker thread
while the stream keeps flowing; one lock keeps the engine's writes (receipts and events) one at a
time and in order. The Redis effects of a batch (fallback, engagement) are idempotent, so a batch
redelivered after a crash is simply applied again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from analytics.sink import ReceiptSink
from records.topics import EventCore, Receipt
from state.fallback import OBSERVED_STATUSES, FallbackSchedule

ENGAGEMENT_STATUSES = frozenset({"read", "clicked", "opened", "converted"})


class EngagementRecorder(Protocol):
    """What track needs of the engagement history (state/engagement.py)."""

    async def record_many(self, items: Iterable[tuple[str, str, datetime]]) -> int: ...


AcceptedEvent = tuple[datetime, EventCore, str]
"""When ingest accepted an event, the event without its audience, and the audience as JSON."""


class EventLogWriter(Protocol):
    """What track needs of the event log (analytics/event_log.py): a synchronous batch insert."""

    def write(self, events: Sequence[AcceptedEvent]) -> int: ...


class Track:
    """Receipts in, rows out; returns how many rows were written."""

    def __init__(
        self,
        sink: ReceiptSink,
        fallback: FallbackSchedule | None = None,
        engagement: EngagementRecorder | None = None,
        event_log: EventLogWriter | None = None,
    ) -> None:
        self._sink = sink
        self._fallback = fallback
        self._engagement = engagement
        self._event_log = event_log
        self._lock = asyncio.Lock()

    async def handle(self, receipts: Sequence[Receipt]) -> int:
        if not receipts:
            return 0
        # The sink's insert runs on its thread meanwhile; Redis effects go in one call each.
        written, *_ = await asyncio.gather(
            self._write(receipts), self._observe(receipts), self._engaged(receipts)
        )
        return written

    async def log_events(self, events: Sequence[AcceptedEvent]) -> int:
        """Write accepted events to the event log; 0 when no event log is configured."""
        if not events or self._event_log is None:
            return 0
        writer = self._event_log
        async with self._lock:
            return await asyncio.to_thread(writer.write, events)

    async def _write(self, receipts: Sequence[Receipt]) -> int:
        async with self._lock:
            return await asyncio.to_thread(self._sink.write, receipts)

    async def _observe(self, receipts: Sequence[Receipt]) -> int:
        if self._fallback is None:
            return 0
        return await self._fallback.observe_receipts(r for r in receipts if r.status in OBSERVED_STATUSES)

    async def _engaged(self, receipts: Sequence[Receipt]) -> int:
        if self._engagement is None:
            return 0
        items = [(r.user_id, r.status, r.event_time) for r in receipts if r.status in ENGAGEMENT_STATUSES]
        return await self._engagement.record_many(items) if items else 0
