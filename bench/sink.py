"""Bench: receipts/s through ReceiptSink into a fresh chdb folder, then the reach report's query time.

Run: .venv/bin/python bench/sink.py [--rows 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.report import reach_report
from analytics.sink import ReceiptSink
from records.topics import CHANNELS, Receipt, message_id_for

# A message's life: the statuses it passes through, with how often each path occurs.
PATHS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("decided", "sent", "delivered", "read"), 30),
    (("decided", "sent", "delivered", "clicked"), 10),
    (("decided", "sent", "delivered"), 35),
    (("decided", "sent", "failed"), 10),
    (("suppressed",), 8),
    (("capped",), 5),
    (("dead_lettered",), 2),
)


def make_receipts(rows: int, seed: int = 7) -> list[Receipt]:
    """`rows` receipts of whole message lives, spread over 60 days, 5 apps and every channel."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=60)
    paths = [path for path, _ in PATHS]
    weights = [weight for _, weight in PATHS]
    receipts: list[Receipt] = []
    n = 0
    while len(receipts) < rows:
        n += 1
        app = f"app{n % 5}"
        path = rng.choices(paths, weights)[0]
        no_channel = path[0] in ("dead_lettered", "suppressed")
        channel = "" if no_channel else rng.choice(CHANNELS)
        message_id = message_id_for(app, f"e{n}", f"u{n % 20000}")
        moment = start + timedelta(seconds=rng.uniform(0, 60 * 86400))
        for step, status in enumerate(path):
            receipts.append(
                Receipt.model_validate(
                    {
                        "event_time": moment + timedelta(seconds=step * 5),
                        "message_id": message_id, "event_id": f"e{n}", "app": app,
                        "user_id": f"u{n % 20000}", "channel": channel,
                        "provider": f"{channel}-main" if channel else "", "status": status,
                        "rule_id": "default.notice", "rule_version": "v1", "template": "notice",
                        "campaign": "", "attempt": 0, "cost": 0.045 if status == "sent" else 0.0,
                    }
                )
            )
    return receipts[:rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="rows per write")
    args = parser.parse_args()

    receipts = make_receipts(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as folder:
        client = open_clickhouse(f"chdb://{Path(folder) / 'clickhouse'}")
        apply_migrations(client)
        sink = ReceiptSink(client)

        began, cpu_began = time.perf_counter(), time.process_time()
        written = sum(
            sink.write(receipts[i : i + args.batch]) for i in range(0, len(receipts), args.batch)
        )
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        # CPU time too: on a shared, loaded machine the wall figure mostly measures the neighbours.
        print(f"insert: {written:,} receipts in batches of {args.batch:,}: {elapsed:.2f} s wall "
              f"= {written / elapsed:,.0f} rows/s; {cpu:.2f} s CPU = {written / cpu:,.0f} rows/CPU-s")

        timings = []
        for _ in range(7):
            began = time.perf_counter()
            report = reach_report(client)
            timings.append(time.perf_counter() - began)
        print(f"reach report over {written:,} rows: median {statistics.median(timings) * 1000:.0f} ms, "
              f"best {min(timings) * 1000:.0f} ms ({len(report.rows)} lines, "
              f"{report.totals['sent']:,} messages sent)")
        since = datetime.now(UTC) - timedelta(days=7)
        began = time.perf_counter()
        reach_report(client, since=since, app="app1")
        print(f"reach report, one app, last 7 days: {(time.perf_counter() - began) * 1000:.0f} ms")
        client.close()


if __name__ == "__main__":
    main()
