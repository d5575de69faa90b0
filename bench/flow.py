"""Deliveries per second through the whole flow on the local parts, in one worker process.

Starts its own broker and Redis on free loopback ports and loads N users. Then it times three loads,
each from the first produce until every receipt is in ClickHouse: one campus-wide event (one inbox
delivery per user), K individual statements (email to a local SMTP server, plus inbox) and K fee
notices (inbox, with the rule's fallback chain armed in Redis for each).

Run: .venv/bin/python bench/flow.py [--users 5000] [--individual 1000] [--rules rules/default.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.connection import open_redis
from state.fallback import FallbackSchedule
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory


def users(n: int) -> list[User]:
    return [
        User(user_id=f"u{i}", name=f"User {i}", bindings={"inbox": f"u{i}", "email": f"u{i}@bench.example"})
        for i in range(n)
    ]


def campus_notice(event_id: str, audience: dict[str, Any]) -> bytes:
    event = {
        "event_id": event_id,
        "app": "campus",
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "notice",
        "audience": audience,
        "data": {"headline": "Library hours", "body": "Open until midnight during exams."},
    }
    return json.dumps(event).encode()


def fee_events(n: int, n_users: int, kind: str) -> list[bytes]:
    """Individual transactional events. With the default rules a `fee.statement` goes by email and
    to the inbox (rule fees-and-payments); a `fee.due` to the inbox with a fallback chain (fee-notices)."""
    return [
        json.dumps(
            {
                "event_id": f"{kind}-{i}",
                "app": "campus",
                "type": kind,
                "template": "fee_due",
                "category": "transactional",
                "audience": {"user_ids": [f"u{i % n_users}"]},
                "data": {"amount": "¥100", "due_date": "2026-12-01", "term": "Autumn"},
            }
        ).encode()
        for i in range(n)
    ]


STAGES = ("events", "deliveries", "decided", "dispatched", "sent_done", "receipts", "rows")


async def wait_caught_up(
    counters: FlowCounters, emitted: int, processes: list[SwitchboardProcess], timeline: bool = False
) -> None:
    """Poll until caught up, rows in ClickHouse included; with `timeline`, print each stage's counter
    once a second (shows the lag)."""
    last_print = 0.0
    while not caught_up(counts := await counters.read(), emitted):
        for process in processes:
            if not process.running:
                raise RuntimeError(process.log_tail())
        if timeline and time.monotonic() - last_print >= 1.0:
            last_print = time.monotonic()
            print("  " + "  ".join(f"{name}={counts.get(name, 0)}" for name in STAGES))
        await asyncio.sleep(0.05)


async def timed(
    label: str,
    payloads: list[bytes],
    settings: Settings,
    counters: FlowCounters,
    processes: list[SwitchboardProcess],
) -> None:
    """Produce the payloads, wait until every stage has caught up, print the rates."""
    before = await counters.read()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    started = time.perf_counter()
    try:
        acks = [await producer.send(settings.topic("events"), payload) for payload in payloads]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    await wait_caught_up(counters, before.get("events", 0) + len(payloads), processes, timeline=True)
    elapsed = time.perf_counter() - started
    after = await counters.read()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in STAGES}
    print(
        f"{label}: {len(payloads)} events -> {delta['deliveries']} deliveries, {delta['dispatched']} sends, "
        f"{delta['rows']} rows in {elapsed:.2f}s = {len(payloads) / elapsed:,.0f} events/s, "
        f"{delta['deliveries'] / elapsed:,.0f} deliveries/s, {delta['dispatched'] / elapsed:,.0f} sends/s"
    )


async def drive(
    settings: Settings,
    n_users: int,
    n_individual: int,
    worker: SwitchboardProcess,
    service: SwitchboardProcess,
) -> None:
    redis = open_redis(settings.redis)
    await UserDirectory(redis).upsert(users(n_users))
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    counters = FlowCounters(redis)
    service.start()
    worker.start()
    processes = [worker, service]
    # One event first, so joining the consumer group and start-up are not timed.
    await timed("warm-up", [campus_notice("warm-up", {"user_ids": ["u0"]})], settings, counters, processes)
    await timed("campus-wide (inbox)", [campus_notice("all", {"all": True})], settings, counters, processes)
    await timed(
        "individual (email+inbox)",
        fee_events(n_individual, n_users, "fee.statement"),
        settings,
        counters,
        processes,
    )
    await timed(
        "fee notices (inbox+fallback)",
        fee_events(n_individual, n_users, "fee.due"),
        settings,
        counters,
        processes,
    )
    print(f"         fallback chains waiting in Redis: {await FallbackSchedule(redis).pending()}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--individual", type=int, default=1000)
    parser.add_argument(
        "--rules", type=Path, default=None, help="rule file or folder (default: the settings')"
    )
    args = parser.parse_args()
    # Stopped from outside, still stop the worker and the parts on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        with (
            LocalParts(var, kafka_port=free_port(), redis_port=free_port()) as parts,
            LocalSmtpServer() as smtp,
        ):
            settings = Settings(
                kafka=parts.kafka_url,
                redis=parts.redis_url,
                clickhouse=f"chdb://{var / 'clickhouse'}",
                var_dir=var,
                app_id="bench-flow",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                env="dev",
                analytics_port=free_port(),
            )
            if args.rules is not None:
                settings = settings.model_copy(update={"rules": args.rules.resolve()})
            worker = SwitchboardProcess("worker", settings, var / "worker.log")
            # The analytics service writes ClickHouse; the timings include every row landing there.
            service = SwitchboardProcess("analytics", settings, var / "analytics.log")
            try:
                asyncio.run(drive(settings, args.users, args.individual, worker, service))
            finally:
                worker.stop()
                service.stop()
            print(f"         SMTP server received {smtp.count} emails")


if __name__ == "__main__":
    main()
