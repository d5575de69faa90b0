"""The urgent lane's own Kafka consumers, so a campaign's backlog never holds up a login code.

Measured on the local broker: one consumer (Faust's, or a plain aiokafka one) subscribed to both a
topic with a 40,000-record backlog and an urgent topic handed the urgent records over 3.5-11 s late,
since the fetches that carry them also carry, and wait on, the backlog. Separate agents on the same
consumer do not help; a consumer of its own per urgent topic (its own connection and fetches) does.

`LaneStream` gives such a consumer the two calls the stages use of a Faust stream (`noack_take` and
`ack`, see `processors/intake.acked_batches`), so the urgent lane runs the very same stage code. It
commits the offsets acknowledged so far before each fetch: a batch is committed only once handled.

Own fetches are not enough on a busy worker: the lanes share one event loop, and a bulk batch in hand
runs to its end. So the urgent lane takes the turn (`LaneGate`): while it has had work within the last
`hold` seconds, the bulk stages wait before starting their next batch, and broadcast expansion before
its next page. A code then waits for at most the bulk batch already in hand at each of its stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from processors.offsets import COMMIT_DEADLINE

log = logging.getLogger("switchboard.flow")

RESTART_DELAYS = (1.0, 2.0, 5.0)
"""Seconds between attempts to (re)start the urgent lane while the broker cannot be reached; then 5 s."""


@dataclass(frozen=True)
class LaneMessage:
    """Where a record sits: what `processors/intake.source_of` reads of a Faust message."""

    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class LaneRecord:
    """One record, shaped as the stages read a Faust event (`value`, `message`)."""

    value: bytes | None
    message: LaneMessage


class LaneGate:
    """The bulk lane waits at `bulk_turn` while the urgent lane has had work within `hold` seconds."""

    def __init__(self, hold: float = 0.3) -> None:
        self._hold = hold
        self._busy_until = 0.0

    def urgent_work(self) -> None:
        self._busy_until = time.monotonic() + self._hold

    async def bulk_turn(self) -> None:
        # Sleeping out the hold, not an Event: the hold moves forward with every urgent batch.
        while (left := self._busy_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)


class GatedStream:
    """A bulk Faust stream whose batches start only on the bulk lane's turn."""

    def __init__(self, stream: Any, gate: LaneGate) -> None:
        self._stream = stream
        self._gate = gate

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[Any]:
        async for batch in self._stream.noack_take(max_, within):
            await self._gate.bulk_turn()
            yield batch

    async def ack(self, event: Any) -> bool:
        return bool(await self._stream.ack(event))


class LaneStream:
    """One urgent topic consumed by a consumer of its own, in group `group`."""

    def __init__(self, bootstrap: str, topic: str, group: str, gate: LaneGate) -> None:
        self.topic = topic
        self._gate = gate
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # As for the Faust consumer: ready in seconds against the local broker (FIELD-NOTES).
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            rebalance_timeout_ms=6000,
            # The local broker answers an empty fetch only when this wait is over, new records or not
            # (measured: up to 0.2 s late at the default 500 ms, under 20 ms at 20 ms).
            fetch_max_wait_ms=25,
            # A topic the broker lost (a restarted local broker keeps none) is seen again when it is
            # made anew only at the next metadata refresh: 5 minutes by default.
            metadata_max_age_ms=5000,
        )
        self._acked: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._commit()
        await self._consumer.stop()

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[LaneRecord]]:
        """Batches of up to `max_` records, or what came within `within` seconds."""
        while True:
            if self._acked:
                self._gate.urgent_work()  # the batch just handled: hold the turn for the next stage
            await self._commit()
            fetched = await self._consumer.getmany(timeout_ms=max(1, int(within * 1000)), max_records=max_)
            batch = [
                LaneRecord(
                    record.value,
                    LaneMessage(tp.topic, tp.partition, record.offset, tuple(record.headers or ())),
                )
                for tp, records in fetched.items()
                for record in records
            ]
            if batch:
                self._gate.urgent_work()
                yield batch

    async def ack(self, event: LaneRecord) -> bool:
        tp = TopicPartition(event.message.topic, event.message.partition)
        self._acked[tp] = max(self._acked.get(tp, 0), event.message.offset + 1)
        return True

    async def _commit(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, {}
            try:
                # aiokafka retries a commit the broker answers with a retriable error for ever, and a
                # broker that lost its topics answers so for good (processors/offsets.py): bounded,
                # or the lane would never fetch again.
                await asyncio.wait_for(self._consumer.commit(acked), COMMIT_DEADLINE)
            except (CommitFailedError, KafkaError, TimeoutError) as exc:
                # Whoever reads the partitions next gets these records again, which the stages treat
                # as the redelivery it is.
                log.warning(
                    "urgent lane %s: offsets not committed (%r); records will be redelivered", self.topic, exc
                )


async def keep_lane_running(
    run_lane: Callable[[], Awaitable[None]], name: str, delays: Sequence[float] = RESTART_DELAYS
) -> None:
    """Run the lane until it returns; start it again after a broker error, however long the broker is away.

    The lane's consumers are not Faust's, so nothing else restarts them: a broker that goes away while
    they start (aiokafka's `start` raises at once when it cannot bootstrap) or while they run would
    otherwise leave urgent events waiting until the worker restarts. A stage's own failure is not a
    broker error: it stops the worker through the stage's `crash_on_error`, as in the bulk lane.
    """
    failures = 0
    while True:
        try:
            await run_lane()
            return
        except KafkaError as exc:
            delay = delays[min(failures, len(delays) - 1)]
            failures += 1
            log.warning("%s: the broker is unreachable (%r); starting again in %.0f s", name, exc, delay)
        await asyncio.sleep(delay)


async def stop_all(streams: Sequence[LaneStream]) -> None:
    """Stop every stream, even when the broker is gone and a stop fails: an unclosed consumer leaks."""
    for stream in streams:
        try:
            await stream.stop()
        except KafkaError as exc:
            log.warning("urgent lane %s: stopped without a clean leave (%r)", stream.topic, exc)
        except asyncio.CancelledError:
            # aiokafka's fetcher cancels its own fetch task on close and awaits it, which raises
            # CancelledError here when a fetch was in its retry back-off (a broker gone). Only a
            # cancellation of this task itself (shutdown) goes on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("urgent lane %s: a fetch in flight was cancelled on stop", stream.topic)
