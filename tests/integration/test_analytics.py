"""Analytics against the embedded ClickHouse engine: migrations, the receipts sink and the reach report.

chdb allows one data folder per process, so every test shares one client on the session's folder and
stays independent through its own app name and message ids.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from analytics.migrate import (
    MigrationDriftError,
    MigrationError,
    applied_migrations,
    apply_migrations,
    check_drift,
    load_migrations,
)
from analytics.report import NO_CHANNEL, REPORT_STATUSES, as_dict, reach_report, render_table, status_counts
from analytics.sink import COLUMNS, ReceiptSink, SinkError
from records.topics import STATUSES, Receipt
from tests.integration.moments import now

# A day back on the real clock, to the minute: these rows are recent history, whatever the date.
T0 = now().replace(second=0) - timedelta(days=1)



@pytest.fixture
def app() -> str:
    return f"app_{uuid.uuid4().hex[:10]}"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_migrations_apply_once(clickhouse: Client) -> None:
    shipped = [m.name for m in load_migrations()]
    assert apply_migrations(clickhouse) == []
    assert sorted(applied_migrations(clickhouse)) == shipped
    tables = {row[0] for row in clickhouse.query("SELECT name FROM system.tables").result_rows}
    assert {"message_events", "message_funnel", "schema_migrations"} <= tables
    check_drift(clickhouse)


def test_fresh_ledger_applies_every_file_in_order_then_nothing(clickhouse: Client, tmp_path: Path) -> None:
    unique = uuid.uuid4().hex[:8]
    probe = f"probe_{unique}"
    (tmp_path / "001_probe.sql").write_text(f"CREATE TABLE {probe} (x UInt8) ENGINE = MergeTree ORDER BY x")
    (tmp_path / "002_probe_rows.sql").write_text(
        f"INSERT INTO {probe} VALUES (1);\n-- two statements; one file\nINSERT INTO {probe} VALUES (2);"  # noqa: S608 -- a test's own table name
    )
    ledger = f"ledger_{unique}"
    assert apply_migrations(clickhouse, tmp_path, ledger) == ["001_probe.sql", "002_probe_rows.sql"]
    assert apply_migrations(clickhouse, tmp_path, ledger) == []
    total = clickhouse.query("SELECT sum(x) FROM {probe:Identifier}", parameters={"probe": probe})
    assert total.result_rows == [(3,)]


def test_drift_is_detected_and_names_the_file(clickhouse: Client, tmp_path: Path) -> None:
    unique = uuid.uuid4().hex[:8]
    migration = tmp_path / "001_drifting.sql"
    migration.write_text(f"CREATE TABLE drift_{unique} (x UInt8) ENGINE = MergeTree ORDER BY x")
    ledger = f"ledger_{unique}"
    apply_migrations(clickhouse, tmp_path, ledger)

    migration.write_text(f"CREATE TABLE drift_{unique} (x UInt16) ENGINE = MergeTree ORDER BY x")
    with pytest.raises(MigrationDriftError, match=r"001_drifting\.sql: changed after it was applied"):
        check_drift(clickhouse, tmp_path, ledger)
    with pytest.raises(MigrationDriftError, match=r"001_drifting\.sql"):
        apply_migrations(clickhouse, tmp_path, ledger)

    migration.unlink()
    with pytest.raises(MigrationDriftError, match=r"001_drifting\.sql: applied but the file is missing"):
        check_drift(clickhouse, tmp_path, ledger)


def test_failing_statement_is_named_and_not_recorded(clickhouse: Client, tmp_path: Path) -> None:
    unique = uuid.uuid4().hex[:8]
    (tmp_path / "001_broken.sql").write_text(
        f"CREATE TABLE ok_{unique} (x UInt8) ENGINE = Memory;\nSELEC oops;"
    )
    ledger = f"ledger_{unique}"
    with pytest.raises(MigrationError, match=r"001_broken\.sql: statement 2 failed"):
        apply_migrations(clickhouse, tmp_path, ledger)
    assert applied_migrations(clickhouse, ledger) == {}


def test_a_batch_round_trips_with_exact_values(clickhouse: Client, app: str) -> None:
    shanghai = timezone(timedelta(hours=8))
    moment = T0 + timedelta(minutes=30, seconds=15, milliseconds=123)
    receipts = [
        Receipt(
            event_time=moment.astimezone(shanghai),
            message_id=f"{app}-m1", event_id="enrol-42", app=app, user_id="u-7", channel="sms",
            provider="aliyun", status="failed", reason="运营商拒绝: quota", rule_id="exam.alert",
            rule_version="v3", template="exam_reminder", campaign="spring", attempt=3, cost=0.0045,
        ),
        Receipt(event_time=at(1), message_id=f"{app}-m2", app=app, status="dead_lettered", reason="bad json"),
    ]
    assert ReceiptSink(clickhouse).write(receipts) == 2

    # The conversion columns are written by attribution only (analytics/attribution.py).
    rows = clickhouse.query(
        "SELECT * EXCEPT (inserted_at, conversion_id, conversion_type, value, currency) FROM message_events "
        "WHERE app = {app:String} ORDER BY message_id",
        parameters={"app": app},
    ).named_results()
    stored = list(rows)
    assert len(stored) == 2
    assert list(stored[0]) == list(COLUMNS)
    first = stored[0]
    assert first["event_time"] == moment
    assert first["cost"] == Decimal("0.0045")
    expected = receipts[0].model_dump(exclude={"event_time", "cost"})
    assert {k: first[k] for k in expected} == expected
    assert stored[1]["channel"] == "" and stored[1]["status"] == "dead_lettered"
    assert stored[1]["cost"] == Decimal(0)


def test_write_of_nothing_touches_nothing(clickhouse: Client) -> None:
    assert ReceiptSink(clickhouse).write([]) == 0


def test_unknown_status_is_refused_not_stored(clickhouse: Client, app: str) -> None:
    bogus = Receipt.model_construct(
        **{**Receipt(message_id=f"{app}-x", app=app, status="sent").model_dump(), "status": "teleported"}
    )
    with pytest.raises(SinkError, match="1 receipts into message_events failed"):
        ReceiptSink(clickhouse).write([bogus])
    assert status_counts(clickhouse, app=app) == {}


def test_a_redelivered_receipt_is_not_counted_twice(clickhouse: Client, app: str) -> None:
    batch = [
        Receipt(event_time=at(0), message_id=f"{app}-m1", app=app, channel="email", status="sent"),
        Receipt(event_time=at(1), message_id=f"{app}-m1", app=app, channel="email", status="delivered"),
    ]
    sink = ReceiptSink(clickhouse)
    sink.write(batch)
    sink.write(batch)  # Kafka redelivered the whole batch
    sink.write(batch[1:])

    assert status_counts(clickhouse, app=app) == {("email", "sent"): 1, ("email", "delivered"): 1}
    report = reach_report(clickhouse, app=app)
    assert (report.row("email")["sent"], report.row("email")["delivered"]) == (1, 1)
    # The table key makes the copies one transition, so FINAL sees two rows, not five.
    final_rows = clickhouse.query(
        "SELECT count() FROM message_events FINAL WHERE app = {app:String}", parameters={"app": app}
    ).result_rows
    assert final_rows == [(2,)]


def test_a_fallback_step_on_the_same_channel_is_its_own_row(clickhouse: Client, app: str) -> None:
    first = Receipt(event_time=at(0), message_id=f"{app}-m1", app=app, channel="email", status="sent")
    fallback = first.model_copy(update={"event_time": at(30), "step": 1, "variant": "b"})
    ReceiptSink(clickhouse).write([first, fallback, fallback])
    rows = clickhouse.query(
        "SELECT step, variant FROM message_events FINAL WHERE app = {app:String} ORDER BY step",
        parameters={"app": app},
    ).result_rows
    assert rows == [(0, ""), (1, "b")]


def scenario(app: str) -> list[Receipt]:
    """m1 read on SMS; m2 failed twice on SMS, fell back to email and was clicked; m3 suppressed; m4 capped
    on push; one raw event dead-lettered; and an old SMS send from before the report window."""

    def r(minute: int, message: str, channel: str, status: str, attempt: int = 0) -> Receipt:
        return Receipt.model_validate(
            {"event_time": at(minute), "message_id": f"{app}-{message}", "app": app, "channel": channel,
             "status": status, "attempt": attempt}
        )

    return [
        r(0, "m1", "sms", "decided"), r(1, "m1", "sms", "sent"), r(2, "m1", "sms", "delivered"),
        r(9, "m1", "sms", "read"),
        r(0, "m2", "sms", "decided"), r(1, "m2", "sms", "sent"), r(2, "m2", "sms", "failed"),
        r(3, "m2", "sms", "sent", 1), r(4, "m2", "sms", "failed", 1),
        r(5, "m2", "email", "decided"), r(6, "m2", "email", "sent"), r(7, "m2", "email", "delivered"),
        r(8, "m2", "email", "clicked"),
        r(0, "m3", "", "suppressed"),
        r(0, "m4", "push", "decided"), r(0, "m4", "push", "capped"),
        r(0, "raw-9f2c", "", "dead_lettered"),
        r(-60 * 24 * 90, "old", "sms", "sent"),
    ]


def test_reach_report_counts_per_channel(clickhouse: Client, app: str) -> None:
    ReceiptSink(clickhouse).write(scenario(app))
    ReceiptSink(clickhouse).write(scenario(app)[:5])  # a partial redelivery changes nothing

    report = reach_report(clickhouse, since=T0 - timedelta(days=1), app=app)

    assert [row.channel for row in report.rows] == ["sms", "email", "push", NO_CHANNEL]
    table = {row.channel: tuple(row[s] for s in REPORT_STATUSES) for row in [*report.rows, report.totals]}
    #             decided suppressed deferred capped sent delivered failed opened read clicked dead_lettered
    assert table == {
        "sms":        (2, 0, 0, 0, 2, 1, 1, 0, 1, 0, 0),
        "email":      (1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0),
        "push":       (1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
        NO_CHANNEL:   (0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1),
        "total":      (3, 1, 0, 1, 2, 2, 1, 0, 1, 1, 1),  # m2 was sent on two channels: one message in total
    }  # fmt: skip
    assert report.row("push").capped == 1
    assert report.row(NO_CHANNEL).dead_lettered == 1
    assert report.row("webhook").sent == 0
    with pytest.raises(KeyError, match="'bounced' is not a status"):
        report.totals["bounced"]

    everything = reach_report(clickhouse, app=app)
    assert everything.row("sms")["sent"] == 3  # the old send counts without `since`
    assert reach_report(clickhouse, app=f"{app}-nobody").rows == ()


def test_report_renders_as_table_and_json(clickhouse: Client, app: str) -> None:
    ReceiptSink(clickhouse).write(scenario(app))
    report = reach_report(clickhouse, since=T0 - timedelta(days=1), app=app)

    rendered = render_table(report)
    assert rendered.row_count == len(report.rows) + 1
    assert [column.header for column in rendered.columns][:3] == ["channel", "decided", "suppressed"]

    data = json.loads(json.dumps(as_dict(report)))
    assert data["app"] == app
    sms = dict.fromkeys(STATUSES, 0) | {"decided": 2, "sent": 2, "delivered": 1, "failed": 1, "read": 1}
    assert data["rows"][0] == {"channel": "sms", **sms}
    assert data["totals"]["dead_lettered"] == 1


def test_report_refuses_a_naive_since(clickhouse: Client) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match=re.escape(f"since={naive.isoformat()} needs a timezone offset")):
        reach_report(clickhouse, since=naive)


def test_message_funnel_view(clickhouse: Client, app: str) -> None:
    ReceiptSink(clickhouse).write(scenario(app))
    ReceiptSink(clickhouse).write(scenario(app))
    rows = clickhouse.query(
        "SELECT message_id, arraySort(channels), sent_at, delivered_at, read_at, clicked_at, failed_attempts"
        " FROM message_funnel WHERE app = {app:String} AND message_id IN {ids:Array(String)}"
        " ORDER BY message_id",
        parameters={"app": app, "ids": [f"{app}-m1", f"{app}-m2"]},
    ).result_rows
    assert rows == [
        (f"{app}-m1", ["sms"], at(1), at(2), at(9), None, 0),
        (f"{app}-m2", ["email", "sms"], at(1), at(7), None, at(8), 2),
    ]
