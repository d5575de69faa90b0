"""Faust 0.15.3 may commit past a record that was never acknowledged; this module mends that.

`Consumer._new_offset` works out the next offset to commit from the acknowledged ones. Its guard
against a gap at the head, `min(acked) - committed > 1`, treats the committed offset as the last one
processed, but Kafka's committed offset (and Faust's own `_committed_offset`) is the next one to read.
So with offset C committed, C still in hand and C+1 acknowledged, Faust commits C+2 and C is never
processed, even after a restart. Faust acknowledges some records out of order itself (a record it
skips for a stale rebalance generation is acknowledged at once), which is how the first record after
a restart went missing against the local broker (FIELD-NOTES). The mended version refuses to commit
while the committed offset itself is unacknowledged; everything else is Faust's code as released.

A commit also gets a deadline (`bounded_commit`). aiokafka retries a commit for as long as the broker
answers with a retriable error, and `UnknownTopicOrPartitionError` is one: after the local broker lost
its topics (a restart of its memory storage) it answers every commit of the worker's group so, for
good. Faust lets one commit run at a time and the others wait for it, the rebalance that follows the
restart included (it commits before it gives partitions up), so that rebalance never ended and the
worker never read the topics again. A commit not done within `COMMIT_DEADLINE` seconds is abandoned:
its records stay uncommitted and are read again after a restart or rebalance, which the stages treat
as the redeliveries they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.utils.functional import consecutive_numbers

_FAUST_VERSION = "0.15.3"  # the release whose `_new_offset` this replaces; pinned in pyproject.toml
RELEASED_NEW_OFFSET = Consumer._new_offset  # kept so a test can show the defect it mends
RELEASED_COMMIT = AIOKafkaConsumerThread._commit
# Under the broker session timeout (6 s): a rebalance's commit gives up before the group moves on.
COMMIT_DEADLINE = 5.0

log = logging.getLogger("switchboard.flow")


def new_offset(consumer: Any, tp: TP) -> int | None:
    """The offset to commit for `tp`: one past the acknowledged run that starts at the committed offset."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = consumer._gap[tp]
    if gap_for_tp:
        # Offsets that do not exist (compaction, transaction markers) count as acknowledged.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            filled: list[int] = []
            for entry in candidates:
                filled.extend(range(entry.begin, entry.end))
            new_max_offset = max(filled[-1], max_offset + 1)
            acked.extend(filled)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed: int | None = consumer._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the committed offset is the next to read and is not acknowledged yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    consumer._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def bounded_commit(
    commit: Callable[[Any, Mapping[TP, int]], Awaitable[bool]], deadline: float
) -> Callable[[Any, Mapping[TP, int]], Awaitable[bool]]:
    """`commit` abandoned after `deadline` seconds as not committed (False), which Faust allows for."""

    async def commit_within(consumer: Any, offsets: Mapping[TP, int]) -> bool:
        try:
            return await asyncio.wait_for(commit(consumer, offsets), deadline)
        except TimeoutError:
            log.warning(
                "offsets not committed within %.0f s (%s); their records will be read again after a "
                "restart or rebalance",
                deadline,
                ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in offsets)),
            )
            return False

    return commit_within


def mend_faust_commits() -> None:
    """Install `new_offset` on Faust's consumer; idempotent. Refuses another Faust release, whose
    consumer this replacement was not read against."""
    if faust.__version__ != _FAUST_VERSION:
        raise RuntimeError(
            f"processors/offsets.py mends faust-streaming {_FAUST_VERSION}, but {faust.__version__} is "
            "installed: check whether its Consumer._new_offset still commits past an unacknowledged "
            "record, then update or remove the mend"
        )
    Consumer._new_offset = new_offset  # type: ignore[method-assign,assignment]  # the mend itself
    AIOKafkaConsumerThread._commit = bounded_commit(  # type: ignore[method-assign,assignment]  # the deadline
        RELEASED_COMMIT, COMMIT_DEADLINE
    )
