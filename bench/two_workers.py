"""Throughput of one worker against two on the same topics (email+inbox statements).

Starts its own broker, Redis and SMTP server on free loopback ports and loads N users. For one and
then two worker processes (a fresh app id and topics each time) it sends a warm-up event, waits until
every worker has joined the group, then times K individual `fee.statement` events (email to the local
SMTP server, plus inbox) from the first produce until every stage has caught up. Prints wall rates and
the workers' CPU seconds (utime + stime from /proc). The analytics service is not run: its cost does
not depend on the number of workers.

Run: .venv/bin/python bench/two_workers.py [--users 5000] [--events 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from records.signing import events_signing_key, signed_headers
from settings import Settings
from state.apps import AppRegistry
from state.connection import open_redis
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory

JOIN_SECONDS = 60.0


def users(n: int) -> list[User]:
    return [
        User(user_id=f"u{i}", bindings={"inbox": f"u{i}", "email": f"u{i}@bench.example"}) for i in range(n)
    ]


def statements(n: int, n_users: int, run: str) -> list[bytes]:
    """Individual events that the default rules send by email and to the inbox (fees-and-payments)."""
    return [
        json.dumps(
            {
                "event_id": f"{run}-{i}",
                "app": "campus",
                "type": "fee.statement",
                "template": "fee_due",
                "category": "transactional",
                "audience": {"user_ids": [f"u{i % n_users}"]},
                "data": {"amount": "¥100", "due_date": "2026-12-01", "term": "Autumn"},
            }
        ).encode()
        for i in range(n)
    ]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a live process, from /proc/<pid>/stat."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def members(settings: Settings) -> int:
    """How many members the workers' consumer group has (0 if the broker cannot say)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.removeprefix("kafka://"))
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([settings.app_id])
        # Each group: (error_code, group_id, state, protocol_type, protocol, members, ...).
        return max((len(group[5]) for response in responses for group in response.groups), default=0)
    except Exception:  # a broker that cannot describe groups: the deadline below still ends the wait
        return 0
    finally:
        await admin.close()


async def produce(settings: Settings, payloads: list[bytes], signing_key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    try:
        topic = settings.topic("events")
        acks = [
            await producer.send(topic, p, key=str(i).encode(), headers=signed_headers(p, signing_key))
            for i, p in enumerate(payloads)
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def wait(counters: FlowCounters, emitted: int, workers: list[SwitchboardProcess]) -> None:
    while not caught_up(await counters.read(), emitted, analytics=False):
        for worker in workers:
            if not worker.running:
                raise RuntimeError(worker.log_tail())
        await asyncio.sleep(0.05)


async def run(base: Settings, n_workers: int, n_users: int, n_events: int, var: Path) -> tuple[float, float]:
    """(wall seconds, worker CPU seconds) for `n_events` statements through `n_workers` workers."""
    unique = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"app_id": f"bench-{unique}", "topic_prefix": f"b{unique}-"})
    redis = open_redis(settings.redis)
    await redis.flushdb()
    await UserDirectory(redis).upsert(users(n_users))
    signing_key = events_signing_key(await AppRegistry(redis).register("campus", {"inbox", "email"}))
    counters = FlowCounters(redis)
    workers = [SwitchboardProcess("worker", settings, var / f"{unique}-{i}.log") for i in range(n_workers)]
    try:
        for worker in workers:
            worker.start()
        await produce(settings, statements(1, n_users, "warm-up"), signing_key)
        await wait(counters, 1, workers)
        deadline = time.monotonic() + JOIN_SECONDS
        while await members(settings) < n_workers and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # polling the broker: there is no event to wait on
        await asyncio.sleep(2)  # the rebalance that follows the last join
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        started = time.perf_counter()
        await produce(settings, statements(n_events, n_users, "timed"), signing_key)
        await wait(counters, 1 + n_events, workers)
        wall = time.perf_counter() - started
        return wall, sum(cpu_seconds(w.pid) for w in workers) - cpu_before
    finally:
        for worker in workers:
            worker.stop()
        await redis.aclose()


async def bench(n_users: int, n_events: int, counts: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp, LocalSmtpServer() as smtp:
        var = Path(tmp)
        with LocalParts(var, kafka_port=free_port(), redis_port=free_port()) as parts:
            base = Settings(
                kafka=parts.kafka_url,
                redis=parts.redis_url,
                var_dir=var / "var",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                env="dev",
            )
            for n in counts:
                smtp.clear()
                wall, cpu = await run(base, n, n_users, n_events, var)
                print(
                    f"{n} worker(s): {n_events} email+inbox events in {wall:.1f}s = {n_events / wall:,.0f} "
                    f"events/s ({2 * n_events / wall:,.0f} sends/s); worker CPU {cpu:.1f}s "
                    f"= {1000 * cpu / n_events:.2f} ms per event; {smtp.count} emails"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    # Stopped from outside, still stop the workers and the parts on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(bench(args.users, args.events, args.workers))


if __name__ == "__main__":
    main()
