"""What the stages produce, sized before it is produced.

A record over the producer's limit fails at produce (`MessageSizeTooLargeError`) and, unhandled,
stops the stage on the same record at every restart. So every record is measured first: receipts are
packed into as many array records as their size needs, and a single item that cannot fit in any
record is dead-lettered with its size instead of being produced.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError, UnknownError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from metrics import catalog
from processors.dead_letters import DeadLetter, dead_letter, dead_letter_receipt
from records.topics import Delivery, Dispatch, Receipt
from records.wire import WireEncoder
from state.flow_counters import FlowCounters

log = logging.getLogger("switchboard.flow")

RECEIPTS_PER_RECORD = 500  # the sink writes batches anyway; more per record only delays a row
ITEMS_PER_RECORD = 500  # deliveries or dispatches per batch record: one stage batch, one Redis pipeline
RESEND_DELAYS = (0.5, 1.0, 2.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0)
"""Seconds between tries of a batch the broker refused with a transient error (~40 s in all); then the
stage fails and the worker stops, its batch unacknowledged."""
KEY_ROOM = 256  # keys are user or message ids; the budget of an array record leaves them this much


@dataclass(frozen=True)
class Outgoing:
    """One record to produce, and where it came from, for a dead letter should it not fit."""

    key: str
    value: bytes
    source: str


def record_size(key: bytes, value: bytes) -> int:
    """The size the producer checks against its limit: aiokafka's own upper estimate."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))


def pack(
    encoded: Sequence[bytes], budget: int, per_record: int = RECEIPTS_PER_RECORD
) -> tuple[list[list[int]], list[int]]:
    """Group JSON items into arrays of at most `budget` bytes and `per_record` items.

    Returns the groups (indexes into `encoded`, in order) and the indexes of items too large to
    fit in any array on their own.
    """
    groups: list[list[int]] = []
    oversized: list[int] = []
    current: list[int] = []
    size = 2  # the brackets
    for index, item in enumerate(encoded):
        if len(item) + 2 > budget:
            oversized.append(index)
            continue
        grown = size + len(item) + (1 if current else 0)
        if current and (grown > budget or len(current) >= per_record):
            groups.append(current)
            current, grown = [], 2 + len(item)
        current.append(index)
        size = grown
    if current:
        groups.append(current)
    return groups, oversized


class Outbox:
    """Produces the flow's records once each fits; counts receipts and dead letters."""

    def __init__(
        self,
        receipts: faust.TopicT,
        dead_letter: faust.TopicT,
        counters: FlowCounters,
        record_limit: int,
    ) -> None:
        self._receipts = receipts
        self._dead_letter = dead_letter
        self._counters = counters
        self.record_limit = record_limit
        self._encoder = WireEncoder()

    def fits(self, key: str, value: bytes) -> bool:
        return record_size(key.encode(), value) <= self.record_limit

    async def produce(self, topic: faust.TopicT, items: Iterable[Outgoing]) -> int:
        """Produce the items that fit, dead-letter the others; returns how many were produced."""
        fitting: list[tuple[str, bytes]] = []
        letters: list[tuple[DeadLetter, Receipt]] = []
        for item in items:
            if self.fits(item.key, item.value):
                fitting.append((item.key, item.value))
                continue
            reason = (
                f"record for topic {topic.get_topic_name()} is {record_size(item.key.encode(), item.value)} "
                f"bytes, over the producer's limit of {self.record_limit}"
            )
            app, event_id, message_id, user_id = _ids(item.value)
            letter = dead_letter(item.value, item.source, reason, app=app, event_id=event_id)
            fields = {"message_id": message_id, "user_id": user_id} if message_id else {}
            letters.append((letter, dead_letter_receipt(letter, **fields)))
        produced = await self._send(topic, fitting)
        await self.dead_letters(letters)
        return produced

    async def batches(self, topic: faust.TopicT, items: Sequence[tuple[Delivery | Dispatch, str]]) -> int:
        """Produce deliveries or dispatches (each with its source) as batch records; returns how many
        items were produced. An item too large for any record is dead-lettered alone.

        Items are grouped by the partition their user id would go to on its own (the producer's
        murmur2 over the topic's partitions), and a batch is keyed by one of its users: every record
        for a user lands on that user's partition, so a user's deliveries stay in order and one
        worker handles them, as with one record per item."""
        if not items:
            return 0
        encoded = self._encoder.encode([item for item, _ in items])
        partitions = max(topic.partitions or 1, 1)
        by_partition: dict[int, list[int]] = {}
        for index, (item, _) in enumerate(items):
            partition = (murmur2(item.user_id.encode()) & 0x7FFFFFFF) % partitions
            by_partition.setdefault(partition, []).append(index)
        budget = self.record_limit - record_size(b"x" * KEY_ROOM, b"")
        records: list[tuple[str, bytes]] = []
        oversized: list[Outgoing] = []
        produced = 0
        for members in by_partition.values():
            groups, too_large = pack([encoded[i] for i in members], budget, ITEMS_PER_RECORD)
            for group in groups:
                indexes = [members[i] for i in group]
                records.append(
                    (items[indexes[0]][0].user_id, b"[" + b",".join(encoded[i] for i in indexes) + b"]")
                )
                produced += len(indexes)
            for i in too_large:
                index = members[i]
                oversized.append(Outgoing(items[index][0].user_id, encoded[index], items[index][1]))
        await self._send(topic, records)
        await self.produce(topic, oversized)  # over the limit: each becomes its dead letter
        return produced

    async def receipts(self, receipts: Sequence[Receipt], source: str) -> None:
        """Receipts travel as a few array records rather than one each: per-record stream overhead
        dominates the worker's CPU. Each array is sized to fit in a record."""
        if not receipts:
            return
        encoded = [r.model_dump_json().encode() for r in receipts]
        groups, oversized = pack(encoded, self.record_limit - record_size(b"x" * KEY_ROOM, b""))
        records = [
            (receipts[group[0]].message_id, b"[" + b",".join(encoded[i] for i in group) + b"]")
            for group in groups
        ]
        await self._send(self._receipts, records)
        await self._counters.add({"receipts": sum(len(group) for group in groups)})
        letters: list[tuple[DeadLetter, Receipt]] = []
        for index in oversized:
            receipt = receipts[index]
            reason = (
                f"receipt is {len(encoded[index])} bytes, over the producer's limit of {self.record_limit}"
            )
            letter = dead_letter(encoded[index], source, reason, app=receipt.app, event_id=receipt.event_id)
            letters.append(
                (letter, dead_letter_receipt(letter, message_id=receipt.message_id, user_id=receipt.user_id))
            )
        await self.dead_letters(letters)

    async def dead_letters(self, letters: Sequence[tuple[DeadLetter, Receipt]]) -> None:
        """Each letter to the dead-letter topic, and its `dead_lettered` row with the reason."""
        if not letters:
            return
        for letter, _ in letters:
            log.warning("dead-lettered %s: %s", letter.source, letter.reason)
        await self._send(
            self._dead_letter, [(letter.source, letter.model_dump_json().encode()) for letter, _ in letters]
        )
        await self._counters.add({"dead_lettered": len(letters)})
        catalog.dead_letters_from([letter.source for letter, _ in letters])
        await self.receipts([receipt for _, receipt in letters], "dead letters")

    async def _send(self, topic: faust.TopicT, records: Sequence[tuple[str, bytes]]) -> int:
        for delay in (*RESEND_DELAYS, None):
            try:
                pending: list[Awaitable[Any]] = [
                    await topic.send(key=k.encode(), value=v) for k, v in records
                ]
                await asyncio.gather(*pending)  # nothing is acknowledged before the broker has it
                return len(pending)
            except KafkaError as exc:
                if delay is None or not _transient(exc):
                    raise
                # The whole batch again: what the broker did take is read twice downstream, where a
                # repeat is harmless (claims, dedup, ReplacingMergeTree); what it did not is not lost.
                log.warning("topic %s refused a batch (%r); sending it again in %.1f s", topic, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last try raises or returns")


def _transient(exc: KafkaError) -> bool:
    """Errors a broker gives while it (re)starts or moves leaders. A local broker just restarted answers
    its first produce to a topic it is creating with UnknownError (-1), which aiokafka calls final."""
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, UnknownError)


def _ids(value: bytes) -> tuple[str, str, str, str]:
    """Best-effort app, event id, message id and user id of a delivery or dispatch record."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return "", "", "", ""
    if not isinstance(parsed, dict):
        return "", "", "", ""
    event = parsed.get("event")
    if not isinstance(event, dict):
        event = {}
    return (
        str(event.get("app", ""))[:128],
        str(event.get("event_id", ""))[:128],
        str(parsed.get("message_id", ""))[:128],
        str(parsed.get("user_id", ""))[:128],
    )
