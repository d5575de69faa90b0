"""Bench: rows per second from the `receipts` topic into ClickHouse through the analytics service, and
CPU time per row, with the parts measured apart.

Receipts are produced first (arrays of 500, as the stages produce them) to a broker of its own. Then:
- consume only: the service's consumer settings, `getmany` until every record is read (nothing written);
- insert only: those records written by the service's sink in batches of the service's size;
- end to end: the service's loop (analytics/service.py, with its real consumer, batches, inserts and
  commits) from the topic until every row is written;
- from a fetched topic: the same loop fed from the records already in memory, i.e. what the service
  would do with a broker that is never the bottleneck.
CPU time is this process's, so it includes the embedded engine's threads parsing and writing.

Run: .venv/bin/python bench/analytics_ingest.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from clickhouse_connect.driver.client import Client

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.service import BATCH_BYTES, AnalyticsService, ClickHouseWriters, consumer_settings
from analytics.sink import ReceiptSink
from localparts import LocalParts, free_port
from records.topics import CHANNELS, STATUSES, Receipt, message_id_for

PER_RECORD = 500


def make_receipts(count: int) -> list[Receipt]:
    """Receipts shaped like the stages' (every field set), over the last day, every channel and status."""
    start = datetime.now(UTC) - timedelta(days=1)
    return [
        Receipt(
            event_time=start + timedelta(seconds=n),
            message_id=message_id_for(f"app{n % 5}", f"e{n // 4}", f"u{n % 20000}"),
            event_id=f"e{n // 4}",
            app=f"app{n % 5}",
            user_id=f"u{n % 20000}",
            channel=CHANNELS[n % len(CHANNELS)],
            provider=f"{CHANNELS[n % len(CHANNELS)]}-main",
            status=STATUSES[n % len(STATUSES)],
            rule_id="default.notice",
            rule_version="v1",
            template="notice",
            cost=0.045,
        )
        for n in range(count)
    ]


async def produce(bootstrap: str, topic: str, rows: int) -> None:
    receipts = make_receipts(min(rows, 50_000))
    encoded = [r.model_dump_json().encode() for r in receipts]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024, linger_ms=5
    )
    await producer.start()
    try:
        sent = 0
        pending = []
        while sent < rows:
            start = sent % len(encoded)
            chunk = encoded[start : start + min(PER_RECORD, rows - sent)]
            pending.append(await producer.send(topic, b"[" + b",".join(chunk) + b"]", key=str(sent).encode()))
            sent += len(chunk)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


Fetched = dict[TopicPartition, list["FetchedRecord"]]


@dataclass
class FetchedRecord:
    """What the service reads of a consumer record."""

    offset: int
    value: bytes


@dataclass
class Clock:
    """Wall and CPU seconds since it was made."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def figure(self, label: str, rows: int) -> str:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return (
            f"{label:<26} {rows / wall:>11,.0f} rows/s  {cpu / rows * 1e6:5.2f} µs CPU per row  ({wall:.2f}s)"
        )


async def joined(consumer: AIOKafkaConsumer) -> None:
    # Joining the group is not ingest: timed from the assignment (aiokafka offers no event for it).
    while not consumer.assignment():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def consume_only(bootstrap: str, topic: str, rows: int) -> tuple[str, Fetched]:
    """Every record of the topic, read with the service's consumer settings in a group of its own."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, **consumer_settings("bench-consume"))
    fetched: Fetched = {}
    await consumer.start()
    try:
        await joined(consumer)
        clock, read = Clock(), 0
        while read < rows:
            for partition, messages in (await consumer.getmany(timeout_ms=500, max_records=10_000)).items():
                fetched.setdefault(partition, []).extend(
                    FetchedRecord(m.offset, m.value or b"") for m in messages
                )
                read += PER_RECORD * len(messages)
        return clock.figure("consume only", rows), fetched
    finally:
        await consumer.stop()


def insert_only(client: Client, fetched: Fetched, rows: int) -> str:
    """The fetched records written by the sink in batches of the service's size."""
    sink = ReceiptSink(client)
    records = [
        (f"{tp.topic}:{tp.partition}:{record.offset}", record.value)
        for tp, partition in fetched.items()
        for record in partition
    ]
    clock = Clock()
    batch: list[tuple[str, bytes]] = []
    size = 0
    for record in records:
        batch.append(record)
        size += len(record[1])
        if size >= BATCH_BYTES:
            sink.write_records(batch)
            batch, size = [], 0
    sink.write_records(batch)
    return clock.figure("insert only", rows)


@dataclass
class FetchedConsumer:
    """Hands out records already fetched, as `getmany` would; commits are only counted."""

    fetched: Fetched
    commits: int = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched:
        handed: Fetched = {}
        room = max_records
        for partition, records in self.fetched.items():
            if records and room:
                handed[partition], self.fetched[partition] = records[:room], records[room:]
                room -= len(handed[partition])
        if not handed:
            await asyncio.sleep(timeout_ms / 1000)
        return handed

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits += 1


async def through_service(consumer: Any, topic: str, client: Client, rows: int, label: str) -> str:
    """The service's loop until every row is written."""
    written = 0
    done = asyncio.Event()

    async def progress(counts: Mapping[str, int]) -> None:
        nonlocal written
        written += counts.get("rows", 0)
        if written >= rows:
            done.set()

    service = AnalyticsService(consumer, {topic: "receipts"}, ClickHouseWriters(client), progress)
    stop = asyncio.Event()
    clock = Clock()
    task = asyncio.create_task(service.run(stop))
    await done.wait()
    figure = clock.figure(label, rows)
    stop.set()
    await task
    return figure


async def end_to_end(bootstrap: str, topic: str, client: Client, rows: int) -> str:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, **consumer_settings("bench"))
    await consumer.start()
    try:
        await joined(consumer)
        return await through_service(consumer, topic, client, rows, "end to end")
    finally:
        await consumer.stop()


def stored(client: Client) -> int:
    return int(client.query("SELECT count() FROM message_events").result_rows[0][0])


def emptied(client: Client) -> Client:
    """The same rows are written by each part: each starts from an empty table."""
    for table in ("message_events", "message_rollup_daily"):
        client.command(f"TRUNCATE TABLE {table}")
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    topic = "bench.receipts"
    with tempfile.TemporaryDirectory() as folder:
        var = Path(folder)
        client = open_clickhouse(f"chdb://{var / 'clickhouse'}")
        try:
            apply_migrations(client)
            with LocalParts(var, kafka_port=free_port(), redis_port=free_port()) as parts:
                bootstrap = parts.kafka_url.removeprefix("kafka://")
                started = time.perf_counter()
                asyncio.run(produce(bootstrap, topic, args.rows))
                print(f"produced {args.rows:,} receipts in {time.perf_counter() - started:.1f}s")
                consumed, fetched = asyncio.run(consume_only(bootstrap, topic, args.rows))
                print(consumed)
                print(insert_only(emptied(client), fetched, args.rows))
                print(asyncio.run(end_to_end(bootstrap, topic, emptied(client), args.rows)))
            stored_end_to_end = stored(client)
            print(
                asyncio.run(
                    through_service(
                        FetchedConsumer(fetched), topic, emptied(client), args.rows, "from a fetched topic"
                    )
                )
            )
            print(
                f"({stored_end_to_end:,} rows stored end to end before merges; receipts repeat every 50,000)"
            )
        finally:
            client.close()


if __name__ == "__main__":
    main()
