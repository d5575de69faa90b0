"""Decide against real Redis and the real rule engine with the default rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from app import ROOT
from processors.decide import Decide
from processors.records import Delivery, EventCore, message_id_for
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from state.apps import AppRegistry
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ALERT = EventCore(
    event_id="a1",
    app="security",
    type="security.alert",
    template="security_alert",
    category="alert",
    priority="urgent",
    data={"headline": "h", "action": "a"},
)


def delivery(user_id: str, event: EventCore = ALERT, **extra: object) -> Delivery:
    return Delivery.model_validate(
        {
            "message_id": message_id_for(event.app, event.event_id, user_id),
            "user_id": user_id,
            "event": event,
            **extra,
        }
    )


@pytest.fixture
async def decide(redis: Redis) -> AsyncIterator[Decide]:
    await UserDirectory(redis).upsert(
        [
            User(user_id="both", bindings={"inbox": "both", "email": "both@uni.example"}),
            User(user_id="smsonly", bindings={"sms": "+8613800000000"}),
        ]
    )
    await AppRegistry(redis).register("security", {"inbox", "email"})
    engine = AsyncRuleEngine(load_ruleset(ROOT / "rules" / "default.yaml"))
    yield Decide(
        UserDirectory(redis),
        AppRegistry(redis),
        engine,
        DeliverySchedule(redis),
        frozenset({"inbox", "email"}),
    )
    engine.close()


async def test_alert_goes_to_every_bound_channel_with_rule_and_version(decide: Decide) -> None:
    result = await decide.handle([delivery("both")], now=NOW)
    assert sorted((d.channel, d.address) for d in result.dispatches) == [
        ("email", "both@uni.example"),
        ("inbox", "both"),
    ]
    assert {r.status for r in result.receipts} == {"decided"}
    assert {(r.rule_id, bool(r.rule_version)) for r in result.receipts} == {("security-alerts", True)}


async def test_unreachable_and_unknown_recipients_are_suppressed_with_reasons(decide: Decide) -> None:
    result = await decide.handle([delivery("smsonly"), delivery("ghost")], now=NOW)
    assert result.dispatches == []
    reasons = {r.user_id: (r.status, r.reason) for r in result.receipts}
    assert reasons["ghost"] == ("suppressed", "unknown user")
    assert reasons["smsonly"][0] == "suppressed" and reasons["smsonly"][1]


async def test_raw_addresses_and_scheduled_deliveries(decide: Decide, redis: Redis) -> None:
    later = ALERT.model_copy(update={"event_id": "a2", "send_at": NOW + timedelta(hours=1)})
    result = await decide.handle(
        [delivery("addr:x", addresses={"email": "x@ext.example"}), delivery("both", later)],
        now=NOW,
    )
    assert [(d.user_id, d.channel) for d in result.dispatches] == [("addr:x", "email")]
    assert result.scheduled == 1
    assert [r.status for r in result.receipts if r.user_id == "both"] == ["deferred"]
    due = await DeliverySchedule(redis).claim_due(now=(NOW + timedelta(hours=1, seconds=1)).timestamp())
    assert [d.event.event_id for d in due] == ["a2"]
