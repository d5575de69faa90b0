"""Stopping a worker promptly while Redis is away.

On SIGTERM (and before a rebalance) Faust waits until every record in hand is acknowledged, so that a
graceful stop finishes its batches. While Redis is unreachable those batches wait for it and would
never finish: the stop would hang. So the wait ends as soon as Redis is known to be down; what was
acknowledged is committed, the rest is read again after the restart (every stage tolerates that).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import faust

from state.connection import RedisOutage

POLL_SECONDS = 0.2


class SwitchboardApp(faust.App):
    """A Faust app whose stop does not wait for batches that are waiting for Redis."""

    redis_outage: RedisOutage | None = None

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        waiting = asyncio.ensure_future(super()._consumer_wait_empty(consumer, logger))
        while not waiting.done():
            if self.redis_outage is not None and self.redis_outage.down:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
                logger.warning(
                    "Redis is unreachable: not waiting for the batches in hand, which are read again "
                    "after a restart; committing what was acknowledged"
                )
                await consumer.commit()
                return
            await asyncio.wait({waiting}, timeout=POLL_SECONDS)
        waiting.result()
