"""Bench: frequency-cap checks/s through the Lua script, 2 caps x 2 windows per dispatch.

Three loads on a fresh local redis-server (AOF everysec, as deployed): one check per round trip,
pipelined batches (as Send checks a batch), and many concurrent tasks contending for the same few
users' caps, where it also verifies that no user got more sends than the tightest window allows.

With `--cluster` the same loads run on a local three-node Redis Cluster (each user's caps in one slot).

Run: .venv/bin/python bench/caps.py [--checks 20000] [--batch 100] [--tasks 32] [--redis URL | --cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from localparts import free_port
from localparts.redis_cluster import LocalRedisCluster
from localparts.redis_server import LocalRedis
from records.plan import CapLimit, DeliveryPlan, FrequencyCap
from records.topics import Dispatch, EventCore
from state.caps import FrequencyCaps
from state.connection import is_cluster, open_redis

PLAN = DeliveryPlan(
    caps=(
        FrequencyCap(
            id="marketing-user",
            scope=("user",),
            limits=(
                CapLimit(count=5, window=timedelta(days=1)),
                CapLimit(count=2, window=timedelta(hours=1)),
            ),
            on_exceed="delay",
        ),
        FrequencyCap(
            id="sms-user",
            scope=("user", "channel"),
            limits=(
                CapLimit(count=10, window=timedelta(days=7)),
                CapLimit(count=3, window=timedelta(hours=6)),
            ),
            on_exceed="drop",
        ),
    )
)
EVENT = EventCore(event_id="bench", app="shop", type="promo", template="promo", category="marketing")


def dispatches(count: int, users: int, prefix: str) -> list[Dispatch]:
    return [
        Dispatch(
            message_id=f"{prefix}{i}",
            user_id=f"{prefix}u{i % users}",
            channel="sms",
            address="+8613800000000",
            event=EVENT,
            rule_id="bench",
            rule_version="v1",
            plan=PLAN,
        )
        for i in range(count)
    ]


async def one_by_one(caps: FrequencyCaps, items: list[Dispatch], now: datetime) -> float:
    start = time.perf_counter()
    for item in items:
        await caps.check(item, now)
    return len(items) / (time.perf_counter() - start)


async def pipelined(caps: FrequencyCaps, items: list[Dispatch], batch: int, now: datetime) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        await caps.check_many(items[i : i + batch], now)
    return len(items) / (time.perf_counter() - start)


async def contended(
    caps: FrequencyCaps, items: list[Dispatch], tasks: int, now: datetime
) -> tuple[float, Counter[str]]:
    """`tasks` workers check the same hot users' dispatches at once; returns rate and passes per user."""
    passed: Counter[str] = Counter()
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            if (await caps.check(item, now)).outcome == "passed":
                passed[item.user_id] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return len(items) / (time.perf_counter() - start), passed


@contextmanager
def local_redis(url: str | None, cluster: bool = False) -> Iterator[str]:
    if url:
        yield url
        return
    if cluster:
        with tempfile.TemporaryDirectory() as folder, LocalRedisCluster(Path(folder)) as nodes:
            yield nodes.url
        return
    with tempfile.TemporaryDirectory() as folder:
        server = LocalRedis(
            port=free_port(), log_path=Path(folder) / "redis.log", data_dir=Path(folder) / "data"
        )
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def run(url: str, checks: int, batch: int, tasks: int) -> None:
    redis = open_redis(url, max_connections=tasks + 4)
    try:
        await redis.flushdb()
        caps = FrequencyCaps(redis)
        now = datetime.now(UTC)
        # Many users, so most checks pass and write: the costlier path of the script.
        rate = await one_by_one(caps, dispatches(checks // 4, 20_000, "a"), now)
        print(f"one by one          {rate:10,.0f} checks/s  ({checks // 4} checks, 20000 users)")
        rate = await pipelined(caps, dispatches(checks, 20_000, "b"), batch, now)
        print(f"pipelined by {batch:<5}  {rate:10,.0f} checks/s  ({checks} checks, 20000 users)")
        hot = dispatches(checks // 4, 10, "c")
        rate, passed = await contended(caps, hot, tasks, now)
        most = max(passed.values())
        print(
            f"{tasks} tasks, 10 users {rate:10,.0f} checks/s  ({len(hot)} checks; "
            f"passed {sum(passed.values())}, at most {most} per user)"
        )
        if most > 2:
            raise SystemExit(f"over-admission: a user passed {most} sends with a limit of 2 per hour")
        # The server's own time per script run: what Redis can do when clients are not the limit.
        stats = {} if is_cluster(redis) else (await redis.info("commandstats")).get("cmdstat_evalsha", {})
        if stats:
            usec = float(stats["usec_per_call"])
            print(f"redis time per check {usec:8.1f} us    (~{1e6 / usec:,.0f} checks/s of one Redis core)")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--redis", default=None, help="an existing Redis (flushed!); default: start one")
    parser.add_argument("--cluster", action="store_true", help="start a local three-node Redis Cluster")
    args = parser.parse_args()
    with local_redis(args.redis, args.cluster) as url:
        asyncio.run(run(url, args.checks, args.batch, args.tasks))


if __name__ == "__main__":
    main()
