"""Bench: the sharded schedule (parked dispatches) and fallback chains, on a single Redis or a cluster.

Parks `--items` dispatches in batches of 500 (as a paced campaign does), claims them 500 at a time
and confirms them (as the release timer does); arms as many fallback chains and fires them 500 at a
time. Each index is split into `state.keyspace.SHARDS` shards, so a claim counts what is due per shard,
then claims each shard's share: this measures what that costs.

Run: .venv/bin/python bench/schedules.py [--items 50000] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from localparts import free_port
from localparts.redis_cluster import LocalRedisCluster
from localparts.redis_server import LocalRedis
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Dispatch, EventCore
from state.connection import open_redis
from state.fallback import FallbackSchedule
from state.schedule import ParkedDispatches

BATCH = 500
EVENT = EventCore(event_id="bench", app="campus", type="notice", template="campus_notice", category="notice")
PLAN = DeliveryPlan(
    fallback=(FallbackStep(step=1, after=timedelta(seconds=1), condition="not_read", channels=("sms",)),)
)


def dispatches(count: int) -> list[Dispatch]:
    return [
        Dispatch(
            message_id=f"{i:032x}",
            user_id=f"u{i}",
            channel="inbox",
            address=f"u{i}",
            event=EVENT,
            rule_id="bench",
            rule_version="v1",
            plan=PLAN,
        )
        for i in range(count)
    ]


@contextmanager
def local_redis(cluster: bool) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        if cluster:
            with LocalRedisCluster(Path(folder)) as nodes:
                yield nodes.url
            return
        data = Path(folder)
        server = LocalRedis(port=free_port(), log_path=data / "redis.log", data_dir=data / "data")
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def run(url: str, count: int) -> None:
    redis = open_redis(url)
    try:
        await redis.flushdb()
        items = dispatches(count)
        now = datetime.now(UTC)
        parked = ParkedDispatches(redis)
        start = time.perf_counter()
        for i in range(0, count, BATCH):
            await parked.add_many([(d, now) for d in items[i : i + BATCH]])
        added = time.perf_counter() - start
        start, claimed = time.perf_counter(), 0
        while batch := await parked.claim_due(limit=BATCH, now=now.timestamp() + 1):
            await parked.done(batch)
            claimed += len(batch)
        released = time.perf_counter() - start
        print(f"park     {count / added:10,.0f} dispatches/s  (batches of {BATCH})")
        print(f"release  {claimed / released:10,.0f} dispatches/s  (claim {BATCH} + done; {claimed} out)")
        chains = FallbackSchedule(redis)
        start = time.perf_counter()
        for i in range(0, count, BATCH):
            await chains.arm_many([(d, None, now) for d in items[i : i + BATCH]])
        armed = time.perf_counter() - start
        start, fired = time.perf_counter(), 0
        while steps := await chains.fire_due(now + timedelta(seconds=2), limit=BATCH):
            await chains.done(steps)
            fired += len(steps)
        firing = time.perf_counter() - start
        print(f"arm      {count / armed:10,.0f} chains/s")
        print(f"fire     {fired / firing:10,.0f} steps/s  (fire {BATCH} + done; {fired} fired)")
        if claimed != count or fired != count:
            raise SystemExit(f"lost items: released {claimed}, fired {fired} of {count}")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--cluster", action="store_true", help="start a local three-node Redis Cluster")
    args = parser.parse_args()
    with local_redis(args.cluster) as url:
        asyncio.run(run(url, args.items))


if __name__ == "__main__":
    main()
