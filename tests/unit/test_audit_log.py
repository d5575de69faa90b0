"""The audit log's records and queries without ClickHouse: bad records kept with their reason, filters
and cursors checked, secrets never echoed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from analytics.audit_log import (
    UNREADABLE_ACTION,
    AuditQueryError,
    audit_query,
    decode_cursor,
    encode_cursor,
    read_records,
)
from records.audit import AuditRecord, mask_secrets

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_record_that_is_not_an_audit_record_is_kept_with_its_reason_not_its_content() -> None:
    good = AuditRecord(actor="alice", actor_kind="operator", action="app.disable", target="lms")
    leaked = json.dumps(
        {
            "actor": "mallory",
            "actor_kind": "operator",
            "action": "channel.secret_set",
            "after": {"secret": "wx-app-secret-9f8e"},
        }
    ).encode()
    records = read_records(
        [("audit:0:1", good.model_dump_json().encode()), ("audit:0:2", leaked), ("audit:1:7", b"not json")]
    )
    assert records[0] == good
    refused, garbage = records[1], records[2]
    assert refused.action == garbage.action == UNREADABLE_ACTION
    assert refused.outcome == "failed" and refused.target == "audit:0:2"
    assert "unmasked secret" in refused.reason
    assert "wx-app-secret-9f8e" not in refused.model_dump_json()
    assert "Invalid JSON" in garbage.reason
    # Read again (redelivery), the same record gives the same entry: one row after merge.
    assert read_records([("audit:0:2", leaked)])[0].audit_id == refused.audit_id


def test_masked_before_and_after_are_accepted() -> None:
    record = AuditRecord(
        actor="alice",
        actor_kind="operator",
        action="channel.secret_set",
        after=mask_secrets({"app_id": "wx1", "app_secret": "s3cr3t"}),
    )
    assert record.after == {"app_id": "wx1", "app_secret": "******"}


def test_query_parameters_are_checked_and_named() -> None:
    query = audit_query(actor="alice", action="app.", since="1d", limit=10, now=NOW)
    assert query.since == NOW - timedelta(days=1) and query.action == "app." and query.limit == 10
    for kwargs, parameter in (
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"until": "soon"}, "until"),
        ({"cursor": "%%%"}, "cursor"),
    ):
        with pytest.raises(AuditQueryError) as caught:
            audit_query(now=NOW, **kwargs)  # type: ignore[arg-type]
        assert caught.value.parameter == parameter


def test_a_cursor_comes_back_as_it_went() -> None:
    at = datetime(2026, 11, 30, 8, 1, 2, 345000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "abc123")) == (at, "abc123")
