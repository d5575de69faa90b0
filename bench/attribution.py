"""Conversions attributed per second: batches of conversions against a message_events table of a given size.

    .venv/bin/python bench/attribution.py [--rows 1000000] [--batch 1000] [--batches 5]

Writes about `rows` receipts (per message: sent, delivered, and one of read, clicked, opened or a repeated
delivered, over the last ten days; about four messages a person) into a fresh embedded ClickHouse folder,
then attributes batches of conversions of random people and prints the time per batch.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.attribution import attribute
from analytics.attribution_rules import AttributionRules
from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.sink import COLUMNS
from records.conversions import Conversion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(9)
    now = datetime.now(UTC)
    people = max(1, args.rows // 12)  # about four messages each
    with tempfile.TemporaryDirectory() as folder:
        client = open_clickhouse(f"chdb://{folder}")
        apply_migrations(client)
        rows: list[list[object]] = []
        started = time.perf_counter()
        for n in range(args.rows // 3):  # three receipts per message
            user, message = f"u{rng.randrange(people)}", f"m{n:023d}"
            sent = now - timedelta(minutes=rng.randrange(10 * 24 * 60))
            touch = rng.choice(("read", "clicked", "opened", "delivered"))
            for status, at in (("sent", sent), ("delivered", sent + timedelta(seconds=5)),
                               (touch, sent + timedelta(minutes=30))):
                rows.append([at, message, f"e{n}", "lms", user, "inbox", "inbox", status, "", "fees", "v1",
                             "fee_due", "autumn", 0, Decimal(0), "A", 0])
            if len(rows) >= 100_000:
                client.insert("message_events", rows, column_names=list(COLUMNS))
                rows = []
        if rows:
            client.insert("message_events", rows, column_names=list(COLUMNS))
        total = client.query("SELECT count() FROM message_events").result_rows[0][0]
        print(f"message_events: {total} rows in {time.perf_counter() - started:.1f} s")
        rules = AttributionRules.load(Path(__file__).resolve().parent.parent / "config" / "attribution.yaml")
        timings: list[float] = []
        credited = 0
        for b in range(args.batches):
            batch = [
                Conversion(conversion_id=f"c{b}-{i}", app="bursar", user_id=f"u{rng.randrange(people)}",
                           type="payment", value=Decimal("10.00"), currency="CNY", occurred_at=now)
                for i in range(args.batch)
            ]
            started = time.perf_counter()
            written = attribute(client, batch, rules)
            timings.append(time.perf_counter() - started)
            credited += written - len(batch)
        per_batch = sorted(timings)[len(timings) // 2]
        print(f"batches of {args.batch}: median {per_batch * 1000:.0f} ms, "
              f"{args.batch / per_batch:,.0f} conversions/s; "
              f"{credited} of {args.batch * args.batches} credited")
        client.close()


if __name__ == "__main__":
    main()
