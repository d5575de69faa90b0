"""Bench: the audit log and the dead-letter shelf.

Audit: the analytics service's writer (validation and insert, 5,000-record batches) into a fresh
embedded ClickHouse folder, then one page of `read_audit` by actor, by target, by action prefix and the
newest 1,000. Dead letters: letters written by a batching producer to a fresh local broker, then listed
(all, one app, reason and since) and one fetched by id; every letter must be listed (the local broker
answers end offsets short of a batching producer's records).

Run: .venv/bin/python bench/audit_and_dead_letters.py [--audit 200000] [--letters 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from analytics.audit_log import AuditQuery, audit_query, read_audit
from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.service import ClickHouseWriters
from localparts import LocalParts, free_port
from processors.dead_letter_shelf import DeadLetterShelf, LetterFilter
from processors.dead_letters import dead_letter
from records.audit import AuditRecord, mask_secrets

ACTIONS = ("app.disable", "role.grant", "dead_letter.replay", "channel.secret_set")


def bench_audit(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        client = open_clickhouse(f"chdb://{folder}")
        apply_migrations(client)
        start = datetime.now(UTC) - timedelta(days=46)
        records = [
            (
                f"audit:{i % 4}:{i}",
                AuditRecord(
                    actor=f"op{i % 50}",
                    actor_kind="operator",
                    source="10.0.0.1",
                    action=ACTIONS[i % 4],
                    target_kind="app",
                    target=f"app{i % 500}",
                    app=f"app{i % 500}",
                    at=start + timedelta(seconds=i * 20),
                    before=mask_secrets({"enabled": True}),
                    after=mask_secrets({"enabled": False, "secret": "x"}),
                )
                .model_dump_json()
                .encode(),
            )
            for i in range(count)
        ]
        writers = ClickHouseWriters(client)
        started = time.perf_counter()
        for first in range(0, count, 5000):
            writers.audit(records[first : first + 5000])
        elapsed = time.perf_counter() - started
        print(f"audit: wrote {count:,} records in {elapsed:.2f} s, {elapsed / count * 1e6:.1f} µs per record")
        pages: dict[str, AuditQuery] = {
            "by actor": audit_query(actor="op7"),
            "by target": audit_query(target="app42"),
            "by action prefix, 7d": audit_query(action="dead_letter.", since="7d"),
            "newest 1,000": audit_query(limit=1000),
        }
        for label, query in pages.items():
            read_audit(client, query)
            started = time.perf_counter()
            for _ in range(5):
                page = read_audit(client, query)
            took = (time.perf_counter() - started) / 5 * 1000
            print(f"audit: a page {label}: {len(page.entries)} entries in {took:.0f} ms")
        client.close()


async def bench_letters(parts: LocalParts, count: int) -> None:
    bootstrap = parts.kafka_url.removeprefix("kafka://")
    topic = f"bench-{uuid.uuid4().hex[:6]}-events.deadletter"
    raw = json.dumps(
        {
            "event_id": "x",
            "app": "campus",
            "type": "t",
            "template": "campus_notice",
            "category": "newsletter",
            "audience": {"user_ids": ["u1"]},
            "data": {"headline": "h" * 200, "body": "b" * 400},
        }
    ).encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = []
        for i in range(count):
            letter = dead_letter(
                raw,
                f"events:{i % 4}:{i}",
                "category: Input should be ...",
                app="campus" if i % 2 else "bursar",
                event_id=f"e{i}",
            )
            sent.append(await producer.send(topic, letter.model_dump_json().encode(), key=str(i).encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    shelf = DeadLetterShelf(bootstrap, topic)
    found = []
    for label, wanted in (
        ("all", None),
        ("one app", LetterFilter(app="campus")),
        ("reason and since", LetterFilter(reason="CATEGORY", since=datetime.now(UTC) - timedelta(hours=1))),
    ):
        started = time.perf_counter()
        found = await shelf.letters(wanted)
        took = time.perf_counter() - started
        print(f"dead letters: listed {label}: {len(found):,} of {count:,} in {took:.2f} s")
    started = time.perf_counter()
    one = await shelf.get(found[len(found) // 2].letter_id)
    took = (time.perf_counter() - started) * 1000
    print(f"dead letters: fetched one by id ({one is not None}) in {took:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--audit", type=int, default=200_000, help="audit records to write")
    parser.add_argument("--letters", type=int, default=10_000, help="dead letters to list")
    args = parser.parse_args()
    bench_audit(args.audit)
    with (
        tempfile.TemporaryDirectory() as var,
        LocalParts(Path(var), kafka_port=free_port(), redis_port=free_port()) as parts,
    ):
        asyncio.run(bench_letters(parts, args.letters))


if __name__ == "__main__":
    main()
