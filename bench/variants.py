"""Bench: the variant report of one rule over 10 million message_events rows (goal: under 1 s).

The rows are generated inside ClickHouse with numbers(), in a fresh chdb folder: 2 million messages
over the last 30 days, 20 rules (100,000 messages each), each rule split into variants a (45 %),
b (45 %) and a control share (10 %). A treated message has 5 rows (decided, sent, delivered, an
engagement for half of them, a conversion for 4-6 % of them, else a `clicked`); a held-out one has
held_out and, for 3 % of them, a conversion, padded to 5 rows with reads of other attempts so every
message has the same weight. The report of one rule over 7 days is timed, wall and CPU (the process's
CPU time, chdb's threads included), after the parts have merged.

Run: .venv/bin/python bench/variants.py [--rows 10000000] [--runs 5] [--folder PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from analytics.variants import variant_report

# Row n is row n % 5 of message n / 5, of rule-(message % 20). Everything is derived from the
# message number, so the data is the same on every run.
FILL = """
INSERT INTO message_events
    (event_time, message_id, event_id, app, user_id, channel, provider, status, reason, rule_id,
     rule_version, template, campaign, attempt, cost, variant, step)
SELECT
    now64(3) - toIntervalSecond(intHash32(m) % (30 * 86400)) + toIntervalSecond(k * 60) AS event_time,
    concat('m', toString(m))                                   AS message_id,
    concat('e', toString(intDiv(m, 1000)))                     AS event_id,
    concat('app', toString(m % 5))                             AS app,
    concat('u', toString(intHash32(m) % 500000))               AS user_id,
    if(held, '', 'email')                                      AS channel,
    if(held, '', 'smtp')                                       AS provider,
    multiIf(
        held AND k = 0, 'held_out',
        held AND k = 1 AND cityHash64(m, 7) % 100 < 3, 'converted',
        held, 'read',
        k = 0, 'decided', k = 1, 'sent', k = 2, 'delivered',
        k = 3, if(m % 2 = 0, 'opened', 'read'),
        cityHash64(m, 7) % 100 < if(variant = 'b', 6, 4), 'converted', 'clicked'
    )                                                          AS status,
    ''                                                         AS reason,
    concat('rule-', toString(m % 20))                     AS rule_id,
    'v1'                                                       AS rule_version,
    'promo'                                                    AS template,
    'spring'                                                   AS campaign,
    if(held AND k > 1, k, 0)                                   AS attempt,
    if(k = 1 AND NOT held, 0.045, 0)                           AS cost,
    multiIf(cityHash64(m, 3) % 100 < 10, 'control', cityHash64(m, 3) % 100 < 55, 'a', 'b') AS variant,
    0                                                          AS step
FROM (
    SELECT intDiv(number, 5) AS m, number % 5 AS k,
           cityHash64(intDiv(number, 5), 3) % 100 < 10 AS held
    FROM numbers({rows:UInt64})
)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="chdb folder (default: a new one in /tmp)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-variants-"))
    client = open_clickhouse(f"chdb://{folder}")
    apply_migrations(client)
    client.command("TRUNCATE TABLE message_events")

    started = time.perf_counter()
    client.command(FILL, parameters={"rows": args.rows})
    filled = time.perf_counter() - started
    client.command("OPTIMIZE TABLE message_events FINAL")
    rows = client.command("SELECT count() FROM message_events")
    parts = client.command("SELECT count() FROM system.parts WHERE table = 'message_events' AND active")
    print(f"filled {rows:,} rows in {filled:.1f} s ({parts} active parts after OPTIMIZE) in {folder}")

    since = datetime.now(UTC) - timedelta(days=7)
    walls, cpus = [], []
    report = None
    for _ in range(args.runs):
        wall, cpu = time.perf_counter(), time.process_time()
        report = variant_report(client, "rule-3", since)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    for line in report.lines if report is not None else ():
        lift = "-" if line.lift is None else f"{line.lift:+.1%} (p={line.p_value:.2g})"
        print(
            f"  {line.variant:<8} recipients {line.recipients:>7,}  delivered {line.delivered:>7,}  "
            f"converted {line.converted:>6,}  rate {line.rate:.2%} "
            f"[{line.rate_low:.2%}, {line.rate_high:.2%}]  lift {lift}"
        )
    print(
        f"variant report, rule-3 over 7 days, {args.runs} runs: wall median {statistics.median(walls):.3f} s "
        f"(min {min(walls):.3f}), CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f})"
    )
    client.close()


if __name__ == "__main__":
    main()
