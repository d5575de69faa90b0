"""Rule simulation against the embedded ClickHouse engine and real Redis: replay, caps, cost, diff."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from analytics.event_log import EventLog, EventLogError
from analytics.sink import ReceiptSink
from records.topics import EventCore, Receipt, address_user_id
from rules.loader import load_ruleset
from rules.simulate import run_simulation
from settings import Settings
from state.apps import AppRegistry
from state.users import User, UserDirectory
from tests.integration.moments import next_local, now

# A Monday 09:00 UTC some 200 days back: far from the other tests' rows (from now to 91 days back),
# so the period's average costs are this test's own.
T0 = next_local(9, 0, ZoneInfo("UTC"), after=now() - timedelta(days=200), weekday=0)

CANDIDATE = """\
ruleset: candidate
caps:
  - {id: promo-daily, match: {category: [marketing]}, limits: [1/1d]}
rules:
  - id: opted-out
    when: {category: [marketing], tags_any: [no-marketing]}
    then: {suppress: opted out}
  - id: promos-by-email
    when: {category: [marketing]}
    then: {channels: [email]}
  - id: rest
    then: {first_of: [inbox, email]}
"""



@pytest.fixture
def app() -> str:
    return f"app_{uuid.uuid4().hex[:10]}"


def promo(app: str, n: int) -> EventCore:
    return EventCore(event_id=f"promo-{n}", app=app, type="sale", template="t", category="marketing")


def test_event_log_round_trip_keeps_each_event_once(clickhouse: Client, app: str) -> None:
    log = EventLog(clickhouse)
    t0 = T0 - timedelta(days=3)  # outside the simulation test's period
    first, second = promo(app, 1), promo(app, 2)
    audience = json.dumps({"user_ids": ["u1"]})
    assert log.write([(t0, first, audience), (t0 + timedelta(minutes=1), second, audience)]) == 2
    assert log.write([(t0, first, audience)]) == 1  # a redelivered event, logged twice
    read = log.read(t0, t0 + timedelta(hours=1), app=app)
    assert [(e.event.event_id, e.event_time, e.audience) for e in read] == [
        ("promo-1", t0, audience), ("promo-2", t0 + timedelta(minutes=1), audience),
    ]
    assert read[0].event == first
    assert log.read(t0 + timedelta(minutes=1), t0 + timedelta(hours=1), app=app)[0].event == second
    with pytest.raises(EventLogError, match="needs a timezone"):
        log.write([(t0.replace(tzinfo=None), first, audience)])


async def test_simulate_reports_volume_suppressed_capped_cost_and_recipients(
    clickhouse: Client, redis: Redis, settings: Settings, app: str, tmp_path: Path
) -> None:
    users = [
        User(user_id=f"{app}-u{i}", bindings={"inbox": f"u{i}", "email": f"u{i}@x.example"}) for i in range(3)
    ]
    opted_out = User(user_id=f"{app}-u3", tags=("no-marketing",), bindings={"inbox": "u3"})
    await UserDirectory(redis).upsert([*users, opted_out])
    await AppRegistry(redis).register(app, {"inbox", "email"})
    ghost = f"{app}-gone"  # received the first promo, since removed from the directory

    promo1, promo2 = promo(app, 1), promo(app, 2)
    visitor = EventCore(event_id="visit", app=app, type="visit", template="t", category="notice")
    raw = {"channel": "email", "address": "guest@partner.example"}
    guest = address_user_id("email", raw["address"])
    EventLog(clickhouse).write([
        (T0, promo1, json.dumps({"tags": ["students"]})),
        (T0 + timedelta(hours=1), promo2, json.dumps({"tags": ["students"]})),
        (T0 + timedelta(hours=2), visitor, json.dumps({"addresses": [raw]})),
    ])
    receipts: list[Receipt] = []
    members = [u.user_id for u in users]
    for event, at, people in ((promo1, T0, [*members, ghost]), (promo2, T0 + timedelta(hours=1), members)):
        for user_id in people:
            receipts.append(Receipt.of(event, user_id, "decided", channel="inbox", event_time=at))
            receipts.append(Receipt.of(event, user_id, "sent", channel="inbox", event_time=at))
        receipts.append(Receipt.of(event, opted_out.user_id, "suppressed", reason="opted out", event_time=at))
    at = T0 + timedelta(hours=2)
    receipts.append(Receipt.of(visitor, guest, "decided", channel="email", event_time=at))
    receipts.append(Receipt.of(visitor, guest, "sent", channel="email", cost=0.02, event_time=at))
    ReceiptSink(clickhouse).write(receipts)

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    report = await run_simulation(settings, load_ruleset(candidate), T0, T0 + timedelta(days=1))
    result = report.as_dict()
    assert (result["events"], result["messages"]) == (3, 10)
    assert result["actual"] == {
        "volume": {"email": 1, "inbox": 7}, "suppressed": 2, "capped": 0, "held_out": 0,
        "estimated_cost": 0.02,
    }
    # Promo 1 by email to three people; promo 2 capped for them (1 a day); the ghost is unknown now.
    assert result["candidate"] == {
        "volume": {"email": 4}, "suppressed": 3, "capped": 3, "held_out": 0,
        "estimated_cost": 0.08,
    }
    assert result["recipients_affected"] == 4
    text = report.render()
    assert "sent on inbox                  7          0       -7" in text
    assert "capped                         0          3       +3" in text
    assert f"{app}/promo-2 {app}-u0: inbox -> capped (capped)" in text
    assert f"{app}/promo-1 {ghost}: inbox -> suppressed (unknown user)" in text
