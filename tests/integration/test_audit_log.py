"""`audit_log` in the real engine: what the analytics service's writer puts there, read back newest first
with every filter and the cursor; a redelivered record is still one entry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from analytics.audit_log import UNREADABLE_ACTION, audit_query, read_audit
from analytics.service import ClickHouseWriters
from records.audit import AuditRecord, mask_secrets


def test_written_entries_are_read_back_filtered_and_paged(clickhouse: Client) -> None:
    alice = f"alice-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=10)
    records = [
        AuditRecord(
            actor=alice,
            actor_kind="operator",
            source="10.0.0.7",
            action=action,
            target_kind="app",
            target=target,
            app=target,
            at=start + timedelta(seconds=i),
            outcome=outcome,
            before=mask_secrets({"enabled": True}),
            after=mask_secrets({"enabled": False, "key": "sbk_live"}),
        )
        for i, (action, target, outcome) in enumerate(
            [
                ("app.disable", "lms", "ok"),
                ("app.enable", "lms", "ok"),
                ("app.rotate_key", "bursar", "ok"),
                ("role.grant", "bob", "denied"),
                ("app.remove", "lms", "failed"),
            ]
        )
    ]
    encoded = [(f"audit:0:{i}", r.model_dump_json().encode()) for i, r in enumerate(records)]
    writers = ClickHouseWriters(clickhouse)
    assert writers.audit(encoded) == 5
    assert writers.audit(encoded[:2]) == 2  # redelivered after a crash before the commit
    assert writers.audit([("audit:3:9", b'{"actor": "x"}')]) == 1

    newest = read_audit(clickhouse, audit_query(actor=alice))
    assert [e["action"] for e in newest.entries] == [
        "app.remove",
        "role.grant",
        "app.rotate_key",
        "app.enable",
        "app.disable",
    ]
    assert newest.next_cursor is None
    first = newest.entries[-1]
    assert first["source"] == "10.0.0.7" and first["before"] == {"enabled": True}
    assert first["after"] == {"enabled": False, "key": "******"}
    assert first["at"].startswith(start.isoformat()[:19])

    apps_only = read_audit(clickhouse, audit_query(actor=alice, action="app.", target="lms"))
    assert [e["action"] for e in apps_only.entries] == ["app.remove", "app.enable", "app.disable"]
    denied = read_audit(clickhouse, audit_query(actor=alice, outcome="denied")).entries
    assert [e["outcome"] for e in denied] == ["denied"]
    assert len(read_audit(clickhouse, audit_query(actor=alice, app="bursar")).entries) == 1
    window = audit_query(
        actor=alice,
        since=(start + timedelta(seconds=1)).isoformat(),
        until=(start + timedelta(seconds=3)).isoformat(),
    )
    assert [e["action"] for e in read_audit(clickhouse, window).entries] == ["app.rotate_key", "app.enable"]

    pages: list[str] = []
    cursor = None
    while True:
        page = read_audit(clickhouse, audit_query(actor=alice, limit=2, cursor=cursor))
        pages.extend(e["audit_id"] for e in page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [e["audit_id"] for e in newest.entries]

    [unreadable] = read_audit(clickhouse, audit_query(action=UNREADABLE_ACTION, target="audit:3:9")).entries
    assert unreadable["outcome"] == "failed" and "actor_kind: Field required" in unreadable["reason"]
