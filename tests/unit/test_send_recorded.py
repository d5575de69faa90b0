"""The receipts a redelivered dispatch re-emits from the outcome the send ledger recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from processors.send import recorded_receipts
from records.topics import Dispatch, EventCore

EVENT = EventCore(
    event_id="n1", app="campus", type="campus.notice", template="campus_notice", category="notice", data={}
)
DISPATCH = Dispatch.model_validate(
    {
        "message_id": "m1",
        "user_id": "s1",
        "channel": "email",
        "address": "s1@uni.example",
        "event": EVENT,
        "rule_id": "campus-notices",
        "rule_version": "v1",
    }
)
AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def recorded(status: str) -> str:
    return json.dumps(
        {"status": status, "at": AT.isoformat(), "cost": 0.05, "provider": "smtp", "attempt": 2}
    )


def test_a_recorded_send_gives_its_receipts_as_first_made() -> None:
    [sent] = recorded_receipts(DISPATCH, recorded("sent"))
    assert (sent.status, sent.provider, sent.attempt, sent.cost, sent.event_time) == (
        "sent",
        "smtp",
        2,
        0.05,
        AT,
    )
    assert (sent.message_id, sent.channel, sent.rule_id, sent.user_id) == (
        "m1",
        "email",
        "campus-notices",
        "s1",
    )


def test_a_recorded_delivery_gives_sent_and_delivered() -> None:
    receipts = recorded_receipts(DISPATCH, recorded("delivered"))
    assert [(r.status, r.event_time, r.provider) for r in receipts] == [
        ("sent", AT, "smtp"),
        ("delivered", AT, "smtp"),
    ]


@pytest.mark.parametrize(
    "value",
    [None, "sent", "capped", recorded("failed"), recorded("capped"), "{}", "[1]", '{"status": "sent"}'],
)
def test_other_or_older_outcomes_give_nothing(value: str | None) -> None:
    # A bare status (recorded before outcomes carried their details), a failure, a cap or a
    # malformed value: nothing to re-emit, and no error that would stop the stage.
    assert recorded_receipts(DISPATCH, value) == []
