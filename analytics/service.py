"""The analytics service: the one process that writes ClickHouse.

It consumes `receipts` and `events.accepted` (and `conversions`, `audit`) in its own consumer group, writes
what it read in batches, and commits the offsets only after the insert succeeded: at least once, and
a batch written twice collapses in the tables' ReplacingMergeTree. No record stops it: a record the
engine refuses is validated on its own and kept as a `dead_lettered` row with its reason. An insert
that fails for want of ClickHouse is retried, the batch held, until it succeeds or the service stops
(then the offsets stay uncommitted and the batch is read again at the next start).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from analytics import erasure
from analytics.attribution import TokenVerifier, attribute
from analytics.attribution_rules import AttributionRules
from analytics.audit_log import UNREADABLE_ACTION, AuditLog, read_records
from analytics.event_log import EventLog
from analytics.sink import ReceiptSink, ReceiptsRecord, SinkError, unreadable
from metrics import catalog
from records.accepted import AcceptedEvent
from records.conversions import Conversion
from records.erasure import ErasureRequest
from records.topics import Receipt

log = logging.getLogger("switchboard.analytics")

Kind = Literal["receipts", "accepted", "conversions", "erasures", "audit"]
Progress = Callable[[Mapping[str, int]], Awaitable[None]]
"""Told after each batch is durable: `rows` of receipts, `logged` accepted events, `conversions`
read from their topic (attributed or not) and `audited` records written."""

# ~200k receipt rows: fewer, larger inserts cost the engine less per row (and leave fewer parts to
# merge); with the next batch read while one is written, about 130 MB of records are held at most.
BATCH_BYTES = 64 * 1024 * 1024
BATCH_WAIT = 0.5  # seconds a batch may wait to fill: how stale ClickHouse may be
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s
ERASE_AGAIN_AFTER = 300.0  # seconds: longer than a message stays in flight in a flow that keeps up


class Writers(Protocol):
    """Where a batch goes; synchronous, run on a thread."""

    def receipts(self, records: Sequence[ReceiptsRecord]) -> int: ...
    def accepted(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]: ...
    def conversions(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]: ...
    def erasures(self, records: Sequence[ReceiptsRecord]) -> int: ...
    def audit(self, records: Sequence[ReceiptsRecord]) -> int: ...


@dataclass
class ClickHouseWriters:
    """The tables a batch goes into, on one client."""

    client: Client
    attribution: AttributionRules = field(default_factory=AttributionRules)
    tokens: TokenVerifier | None = None
    erase_again_after: float = ERASE_AGAIN_AFTER
    sink: ReceiptSink = field(init=False)
    event_log: EventLog = field(init=False)
    _again: list[tuple[float, ErasureRequest]] = field(init=False, default_factory=list)
    audit_log: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        self.sink = ReceiptSink(self.client)
        self.event_log = EventLog(self.client)
        self.audit_log = AuditLog(self.client)

    def receipts(self, records: Sequence[ReceiptsRecord]) -> int:
        written = catalog.timed_insert("message_events", lambda: self.sink.write_records(records))
        self._erase_again()
        return written

    def accepted(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        """(events logged, dead_lettered rows for records that are not accepted events)."""
        events = []
        bad = []
        for source, value in records:
            try:
                events.append(AcceptedEvent.model_validate_json(value).logged)
            except ValidationError as exc:
                log.error("unreadable accepted-event record at %s: %s", source, exc)
                bad.append(unreadable(source, value, exc))
        return catalog.timed_insert("event_log", lambda: self.event_log.write(events)), self.sink.write(bad)

    def conversions(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        """(conversions recorded, dead_lettered rows). Written after the batch's receipts, so a
        conversion sees the touches that arrived with it. One conversion the engine refuses is kept as
        a dead_lettered row; it never holds back the others."""
        readable: list[tuple[ReceiptsRecord, Conversion]] = []
        bad: list[Receipt] = []
        for source, value in records:
            try:
                readable.append(((source, value), Conversion.model_validate_json(value)))
            except ValidationError as exc:
                log.error("unreadable conversion record at %s: %s", source, exc)
                bad.append(unreadable(source, value, exc))
        try:
            self._attribute([conversion for _, conversion in readable])
        except Exception as exc:
            if _retryable(exc):
                raise
            log.exception("attributing %d conversions failed; trying them one at a time", len(readable))
            for (source, value), conversion in readable:
                try:
                    self._attribute([conversion])
                except Exception as one:
                    if _retryable(one):
                        raise
                    bad.append(refused(source, value, f"attribution failed: {type(one).__name__}: {one}"))
        return len(readable), self.sink.write(bad)

    def erasures(self, records: Sequence[ReceiptsRecord]) -> int:
        """Apply each erasure request (analytics/erasure.py); one that does not read is logged without
        its content (it names a person) and skipped; rows still naming the person are logged by count."""
        applied = 0
        for source, value in records:
            try:
                request = ErasureRequest.model_validate_json(value)
            except ValidationError as exc:
                log.error("unreadable erasure request at %s: %d errors", source, exc.error_count())
                continue
            try:
                self._apply(request)
            except Exception as exc:
                if _retryable(exc):
                    raise
                # Logged by request id (never the person): asking again applies it again.
                log.exception("applying erasure %s failed: %s", request.request_id, type(exc).__name__)
                continue
            # Rows of messages that were in flight when the person was erased arrive after this:
            # applied once more a while later (held in memory only; lost if the service restarts).
            self._again.append((time.monotonic() + self.erase_again_after, request))
            applied += 1
        return applied

    def _apply(self, request: ErasureRequest) -> None:
        left = {table: n for table, n in erasure.apply(self.client, request).items() if n}
        if left:
            log.error("erasure %s left rows naming the person: %s", request.request_id, left)

    def _erase_again(self) -> None:
        now = time.monotonic()
        while self._again and self._again[0][0] <= now:
            request = self._again[0][1]
            try:
                self._apply(request)
            except Exception as exc:
                if _retryable(exc):
                    raise  # the batch is written again, the request still held
                log.exception("applying erasure %s again failed: %s", request.request_id, type(exc).__name__)
            self._again.pop(0)
    def audit(self, records: Sequence[ReceiptsRecord]) -> int:
        """Audit entries written; a record that is not an audit record is kept as an `audit.unreadable`
        entry with its reason, so the trail shows it rather than losing it."""
        entries = read_records(records)
        for entry in entries:
            if entry.action == UNREADABLE_ACTION and entry.actor_kind == "system":
                log.error("unreadable audit record at %s: %s", entry.target, entry.reason)
        return catalog.timed_insert("audit_log", lambda: self.audit_log.write(entries))

    def _attribute(self, conversions: Sequence[Conversion]) -> int:
        return attribute(self.client, conversions, self.attribution, tokens=self.tokens) if conversions else 0


def refused(source: str, value: bytes, reason: str) -> Receipt:
    """The dead_lettered row of a readable record the engine would not take; stable per record."""
    digest = hashlib.blake2b(source.encode() + b"\x1f" + value, digest_size=12).hexdigest()
    return Receipt(message_id=f"dl-{digest}", status="dead_lettered", reason=f"{reason} (record {source})")


@dataclass
class Batch:
    """What was read since the last write, by kind, and the next offset of each partition."""

    records: dict[Kind, list[ReceiptsRecord]] = field(
        default_factory=lambda: {
            "receipts": [], "accepted": [], "conversions": [], "erasures": [], "audit": []
        }
    )
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    size: int = 0

    def __bool__(self) -> bool:
        return bool(self.offsets)


class AnalyticsService:
    """Reads the topics, writes each batch, then commits its offsets."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        kinds: Mapping[str, Kind],
        writers: Writers,
        progress: Progress,
        batch_bytes: int = BATCH_BYTES,
        batch_wait: float = BATCH_WAIT,
    ) -> None:
        self._consumer = consumer
        self._kinds = dict(kinds)  # topic name -> kind
        self._writers = writers
        self._progress = progress
        self._batch_bytes = batch_bytes
        self._batch_wait = batch_wait

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the batches in hand are written and committed first.

        The next batch is read while the last one is written (the insert runs on a thread), so the
        fetches and the engine's parsing overlap. Batches are committed in the order read, each only
        once it is written: a batch that could not be written stops the loop with nothing after it
        committed, since a later offset would commit it too."""
        writing: tuple[Batch, asyncio.Task[bool]] | None = None
        while True:
            batch = Batch() if stop.is_set() else await self._collect(stop, writing and writing[1])
            if writing is not None:
                written, task = writing
                writing = None
                if not await task:
                    return
                await self._commit(written)
            if batch:
                writing = (batch, asyncio.create_task(self._write(batch, stop)))
            elif stop.is_set():
                return

    async def _collect(self, stop: asyncio.Event, writing: asyncio.Task[bool] | None = None) -> Batch:
        """Read until the batch is full or `batch_wait` old; with nothing read yet, also return once the
        write in flight is done, so that its offsets are committed without waiting for new records."""
        batch = Batch()
        deadline: float | None = None
        while batch.size < self._batch_bytes and not stop.is_set():
            if not batch and writing is not None and writing.done():
                break
            wait = self._batch_wait if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            fetched = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=10_000)
            for partition, messages in fetched.items():
                kind = self._kinds[partition.topic]
                for message in messages:
                    value = message.value or b""
                    source = f"{partition.topic}:{partition.partition}:{message.offset}"
                    batch.records[kind].append((source, value))
                    batch.size += len(value)
                batch.offsets[partition] = messages[-1].offset + 1
            if batch and deadline is None:
                deadline = time.monotonic() + self._batch_wait
        return batch

    async def _write(self, batch: Batch, stop: asyncio.Event) -> bool:
        """Write the batch, retrying while ClickHouse is unavailable; False if stopped before it was."""
        attempt = 0
        while True:
            try:
                rows = await asyncio.to_thread(self._writers.receipts, batch.records["receipts"])
                logged, bad = await asyncio.to_thread(self._writers.accepted, batch.records["accepted"])
                converted, unattributable = (
                    await asyncio.to_thread(self._writers.conversions, batch.records["conversions"])
                    if batch.records["conversions"]
                    else (0, 0)
                )
                # After the batch's receipts: a row written with the person's id in the same batch
                # is anonymised with the others.
                if batch.records["erasures"]:
                    await asyncio.to_thread(self._writers.erasures, batch.records["erasures"])
                audited = (
                    await asyncio.to_thread(self._writers.audit, batch.records["audit"])
                    if batch.records["audit"]
                    else 0
                )
                break
            except Exception as exc:  # the batch is kept and retried; its offsets stay uncommitted
                if not _retryable(exc):
                    raise
                catalog.infrastructure_error(exc, "analytics")
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("writing a batch failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return False
                except TimeoutError:
                    continue
        # Receipts first: the receipts' rows of a batch, accepted events after; counted once durable.
        await self._progress(
            {
                "rows": rows + bad + unattributable,
                "logged": logged,
                "conversions": converted,
                "audited": audited,
            }
        )
        return True

    async def _commit(self, batch: Batch) -> None:
        try:
            await self._consumer.commit({tp: offset for tp, offset in batch.offsets.items()})
            catalog.consumer_lag("analytics", batch.offsets, self._consumer.highwater)
        except CommitFailedError as exc:
            # The group rebalanced meanwhile: the new owner reads the batch again; duplicates collapse.
            log.warning("committing offsets failed, the batch will be read again: %s", exc)


def _retryable(exc: BaseException) -> bool:
    """An insert that failed for want of ClickHouse (not a bug in a batch, which is isolated already)."""
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(exc, SinkError | OperationalError | OSError) or type(exc).__name__ == "EventLogError"


def consumer_settings(app_id: str) -> dict[str, Any]:
    """The service's own group, offsets committed by hand; timeouts that make the Tansu broker quick."""
    return {
        "group_id": f"{app_id}-analytics",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "rebalance_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 32 * 1024 * 1024,
    }
