"""Track: write receipts to ClickHouse `message_events` in whole batches.

The ClickHouse client is synchronous (and chdb runs in process), so the insert runs on a worker
thread while the stream keeps flowing; one batch at a time keeps the engine's writes ordered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from analytics.sink import ReceiptSink
from processors.records import Receipt


class Track:
    """Receipts in, rows out; returns how many rows were written."""

    def __init__(self, sink: ReceiptSink) -> None:
        self._sink = sink
        self._lock = asyncio.Lock()

    async def handle(self, receipts: Sequence[Receipt]) -> int:
        if not receipts:
            return 0
        async with self._lock:
            return await asyncio.to_thread(self._sink.write, receipts)
