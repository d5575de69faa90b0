"""Bench: `switchboard users import` of a large CSV into a fresh Redis, then the same file again
(a re-import, where the previous profiles are read to drop tags and addresses people no longer have).

Each person has a name, two tags, an email, a Chinese mobile and (one in three) a push token. Prints,
per run: wall time, CPU time per user (this process; Redis's own CPU apart, read from INFO), users per
second, and this process's peak RSS.

Run: .venv/bin/python bench/users_import.py [--users 100000] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import resource
import tempfile
import time
from pathlib import Path

from localparts import free_port
from localparts.redis_server import LocalRedis
from state.connection import open_redis
from state.users import UserDirectory
from state.users_import import import_users


def write_csv(path: Path, users: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["user_id", "name", "tags", "email", "phone", "push_token", "inbox"])
        for n in range(users):
            push = f"fcm:token{n:012d}abcdefghij" if n % 3 == 0 else ""
            out.writerow([f"s{n:07d}", f"Student {n}", f"class-{n % 40};year-{2020 + n % 5}",
                          f"s{n}@uni.example", f"138{n:08d}", push, "yes"])


async def timed_import(url: str, path: Path, label: str, users: int) -> None:
    redis = open_redis(url)
    try:
        before = await redis.info("cpu")
        wall, cpu = time.perf_counter(), time.process_time()
        report = await import_users(path, UserDirectory(redis))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = await redis.info("cpu")
    finally:
        await redis.aclose()
    if report.imported != users or report.rejected:
        raise SystemExit(f"expected {users} imported: {report.describe()[:5]}")
    redis_cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_sys", "used_cpu_user"))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:<9} {users:>9,} users  wall {wall:6.2f} s  {users / wall:>9,.0f}/s  "
          f"CPU {cpu / users * 1e6:5.1f} µs/user (Redis {redis_cpu / users * 1e6:4.1f} µs/user)  "
          f"peak RSS {rss_mb:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the first import here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.csv"
        write_csv(path, args.users)
        data = Path(folder)
        server = LocalRedis(port=free_port(), log_path=data / "redis.log", data_dir=data / "redis")
        server.start()
        try:
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            asyncio.run(timed_import(server.url, path, "import", args.users))
            if profiler is not None and args.profile is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            asyncio.run(timed_import(server.url, path, "re-import", args.users))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
