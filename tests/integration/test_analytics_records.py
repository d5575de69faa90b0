"""Receipts records into message_events as they are on the topic, parsed by the engine: the fast path
the analytics service takes, and what it does with a record that is not receipts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from analytics.sink import ReceiptSink
from records.topics import Receipt
from tests.integration.test_analytics import T0, app

__all__ = ["app"]


def rows(client: Client, app: str) -> list[tuple[str, str, str, datetime]]:
    return [
        (str(m), str(s), str(r), t)
        for m, s, r, t in client.query(
            "SELECT message_id, status, reason, event_time FROM message_events FINAL "
            "WHERE app = {app:String} OR reason LIKE {like:String} ORDER BY message_id, status",
            parameters={"app": app, "like": f"%{app}%"},
        ).result_rows
    ]


def test_records_of_arrays_and_single_receipts_are_written_exactly(clickhouse: Client, app: str) -> None:
    sent = Receipt(event_time=T0, message_id="m1", app=app, channel="email", status="sent", cost=0.05)
    delivered = sent.model_copy(update={"status": "delivered"})
    read = Receipt(event_time=T0 + timedelta(minutes=1), message_id="m2", app=app, status="read")
    pair = b"[" + sent.model_dump_json().encode() + b"," + delivered.model_dump_json().encode() + b"]"
    records = [
        ("receipts:0:1", pair),
        ("receipts:0:2", read.model_dump_json().encode()),
        ("receipts:0:3", b"[]"),
    ]
    assert ReceiptSink(clickhouse).write_records(records) == 3
    assert ReceiptSink(clickhouse).write_records(records) == 3  # redelivered: collapses below
    assert rows(clickhouse, app) == [
        ("m1", "delivered", "", T0), ("m1", "sent", "", T0), ("m2", "read", "", T0 + timedelta(minutes=1))
    ]
    cost = clickhouse.query(
        "SELECT toString(cost) FROM message_events FINAL WHERE app = {app:String} AND status = 'sent'",
        parameters={"app": app},
    ).result_rows
    assert cost == [("0.05",)]


def test_a_receipt_without_a_time_happened_now_and_a_naive_time_is_utc(clickhouse: Client, app: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    untimed = json.dumps({"message_id": "m1", "app": app, "status": "converted"}).encode()
    naive = json.dumps(
        {"message_id": "m2", "app": app, "status": "sent", "event_time": T0.replace(tzinfo=None).isoformat()}
    ).encode()
    assert ReceiptSink(clickhouse).write_records([("receipts:1:1", untimed), ("receipts:1:2", naive)]) == 2
    (m1, m2) = rows(clickhouse, app)
    assert m1[3] >= before and m2[3] == T0.replace(microsecond=T0.microsecond // 1000 * 1000)


def test_a_record_that_is_not_receipts_becomes_a_dead_lettered_row_and_the_rest_is_written(
    clickhouse: Client, app: str
) -> None:
    good = Receipt(event_time=T0, message_id="m1", app=app, status="sent").model_dump_json().encode()
    bad_status = json.dumps({"message_id": "m2", "app": app, "status": "teleported"}).encode()
    unknown_field = json.dumps({"message_id": "m3", "app": app, "status": "sent", "colour": "red"}).encode()
    source = f"receipts:2:{app}"
    records = [
        ("receipts:2:1", good),
        (f"{source}-a", bad_status),
        (f"{source}-b", unknown_field),
        (f"{source}-c", b"{no"),
    ]
    written = ReceiptSink(clickhouse).write_records(records)
    assert written == 4
    found = rows(clickhouse, app)
    assert [(m, s) for m, s, _, _ in found if m == "m1"] == [("m1", "sent")]
    reasons = sorted(r for _, s, r, _ in found if s == "dead_lettered")
    assert len(reasons) == 3
    assert reasons[0].startswith(f"unreadable record at {source}-a: status:")
    assert reasons[1].startswith(f"unreadable record at {source}-b: colour: Extra inputs are not permitted")
    assert reasons[2].startswith(f"unreadable record at {source}-c: Invalid JSON")
