"""What the fallback schedule reads from a receipt, and how a fired step names itself: no Redis needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from processors.fallback import _span
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Dispatch, EventCore
from state.fallback import FallbackSchedule, FiredStep

EVENT = EventCore(event_id="e1", app="bursar", type="fee.due", template="fee_due", category="transactional")


@pytest.fixture
def schedule() -> FallbackSchedule:
    # Registering scripts does not connect: nothing here talks to Redis.
    return FallbackSchedule(Redis(host="127.0.0.1", port=1))


@pytest.mark.parametrize(
    ("status", "channel", "level"),
    [
        ("sent", "sms", 1),
        ("sent", "push", 1),
        ("sent", "email", 2),  # SMTP never says more than accepted
        ("sent", "robot", 2),  # posted to the group chat
        ("delivered", "webhook", 2),
        ("delivered", "inbox", 2),
        ("delivered", "sms", 2),
        ("read", "inbox", 3),
        ("opened", "email", 3),
        ("clicked", "email", 4),
        ("converted", "", 4),
        ("failed", "sms", -1),
        ("decided", "inbox", None),
        ("suppressed", "", None),
        ("capped", "email", None),
        ("deferred", "", None),
    ],
)
def test_what_a_receipt_says_about_reach(
    schedule: FallbackSchedule, status: str, channel: str, level: int | None
) -> None:
    assert schedule.level(status, channel) == level


def test_channels_without_delivery_reports_are_configurable() -> None:
    schedule = FallbackSchedule(Redis(host="127.0.0.1", port=1), sent_is_delivered=frozenset({"robot"}))
    assert schedule.level("sent", "email") == 1
    assert schedule.level("sent", "robot") == 2


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lease_seconds must be positive, got 0"):
        FallbackSchedule(Redis(host="127.0.0.1", port=1), lease_seconds=0)


def test_a_fired_step_claims_by_its_place_in_the_chain() -> None:
    steps = tuple(
        FallbackStep(step=n, after=timedelta(minutes=n), condition="not_read", channels=("email",))
        for n in (2, 1)  # given out of order: the chain runs by step number
    )
    first = Dispatch(
        message_id="m1",
        user_id="u1",
        channel="inbox",
        address="u1",
        event=EVENT,
        rule_id="r",
        rule_version="v",
        plan=DeliveryPlan(fallback=steps),
    )
    at = datetime(2026, 11, 22, tzinfo=UTC)
    assert FiredStep("m1", steps[0], first, None, at).claim == "m1|2"
    assert FiredStep("m1", steps[1], first, None, at).claim == "m1|1"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2, "2s"), (90, "90s"), (300, "5m"), (5400, "90m"), (7200, "2h"), (86400, "1d"), (1.5, "1.5s")],
)
def test_durations_read_as_rule_authors_write_them(seconds: float, text: str) -> None:
    assert _span(seconds) == text
