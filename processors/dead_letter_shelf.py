"""Reading topic `events.deadletter` for people: list, filter and fetch one letter by its id.

The topic is the record of what was refused: each letter keeps the payload (whole up to 64 KB), the
reason, the app and event id where readable, and where the record was. ClickHouse keeps only the
`dead_lettered` row with the reason, so the shelf reads the topic itself, with a consumer of no group
(nothing is committed, no worker's offsets move). A letter's id is its place on the topic,
`PARTITION-OFFSET`: stable for as long as the topic keeps the record (its retention).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from processors.dead_letters import DeadLetter, dead_letter

log = logging.getLogger("switchboard.dead_letters")

SCAN_PER_PARTITION = 50_000
"""A listing reads at most this many of the newest letters of each partition."""
READ_DEADLINE = 20.0  # seconds a listing may take before it answers with what it has read
EMPTY_FETCH_MS = 300  # a fetch that finds nothing for this long: the partitions are read to their end
STAGES = {
    "events": "ingest",
    "events.urgent": "ingest",
    "deliveries": "decide",
    "deliveries.urgent": "decide",
    "dispatch": "send",
    "dispatch.urgent": "send",
    "receipts": "track",
}
REPLAYABLE_STAGE = "ingest"


class ShelfUnavailable(RuntimeError):
    """The broker could not be read; nothing is known about the letters."""


@dataclass(frozen=True)
class ShelvedLetter:
    """A letter and where it is: `letter_id` is `PARTITION-OFFSET` on the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter
    stage: str

    @property
    def letter_id(self) -> str:
        return f"{self.partition}-{self.offset}"


@dataclass(frozen=True)
class LetterFilter:
    """Which letters to list (all when empty): reason text (case-insensitive), app, stage, received since."""

    reason: str | None = None
    app: str | None = None
    stage: str | None = None
    since: datetime | None = None
    apps: frozenset[str] | None = None  # the caller's apps (None: every app, letters without one too)

    def matches(self, shelved: ShelvedLetter) -> bool:
        letter = shelved.letter
        return (
            (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.app is None or letter.app == self.app)
            and (self.stage is None or shelved.stage == self.stage)
            and (self.since is None or letter.received_at >= self.since)
            and (self.apps is None or letter.app in self.apps)
        )


def parse_letter_id(text: str) -> tuple[int, int]:
    """`PARTITION-OFFSET` as two numbers; ValueError naming the form otherwise."""
    partition, _, offset = text.partition("-")
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"letter id {text!r} is not PARTITION-OFFSET (for example 2-1375)")
    return int(partition), int(offset)


class DeadLetterShelf:
    """The dead-letter topic as a list of letters, newest first."""

    def __init__(
        self, bootstrap: str, topic: str, topic_prefix: str = "", scan_per_partition: int = SCAN_PER_PARTITION
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._prefix = topic_prefix
        self._scan = scan_per_partition

    async def letters(self, wanted: LetterFilter | None = None) -> list[ShelvedLetter]:
        """The letters that match, newest first (by when they were refused)."""
        wanted = wanted or LetterFilter()
        async with self._consumer() as consumer:
            partitions = await self._partitions(consumer)
            if not partitions:
                return []
            consumer.assign(partitions)
            begin = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(begin[tp], end[tp] - self._scan))
            found = [
                shelved
                for record in await _read_on(consumer, end)
                if wanted.matches(shelved := self._shelved(record))
            ]
        return sorted(found, key=lambda s: (s.letter.received_at, s.partition, s.offset), reverse=True)

    async def get(self, letter_id: str) -> ShelvedLetter | None:
        """The letter with this id, or None when the topic does not hold it (any more)."""
        partition, offset = parse_letter_id(letter_id)
        async with self._consumer() as consumer:
            tp = TopicPartition(self._topic, partition)
            if tp not in await self._partitions(consumer):
                return None
            consumer.assign([tp])
            begin, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
            if offset < begin:
                return None  # past the topic's retention
            consumer.seek(tp, offset)
            # Up to the end offset at least (a letter past it is looked for until a fetch finds nothing).
            for record in await _read_on(consumer, {tp: min(offset + 1, end)}, until_offset=offset):
                if record.offset == offset:
                    return self._shelved(record)
        return None

    def _shelved(self, record: ConsumerRecord[bytes, bytes]) -> ShelvedLetter:
        value = record.value or b""
        try:
            letter = DeadLetter.model_validate_json(value)
        except ValidationError as exc:
            # Not written by Switchboard's stages: shown as it is, with what is wrong, never skipped.
            where = f"{self._topic}:{record.partition}:{record.offset}"
            problem = exc.errors(include_url=False)[0]["msg"]
            letter = dead_letter(value, where, f"not a dead letter: {problem}")
        return ShelvedLetter(record.partition, record.offset, letter, self.stage_of(letter.source))

    def stage_of(self, source: str) -> str:
        """The stage that refused a record, from where the record was (`topic:partition:offset`)."""
        topic = source.split(":", 1)[0].removeprefix(self._prefix)
        return STAGES.get(topic, "other")

    def _consumer(self) -> _Consumer:
        return _Consumer(self._bootstrap)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        try:
            topics = await consumer.topics()
        except KafkaError as exc:
            raise ShelfUnavailable(f"cannot read topic {self._topic!r}: {exc!r}") from exc
        if self._topic not in topics:
            return []
        numbers = sorted(consumer.partitions_for_topic(self._topic) or ())
        return [TopicPartition(self._topic, p) for p in numbers]


class _Consumer:
    """A started consumer of no group, stopped on leaving."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=10_000
        )

    async def __aenter__(self) -> AIOKafkaConsumer:
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise ShelfUnavailable(f"cannot reach the Kafka broker: {exc!r}") from exc
        return self._consumer

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()


async def _read_on(
    consumer: AIOKafkaConsumer, end: dict[TopicPartition, int], until_offset: int | None = None
) -> Sequence[ConsumerRecord[bytes, bytes]]:
    """Every record from the current positions on: at least up to `end`, then until a fetch finds
    nothing more (with `until_offset`, until a record at or past it). `end` is only a lower bound: the
    local broker (Tansu) answers end offsets short of what a batching producer wrote (FIELD-NOTES), and
    a listing that stopped there missed 14 of 10,000 letters. Nor does one empty fetch prove the end: a
    fresh consumer's first fetches may come back empty while it connects."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + READ_DEADLINE
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(*end, timeout_ms=EMPTY_FETCH_MS, max_records=5_000)
            for messages in batch.values():
                records.extend(messages)
            if until_offset is not None and any(m.offset >= until_offset for m in records):
                return records
            if not batch and all([await consumer.position(tp) >= offset for tp, offset in end.items()]):
                return records
    except KafkaError as exc:
        raise ShelfUnavailable(f"reading the dead letters failed: {exc!r}") from exc
    log.warning("reading dead letters took over %.0f s; answering with what was read", READ_DEADLINE)
    return records
