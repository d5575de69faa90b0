"""Bench: what the approval gate costs ingest per event when policies exist and none holds the event
(the common case): ingest CPU and wall time per event with and without the gate, on a local Redis.

Run: .venv/bin/python bench/approval_gate.py [--events 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from channels.templates import TemplateCatalog
from localparts import LocalParts, free_port
from processors.approvals import ApprovalGate
from processors.ingest import Ingest
from settings import ROOT
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import ApprovalStore
from state.apps import WORKER_CACHE_SECONDS, AppRegistry
from state.connection import open_redis
from state.dedup import EventDedup
from state.users import User, UserDirectory

BATCH = 200  # events handled concurrently, as the ingest agent does


def notice(i: int, prefix: str) -> bytes:
    return json.dumps(
        {"event_id": f"{prefix}-{i}", "app": "lms", "type": "course.notice", "template": "campus_notice",
         "category": "notice", "audience": {"user_ids": [f"u{i % 100}"]},
         "data": {"headline": "Room change", "body": "A101 instead of B204"}}
    ).encode()


async def per_event(redis: Redis, gate: ApprovalGate | None, prefix: str, events: int) -> tuple[float, float]:
    ingest = Ingest(UserDirectory(redis), AppRegistry(redis, cache_seconds=WORKER_CACHE_SECONDS),
                    TemplateCatalog(ROOT / "templates"), EventDedup(redis, 600), approvals=gate)
    raws = [notice(i, prefix) for i in range(events)]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, events, BATCH):
        chunk = raws[start : start + BATCH]
        await asyncio.gather(*(ingest.handle(raw, f"events:0:{start + j}") for j, raw in enumerate(chunk)))
    return (time.process_time() - cpu) / events * 1e6, (time.perf_counter() - wall) / events * 1e6


async def measure(url: str, events: int, rounds: int) -> None:
    redis = open_redis(url)
    await redis.flushdb()
    people = [User(user_id=f"u{i}", bindings={"inbox": f"u{i}"}) for i in range(100)]
    await UserDirectory(redis).upsert(people)
    await AppRegistry(redis).register("lms", {"inbox"})
    policies = PolicyStore(redis)
    await policies.put(ApprovalPolicy(name="marketing", categories=["marketing"], levels=["approver"]))
    await policies.put(ApprovalPolicy(name="big", apps=["shop"], audience_over=1000, levels=["approver"]))
    gate = ApprovalGate(policies, ApprovalStore(redis), UserDirectory(redis))
    without, with_gate = [], []
    for n in range(rounds):  # interleaved, so a busy moment of the machine hits both
        without.append(await per_event(redis, None, f"a{n}", events))
        with_gate.append(await per_event(redis, gate, f"b{n}", events))
    for label, results in (("without the gate", without), ("with the gate", with_gate)):
        cpu, wall = min(results)
        best = f"best of {rounds}, {events} events"
        print(f"{label:<17} {cpu:7.1f} µs CPU, {wall:7.1f} µs wall per event ({best})")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalParts(
        Path(folder), kafka_port=free_port(), redis_port=free_port()
    ) as parts:
        asyncio.run(measure(parts.redis_url, args.events, args.rounds))


if __name__ == "__main__":
    main()
