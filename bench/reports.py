"""Bench: the funnel report on 10 million `message_events` rows, generated inside ClickHouse (numbers())
in a chdb folder of its own; wall and CPU time of the funnel by channel, by day, by rule and template.

Run: .venv/bin/python bench/reports.py [--rows 10000000] [--repeat 3] [--unmerged]

--unmerged reads the parts as the insert left them instead of merging the tables first: FINAL then has
overlapping parts to merge, as on a month still receiving rows.

chdb runs in this process, so the process CPU time is the engine's (all its threads) plus ours.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics.connection import open_clickhouse
from analytics.funnel import FunnelQuery, funnel_report
from analytics.migrate import apply_migrations

DAYS = 30
# Row n belongs to message n // 5 (five transitions a message on average); its status follows the
# message's path: 70 % reach delivered, part of them opened or read, clicked and converted; some fail,
# some are suppressed or capped. Dimensions cycle through a handful of values each.
_GENERATE = """
INSERT INTO message_events
    (event_time, message_id, event_id, app, user_id, channel, provider, status, reason, rule_id,
     rule_version, template, campaign, attempt, cost, variant, step)
SELECT
    {start:DateTime64(3, 'UTC')} + toIntervalSecond((m * 7919) % ({days:UInt32} * 86400) + k * 7),
    concat('m', toString(m)), concat('e', toString(intDiv(m, 50))), concat('app', toString(m % 6)),
    concat('u', toString(m % 200000)),
    ['sms', 'email', 'push', 'inbox', 'wechat_oa'][1 + m % 5],
    ['aliyun', 'smtp', 'fcm', 'inbox', 'wechat'][1 + m % 5] ,
    multiIf(
        m % 20 = 0, ['suppressed', 'suppressed', 'suppressed', 'suppressed', 'suppressed'][k + 1],
        m % 20 = 1, ['decided', 'capped', 'capped', 'capped', 'capped'][k + 1],
        m % 10 = 2, ['decided', 'sent', 'failed', 'failed', 'failed'][k + 1],
        m % 10 < 6, ['decided', 'sent', 'delivered', 'opened', 'clicked'][k + 1],
        m % 10 < 8, ['decided', 'sent', 'delivered', 'read', 'converted'][k + 1],
        ['decided', 'sent', 'delivered', 'delivered', 'delivered'][k + 1]
    ) AS status,
    if(status IN ('suppressed', 'capped', 'failed'), 'bench reason', ''),
    concat('rule', toString(m % 12)), 'v1', concat('tpl', toString(m % 30)), concat('c', toString(m % 8)),
    k, toDecimal64(if(status = 'sent', 0.045, 0), 6), ['', 'a', 'b'][1 + m % 3], 0
FROM (SELECT intDiv(number, 5) AS m, number % 5 AS k FROM numbers({rows:UInt64}))
"""


def timed(run: object, repeat: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds over `repeat` runs, and the rows the report returned."""
    walls, cpus, lines = [], [], 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        lines = len(run().rows)  # type: ignore[operator]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--unmerged", action="store_true", help="skip OPTIMIZE ... FINAL before timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-reports-") as folder:
        client = open_clickhouse(f"chdb://{Path(folder) / 'clickhouse'}")
        apply_migrations(client)
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(days=DAYS)
        wall = time.perf_counter()
        client.command(_GENERATE, parameters={"start": start, "days": DAYS, "rows": args.rows})
        stored = client.query("SELECT count() FROM message_events").result_rows[0][0]
        print(f"generated {stored:,} rows in {time.perf_counter() - wall:.1f} s (rollup fed as they went in)")
        if not args.unmerged:
            client.command("OPTIMIZE TABLE message_events FINAL")
            client.command("OPTIMIZE TABLE message_rollup_daily FINAL")
        parts = client.query(
            "SELECT count() FROM system.parts WHERE active AND database = currentDatabase()"
            " AND table = 'message_events'"
        ).result_rows[0][0]

        since, until = start, now + timedelta(minutes=1)
        cases = {
            "by channel": FunnelQuery(since, until, by=("channel",)),
            "by day": FunnelQuery(since, until, interval="day"),
            "by channel, per day": FunnelQuery(since, until, by=("channel",), interval="day"),
            "by rule, template": FunnelQuery(since, until, by=("rule", "template")),
            "one app, by provider": FunnelQuery(since, until, by=("provider",), app="app1"),
            "rollup: by channel": FunnelQuery(since, until, by=("channel",), source="rollup"),
            "rollup: by day": FunnelQuery(since, until, interval="day", source="rollup"),
        }
        messages = stored // 5
        print(f"funnel over {stored:,} rows in {parts} parts, {messages:,} messages, median of {args.repeat}")
        for name, query in cases.items():
            funnel_report(client, query)  # warm the caches once
            seconds, cpu, lines = timed(lambda query=query: funnel_report(client, query), args.repeat)
            print(f"  {name:<22} {seconds * 1000:7.0f} ms wall  {cpu * 1000:7.0f} ms CPU  {lines:4d} lines")
        client.close()


if __name__ == "__main__":
    main()
