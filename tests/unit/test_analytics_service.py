"""The analytics service's loop with a fake consumer and fake tables: offsets are committed only after
the batch is written, a failed write is retried with the batch held, and progress counts what was written."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from analytics.service import AnalyticsService
from analytics.sink import ReceiptsRecord, SinkError

RECEIPTS = TopicPartition("receipts", 0)
ACCEPTED = TopicPartition("events.accepted", 1)
AUDIT = TopicPartition("audit", 2)


@dataclass
class Message:
    offset: int
    value: bytes


@dataclass
class FakeConsumer:
    """Hands out scripted fetches, then nothing; records every commit and what had been written by then."""

    fetches: list[dict[TopicPartition, list[Message]]]
    tables: FakeTables
    commits: list[tuple[dict[TopicPartition, int], int]] = field(default_factory=list)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Message]]:
        if self.fetches:
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((dict(offsets), len(self.tables.written)))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None  # no fetch has told it: the lag gauge is left alone


@dataclass
class FakeTables:
    failures: int = 0
    written: list[ReceiptsRecord] = field(default_factory=list)
    logged: list[ReceiptsRecord] = field(default_factory=list)
    audited: list[ReceiptsRecord] = field(default_factory=list)

    def receipts(self, records: Sequence[ReceiptsRecord]) -> int:
        if self.failures:
            self.failures -= 1
            raise SinkError("ClickHouse unreachable")
        self.written.extend(records)
        return 2 * len(records)  # two receipts per record

    def accepted(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        self.logged.extend(records)
        return len(records), 0

    def conversions(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        return len(records), 0

    def audit(self, records: Sequence[ReceiptsRecord]) -> int:
        self.audited.extend(records)
        return len(records)


def service(
    consumer: FakeConsumer, tables: FakeTables, progress: list[Mapping[str, int]]
) -> AnalyticsService:
    async def record(counts: Mapping[str, int]) -> None:
        progress.append(dict(counts))

    consumer_any: Any = consumer
    return AnalyticsService(
        consumer_any,
        {"receipts": "receipts", "events.accepted": "accepted", "audit": "audit"},
        tables,
        record,
        batch_wait=0.05,
    )


async def run_until(svc: AnalyticsService, done: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    deadline = asyncio.get_running_loop().time() + 10.0
    while not done():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_offsets_are_committed_after_the_batch_is_written_one_past_the_last() -> None:
    tables = FakeTables()
    consumer = FakeConsumer(
        [{RECEIPTS: [Message(7, b"[]"), Message(8, b"[]")], ACCEPTED: [Message(3, b"{}")]}], tables
    )
    progress: list[Mapping[str, int]] = []
    await run_until(service(consumer, tables, progress), lambda: consumer.commits)
    assert consumer.commits == [({RECEIPTS: 9, ACCEPTED: 4}, 2)]
    assert [source for source, _ in tables.written] == ["receipts:0:7", "receipts:0:8"]
    assert [source for source, _ in tables.logged] == ["events.accepted:1:3"]
    assert progress == [{"rows": 4, "logged": 1, "conversions": 0, "audited": 0}]


async def test_audit_records_are_written_with_the_batch_and_counted() -> None:
    tables = FakeTables()
    consumer = FakeConsumer(
        [{AUDIT: [Message(5, b"{}"), Message(6, b"{}")], RECEIPTS: [Message(1, b"[]")]}], tables
    )
    progress: list[Mapping[str, int]] = []
    await run_until(service(consumer, tables, progress), lambda: consumer.commits)
    assert consumer.commits == [({AUDIT: 7, RECEIPTS: 2}, 1)]
    assert [source for source, _ in tables.audited] == ["audit:2:5", "audit:2:6"]
    assert progress == [{"rows": 2, "logged": 0, "conversions": 0, "audited": 2}]


async def test_a_failed_write_is_retried_with_the_batch_held_and_committed_once_written() -> None:
    tables = FakeTables(failures=1)
    consumer = FakeConsumer([{RECEIPTS: [Message(0, b"[]")]}], tables)
    progress: list[Mapping[str, int]] = []
    await run_until(service(consumer, tables, progress), lambda: consumer.commits)
    assert consumer.commits == [({RECEIPTS: 1}, 1)]  # committed only after the retry wrote it
    assert progress == [{"rows": 2, "logged": 0, "conversions": 0, "audited": 0}]


async def test_stopped_while_clickhouse_is_down_nothing_is_committed_or_counted() -> None:
    tables = FakeTables(failures=1000)
    consumer = FakeConsumer([{RECEIPTS: [Message(0, b"[]")]}], tables)
    progress: list[Mapping[str, int]] = []
    await run_until(service(consumer, tables, progress), lambda: not consumer.fetches)
    assert consumer.commits == [] and progress == [] and tables.written == []


@dataclass
class GatedTables(FakeTables):
    """Writes only once the gate opens, so a test sees what the loop does while an insert runs."""

    gate: threading.Event = field(default_factory=threading.Event)

    def receipts(self, records: Sequence[ReceiptsRecord]) -> int:
        assert self.gate.wait(10.0)
        return super().receipts(records)


def one_batch_per_fetch(consumer: FakeConsumer, tables: FakeTables) -> AnalyticsService:
    async def ignore(counts: Mapping[str, int]) -> None:
        return None

    consumer_any: Any = consumer
    return AnalyticsService(
        consumer_any, {"receipts": "receipts"}, tables, ignore, batch_bytes=1, batch_wait=0.05
    )


async def test_the_next_batch_is_read_while_one_is_written_and_batches_commit_in_order() -> None:
    tables = GatedTables()
    consumer = FakeConsumer([{RECEIPTS: [Message(0, b"[]")]}, {RECEIPTS: [Message(1, b"[]")]}], tables)
    stop = asyncio.Event()
    task = asyncio.create_task(one_batch_per_fetch(consumer, tables).run(stop))
    try:
        for _ in range(500):
            if not consumer.fetches:
                break
            await asyncio.sleep(0.01)
        assert consumer.fetches == [] and tables.written == [] and consumer.commits == []
    finally:
        tables.gate.set()
    deadline = asyncio.get_running_loop().time() + 10.0
    while len(consumer.commits) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert consumer.commits == [({RECEIPTS: 1}, 1), ({RECEIPTS: 2}, 2)]


async def test_a_batch_read_behind_one_never_written_is_neither_written_nor_committed() -> None:
    tables = FakeTables(failures=1000)
    consumer = FakeConsumer([{RECEIPTS: [Message(0, b"[]")]}, {RECEIPTS: [Message(1, b"[]")]}], tables)
    await run_until(one_batch_per_fetch(consumer, tables), lambda: not consumer.fetches)
    assert consumer.commits == [] and tables.written == []
