"""The urgent lane's own Kafka consumers, so a campaign's backlog never holds up a login code.

Measured on the local broker: one consumer (Faust's, or a plain aiokafka one) subscribed to both a
topic with a 40,000-record backlog and an urgent topic handed the urgent records over 3.5-11 s late,
since the fetches that carry them also carry, and wait on, the backlog. Separate agents on the same
consumer do not help; a consumer of its own per urgent topic (its own connection and fetches) does.

`LaneStream` gives such a consumer the two calls the stages use of a Faust stream (`noack_take` and
`ack`, see `processors/intake.acked_batches`), so the urgent lane runs the very same stage code. It
commits the offsets acknowledged so far before each fetch: a batch is committed only once handled.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

log = logging.getLogger("switchboard.flow")


@dataclass(frozen=True)
class LaneMessage:
    """Where a record sits: what `processors/intake.source_of` reads of a Faust message."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class LaneRecord:
    """One record, shaped as the stages read a Faust event (`value`, `message`)."""

    value: bytes | None
    message: LaneMessage


class LaneStream:
    """One urgent topic consumed by a consumer of its own, in group `group`."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic = topic
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
            await self._commit()
            fetched = await self._consumer.getmany(timeout_ms=max(1, int(within * 1000)), max_records=max_)
            batch = [
                LaneRecord(record.value, LaneMessage(tp.topic, tp.partition, record.offset))
                for tp, records in fetched.items()
                for record in records
            ]
            if batch:
                yield batch

    async def ack(self, event: LaneRecord) -> bool:
        tp = TopicPartition(event.message.topic, event.message.partition)
        self._acked[tp] = max(self._acked.get(tp, 0), event.message.offset + 1)
        return True

    async def _commit(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, {}
            try:
                await self._consumer.commit(acked)
            except CommitFailedError as exc:
                # The group rebalanced: whoever holds the partitions now gets these records again,
                # which the stages treat as the redelivery it is.
                log.warning(
                    "urgent lane %s: offsets not committed (%s); records will be redelivered", self.topic, exc
                )
