"""An uploaded recipient list of N rows (default a million), read, cleaned, deduplicated and stored in
Redis as the API and `switchboard uploads add` do (`api.upload_reader.import_file`), then walked page
by page into deliveries as a broadcast job would.

Starts its own Redis on a free loopback port. Writes a CSV of N phone numbers (or emails) with a header
row: `--dup` of them repeat an earlier row, `--bad` are malformed, and `--known` belong to people
in the directory. Reports, for the import: wall time, rows per second, this process's CPU per row,
Redis's CPU per row, and this process's peak RSS (resource.getrusage, with the RSS before the import
for comparison); for the walk: pages of 1000 ids turned into deliveries, CPU per recipient.

Run: .venv/bin/python bench/uploads.py [--rows 1000000] [--kind phone|email] [--format csv|xlsx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from api.upload_reader import import_file
from localparts import free_port
from localparts.redis_server import LocalRedis
from processors.ingest import deliveries_for
from records.topics import EventCore
from state.connection import open_redis
from state.uploads import UploadStore, upload_index
from state.users import User, UserDirectory

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PREFIXES = ("138", "139", "137", "136", "135", "150", "151", "158", "186", "188")


def address(kind: str, n: int) -> str:
    if kind == "email":
        return f"student{n}@uni{n % 7}.example"
    return f"{PREFIXES[n % len(PREFIXES)]}{n:08d}"


def write_csv(path: Path, kind: str, rows: int, dup: float, bad: float, seed: int = 7) -> None:
    """Written a line at a time: the file, not the list, is large."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        f.write("手机号\n" if kind == "phone" else "邮箱\n")
        for n in range(rows):
            draw = rng.random()
            if draw < bad:
                f.write("not-an-address\n")
            elif draw < bad + dup and n:
                f.write(address(kind, rng.randrange(n)) + "\n")
            else:
                f.write(address(kind, n) + "\n")


def write_xlsx(path: Path, kind: str, rows: int, dup: float, bad: float) -> None:
    """The same rows as an XLSX sheet, written in openpyxl's write-only mode from the CSV."""
    from openpyxl import Workbook

    csv_path = path.with_suffix(".csv")
    write_csv(csv_path, kind, rows, dup, bad)
    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    with csv_path.open(encoding="utf-8") as f:
        for line in f:
            sheet.append([line.rstrip("\n")])
    book.save(path)
    csv_path.unlink()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


async def run(args: argparse.Namespace, redis_url: str, redis_pid: int, path: Path) -> None:
    redis = open_redis(redis_url)
    try:
        channel = "sms" if args.kind == "phone" else "email"
        people = []
        for n in range(0, args.rows, max(1, args.rows // max(1, args.known)))[: args.known]:
            value = address(args.kind, n)
            bound = f"+86{value}" if args.kind == "phone" else value
            people.append(User(user_id=f"s{n}", bindings={channel: bound}))
        await UserDirectory(redis).upsert(people)
        rss_before = peak_rss_mb()
        cpu0, redis0, wall0 = cpu_seconds(), process_cpu(redis_pid), time.perf_counter()
        upload = await import_file(
            UploadStore(redis), path, app="bench", kind=None, ttl_hours=1, filename=path.name,
            created_by="bench", max_errors_kept=100_000, batch=args.batch,
        )
        wall = time.perf_counter() - wall0
        cpu, redis_cpu = cpu_seconds() - cpu0, process_cpu(redis_pid) - redis0
        c = upload.counts
        print(f"import: {c.rows:,} rows in {wall:.1f} s = {c.rows / wall:,.0f} rows/s; "
              f"CPU {cpu / c.rows * 1e6:.1f} µs/row here + {redis_cpu / c.rows * 1e6:.1f} µs/row in Redis; "
              f"peak RSS {peak_rss_mb():.0f} MB (before the import {rss_before:.0f} MB)")
        print(f"        valid {c.valid:,}, invalid {c.invalid:,}, duplicates {c.duplicates:,}, "
              f"known people {c.known_people:,}, raw addresses {c.raw_addresses:,}, "
              f"Redis used_memory {(await redis.info('memory'))['used_memory'] / 2**20:.0f} MB")
        event = EventCore(event_id="bench-1", app="bench", type="bench", template="campus_notice",
                          category="notice")
        walk, index, cursor, total = UserDirectory(redis).walk, upload_index(upload.upload_id), "", 0
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        while page := await walk.page(index, cursor, 1000):
            total += len(deliveries_for(event, page))
            cursor = page[-1]
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        print(f"walk:   {total:,} deliveries in {wall:.1f} s = {total / wall:,.0f}/s; "
              f"CPU {cpu / max(1, total) * 1e6:.1f} µs/recipient")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("phone", "email"), default="phone")
    parser.add_argument("--dup", type=float, default=0.05, help="share of rows repeating an earlier one")
    parser.add_argument("--bad", type=float, default=0.01, help="share of malformed rows")
    parser.add_argument("--known", type=int, default=10_000, help="rows bound to people in the directory")
    parser.add_argument("--batch", type=int, default=5000, help="rows per Redis round trip")
    parser.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        path = var / f"list-{args.rows}.{args.format}"
        write = write_xlsx if args.format == "xlsx" else write_csv
        write(path, args.kind, args.rows, args.dup, args.bad)
        size = path.stat().st_size / 2**20
        print(f"file:   {size:.1f} MB {args.format}, {args.rows:,} rows of {args.kind}")
        server = LocalRedis(port=free_port(), log_path=var / "redis.log", data_dir=var)
        server.start()
        try:
            assert server.pid is not None  # noqa: S101
            asyncio.run(run(args, server.url, server.pid, path))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
