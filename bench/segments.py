"""Segment evaluation over a large directory: rate, CPU per person read, memory.

Starts its own Redis on a free loopback port, loads N users through `UserDirectory.upsert` (tags:
undergraduate or, one in seven, staff; a class year 2018-2023; a fifth read a message 3 days ago, a
tenth 40 days ago, as `EngagementHistory` records it), then counts each definition with the full
streamed evaluation the preview and `count_segment` use (`SegmentEvaluator.preview`). Each count
runs in a fresh child process, so its peak RSS and CPU are the evaluation's alone; Redis's own CPU is
read from /proc around it.

Definitions: `dormant-2020` (undergraduates of 2020 who have not read in 30 days: walks the class-2020
tag, about a sixth of everyone) and `en-quiet` (locale en-GB and no engagement in 7 days: no tag is
required, so it walks everyone).

Run: .venv/bin/python bench/segments.py [--users 100000] [--page 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from localparts import LocalRedis, free_port
from state.connection import open_redis
from state.engagement import EngagementHistory
from state.segment_definitions import parse_definition
from state.segments import SegmentAudience, SegmentEvaluator
from state.users import User, UserDirectory

LOAD_BATCH = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFINITIONS: dict[str, dict[str, Any]] = {
    "dormant-2020": {
        "all": [
            {"tags": {"all": ["undergraduate", "class-2020"]}},
            {"not": {"engaged": {"status": "read", "within": "30 days"}}},
        ]
    },
    "en-quiet": {
        "all": [{"attribute": "locale", "equals": "en-GB"}, {"not": {"engaged": {"within": "7 days"}}}]
    },
}


def person(i: int) -> User:
    role = "staff" if i % 7 == 6 else "undergraduate"
    return User(
        user_id=f"u{i:07d}", name=f"Person {i}", locale="en-GB" if i % 4 == 0 else "zh-CN",
        tags=(role, f"class-{2018 + i % 6}"), bindings={"inbox": f"u{i:07d}", "email": f"u{i}@uni.example"},
    )


async def load(url: str, users: int) -> float:
    redis = open_redis(url)
    directory, history = UserDirectory(redis), EngagementHistory(redis)
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        for start in range(0, users, LOAD_BATCH):
            batch = [person(i) for i in range(start, min(users, start + LOAD_BATCH))]
            await directory.upsert(batch)
            recent, old = now - timedelta(days=3), now - timedelta(days=40)
            await history.record_many(
                [(u.user_id, "read", recent) for i, u in enumerate(batch, start) if i % 5 == 0]
                + [(u.user_id, "read", old) for i, u in enumerate(batch, start) if i % 10 == 1]
            )
    finally:
        await redis.aclose()
    return time.perf_counter() - started


def count_in_child(url: str, name: str, page: int, answer: Any) -> None:
    """One full evaluation in this fresh process: count, people read, wall time, CPU, peak RSS."""

    async def run() -> tuple[int, int, float]:
        redis = open_redis(url)
        try:
            evaluator = SegmentEvaluator(redis)
            condition = parse_definition(DEFINITIONS[name]).root
            audience = SegmentAudience(name, await evaluator.narrowest(condition), condition)
            preview = await evaluator.preview(audience, sample=10, page=page)
            return preview.count, preview.scanned, preview.seconds
        finally:
            await redis.aclose()

    at_start = rss_mb()  # the interpreter and its imports, before anything is read
    before = time.process_time()
    count, scanned, seconds = asyncio.run(run())
    cpu = time.process_time() - before
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so it would be the parent's peak.
    peak = rss_mb("VmHWM")
    answer.put((count, scanned, seconds, cpu, at_start, peak))


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000, help="ids read per page (one pipeline each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalRedis(port=free_port(), log_path=Path(tmp) / "redis.log", data_dir=Path(tmp) / "redis")
        server.start()
        try:
            seconds = asyncio.run(load(server.url, args.users))
            print(f"loaded {args.users:,} users in {seconds:.1f} s", flush=True)
            context = multiprocessing.get_context("spawn")
            for name in DEFINITIONS:
                answer = context.Queue()
                redis_before = cpu_seconds(server.pid or 0)
                child = context.Process(target=count_in_child, args=(server.url, name, args.page, answer))
                child.start()
                count, scanned, wall, cpu, at_start, peak = answer.get()
                child.join()
                redis_cpu = cpu_seconds(server.pid or 0) - redis_before
                print(
                    f"{name:<13} {count:>9,} of {scanned:>9,} read in {wall:6.2f} s "
                    f"({scanned / wall:>8,.0f} people/s); client CPU {cpu / scanned * 1e6:5.1f} µs/person, "
                    f"Redis CPU {redis_cpu / scanned * 1e6:5.1f} µs/person; "
                    f"RSS {at_start:.0f} MB after imports, peak {peak:.0f} MB",
                    flush=True,
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
