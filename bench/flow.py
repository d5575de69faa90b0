"""Deliveries per second through the whole flow on the local parts, in one worker process.

Starts its own broker and Redis on free loopback ports, loads N users, emits one campus-wide event
(one delivery per user: inbox) plus K individual events (email to a local SMTP server), and times
from the first produce until every receipt is in ClickHouse.

Run: .venv/bin/python bench/flow.py [--users 5000] [--individual 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from app import Settings
from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from state.apps import AppRegistry
from state.connection import open_redis
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory


def users(n: int) -> list[User]:
    return [
        User(user_id=f"u{i}", name=f"User {i}", bindings={"inbox": f"u{i}", "email": f"u{i}@bench.example"})
        for i in range(n)
    ]


def events(n_individual: int, n_users: int) -> list[bytes]:
    campus = {
        "event_id": "campus-1",
        "app": "campus",
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "notice",
        "audience": {"all": True},
        "data": {"headline": "Library hours", "body": "Open until midnight during exams."},
    }
    individual = [
        {
            "event_id": f"fee-{i}",
            "app": "campus",
            "type": "fee.due",
            "template": "fee_due",
            "category": "transactional",
            "audience": {"user_ids": [f"u{i % n_users}"]},
            "data": {"amount": "¥100", "due_date": "2026-12-01", "term": "Autumn"},
        }
        for i in range(n_individual)
    ]
    return [json.dumps(e).encode() for e in [campus, *individual]]


async def wait_caught_up(counters: FlowCounters, emitted: int, worker: SwitchboardProcess) -> None:
    while not caught_up(await counters.read(), emitted):
        if not worker.running:
            raise RuntimeError(worker.log_tail())
        await asyncio.sleep(0.05)


async def drive(settings: Settings, n_users: int, n_individual: int, worker: SwitchboardProcess) -> None:
    redis = open_redis(settings.redis)
    await UserDirectory(redis).upsert(users(n_users))
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    payloads = events(n_individual, n_users)
    worker.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    counters = FlowCounters(redis)
    # Wait until the worker has joined its group and consumed a first event, so start-up is not timed.
    await producer.send_and_wait(settings.topic("events"), payloads[0])
    await wait_caught_up(counters, 1, worker)
    before = await counters.read()
    started = time.perf_counter()
    acks = [await producer.send(settings.topic("events"), payload) for payload in payloads[1:]]
    await asyncio.gather(*acks)
    await producer.stop()
    await wait_caught_up(counters, len(payloads), worker)
    elapsed = time.perf_counter() - started
    after = await counters.read()
    deliveries = after["deliveries"] - before["deliveries"]
    rows = after["rows"] - before["rows"]
    print(f"warm-up: campus-wide event to {n_users} users (inbox) processed before timing")
    print(
        f"timed:   {n_individual} individual events -> {deliveries} deliveries, {rows} rows in {elapsed:.2f}s"
    )
    rates = f"{n_individual / elapsed:,.0f} events/s, {deliveries / elapsed:,.0f} deliveries/s"
    print(f"         {rates} end to end")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--individual", type=int, default=1000)
    args = parser.parse_args()
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
            )
            worker = SwitchboardProcess("worker", settings, var / "worker.log")
            try:
                asyncio.run(drive(settings, args.users, args.individual, worker))
            finally:
                worker.stop()
            print(f"         SMTP server received {smtp.count} emails")


if __name__ == "__main__":
    main()
