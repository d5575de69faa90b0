"""Bench: rows per second from the `receipts` topic into ClickHouse through the analytics service, and
the service's CPU time per row.

Receipts are produced first (arrays of 500, as the stages produce them) to a broker of its own; then
the service's loop (analytics/service.py, with its real consumer, batches, inserts and commits) runs
in this process until every row is written. CPU time is this process's, so it includes the
embedded engine's threads parsing and writing.

Run: .venv/bin/python bench/analytics_ingest.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.service import AnalyticsService, ClickHouseWriters, consumer_settings
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


async def ingest(bootstrap: str, topic: str, dsn: str, rows: int) -> tuple[float, float, int]:
    client = open_clickhouse(dsn)
    apply_migrations(client)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, **consumer_settings("bench"))
    written = 0
    done = asyncio.Event()

    async def progress(counts: Mapping[str, int]) -> None:
        nonlocal written
        written += counts.get("rows", 0)
        if written >= rows:
            done.set()

    await consumer.start()
    try:
        # Joining the group is not ingest: timed from the assignment (aiokafka offers no event for it).
        while not consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        service = AnalyticsService(consumer, {topic: "receipts"}, ClickHouseWriters(client), progress)
        stop = asyncio.Event()
        wall, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(service.run(stop))
        await done.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop.set()
        await task
        stored = int(client.query("SELECT count() FROM message_events").result_rows[0][0])
    finally:
        await consumer.stop()
        client.close()
    return wall, cpu, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        var = Path(folder)
        with LocalParts(var, kafka_port=free_port(), redis_port=free_port()) as parts:
            bootstrap = parts.kafka_url.removeprefix("kafka://")
            started = time.perf_counter()
            asyncio.run(produce(bootstrap, "bench.receipts", args.rows))
            print(f"produced {args.rows:,} receipts in {time.perf_counter() - started:.1f}s")
            wall, cpu, stored = asyncio.run(
                ingest(bootstrap, "bench.receipts", f"chdb://{var / 'clickhouse'}", args.rows)
            )
    print(
        f"service: {args.rows:,} rows from the topic into ClickHouse in {wall:.2f}s = "
        f"{args.rows / wall:,.0f} rows/s; CPU {cpu:.2f}s = {cpu / args.rows * 1e6:.2f} µs per row "
        f"({stored:,} rows stored before merges)"
    )


if __name__ == "__main__":
    main()
