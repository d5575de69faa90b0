"""Attribution against the embedded ClickHouse engine: windows, models, named messages, tokens, the
unattributed kept, replays not doubled. Touches are written relative to the real now, so any date works."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from analytics.attribution import attribute
from analytics.attribution_rules import AttributionRules, TypeRule, Windows
from analytics.sink import ReceiptSink
from records.conversions import Conversion
from records.topics import Receipt
from tests.integration.moments import now

NOW = now()
RULES = AttributionRules(
    default=TypeRule(windows=Windows(clicked=timedelta(days=7), read=timedelta(days=3),
                                     opened=timedelta(days=2), delivered=timedelta(days=1))),
    types={
        "enrolment": TypeRule(model="first_touch", windows=Windows(clicked=timedelta(days=14),
                                                                   delivered=timedelta(days=3))),
        "order": TypeRule(windows=Windows(clicked=timedelta(hours=6))),
    },
)



@pytest.fixture
def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def message(client: Client, user: str, sent_ago: timedelta, *touches: tuple[str, timedelta],
            channel: str = "email", **fields: Any) -> str:
    """A message sent to `user` `sent_ago`, with its touches (status, how long ago); its id."""
    message_id = uuid.uuid4().hex[:24]
    common = {"message_id": message_id, "event_id": f"ev-{message_id[:6]}", "app": "lms", "user_id": user,
              "channel": channel, "rule_id": "fee-reminder", "rule_version": "v3", "template": "fee_due",
              "campaign": "autumn-fees", "variant": "B", **fields}
    rows = [Receipt(event_time=NOW - sent_ago, status="sent", provider="smtp-main", cost=0.01, **common)]
    rows += [
        # Opens and clicks come from the API's links, which name no carrier.
        Receipt(event_time=NOW - ago, status=status,
                provider="link" if status in ("opened", "clicked") else "smtp-main", **common)
        for status, ago in touches
    ]
    ReceiptSink(client).write(rows)
    return message_id


def conversion(user: str, ago: timedelta = timedelta(0), **fields: Any) -> Conversion:
    values: dict[str, Any] = {
        "conversion_id": f"pay-{uuid.uuid4().hex[:10]}", "app": "bursar", "user_id": user,
        "type": "payment", "value": Decimal("1280.50"), "currency": "CNY",
        "occurred_at": NOW - ago, **fields,
    }
    return Conversion.model_validate(values)


def converted(client: Client, user: str) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT * FROM message_events FINAL WHERE status = 'converted' AND user_id = {u:String} "
        "ORDER BY conversion_id", parameters={"u": user},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def recorded(client: Client, user: str) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT * FROM conversions FINAL WHERE user_id = {u:String} ORDER BY conversion_id",
        parameters={"u": user},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def credited(client: Client, conversions: Sequence[Conversion], **kwargs: Any) -> list[str]:
    """Attribute, then the message each conversion was credited to ('' for none), in batch order."""
    attribute(client, conversions, RULES, **kwargs)
    ids = {c.conversion_id for c in conversions}
    rows = {r["conversion_id"]: r["message_id"] for u in {c.user_id for c in conversions}
            for r in recorded(client, u) if r["conversion_id"] in ids}
    return [rows[c.conversion_id] for c in conversions]


def test_last_touch_credits_the_latest_touch_described_as_sent(clickhouse: Client, user: str) -> None:
    older = message(clickhouse, user, timedelta(days=2), ("clicked", timedelta(days=1, hours=12)))
    latest = message(clickhouse, user, timedelta(hours=10), ("delivered", timedelta(hours=9)),
                     ("clicked", timedelta(hours=2)), channel="inbox", template="fee_due_inbox")
    paid = conversion(user, attributes={"term": "2026-autumn", "late": False})

    assert attribute(clickhouse, [paid], RULES) == 2  # one converted row, one conversion row

    [row] = converted(clickhouse, user)
    assert row["message_id"] == latest != older
    assert (row["channel"], row["provider"], row["app"]) == ("inbox", "smtp-main", "lms")
    assert (row["rule_id"], row["rule_version"], row["variant"]) == ("fee-reminder", "v3", "B")
    assert (row["template"], row["campaign"]) == ("fee_due_inbox", "autumn-fees")
    assert (row["conversion_id"], row["conversion_type"]) == (paid.conversion_id, "payment")
    assert (row["value"], row["currency"], row["cost"]) == (Decimal("1280.50"), "CNY", 0)
    assert row["event_time"] == paid.occurred_at
    [kept] = recorded(clickhouse, user)
    assert (kept["message_id"], kept["touch"], kept["model"]) == (latest, "clicked", "last_touch")
    assert kept["app"] == "bursar"
    assert kept["touched_at"] == NOW - timedelta(hours=2)
    assert kept["attributes"] == {"term": "2026-autumn", "late": "false"}


def test_first_touch_credits_the_earliest_touch_in_its_windows(clickhouse: Client, user: str) -> None:
    too_old = message(clickhouse, user, timedelta(days=20), ("clicked", timedelta(days=15)))
    first = message(clickhouse, user, timedelta(days=10), ("clicked", timedelta(days=9)))
    message(clickhouse, user, timedelta(days=2), ("delivered", timedelta(days=2)))
    enrolled = conversion(user, type="enrolment")
    assert credited(clickhouse, [enrolled]) == [first]
    assert first != too_old
    assert recorded(clickhouse, user)[0]["model"] == "first_touch"


@pytest.mark.parametrize(("touch", "window"), [
    ("clicked", timedelta(days=7)), ("read", timedelta(days=3)),
    ("opened", timedelta(days=2)), ("delivered", timedelta(days=1)),
])
def test_each_window_credits_a_touch_inside_it_and_not_one_outside(
    clickhouse: Client, user: str, touch: str, window: timedelta
) -> None:
    inside = message(clickhouse, user, window + timedelta(hours=3), (touch, window - timedelta(hours=1)))
    outside_user = f"{user}-late"
    message(clickhouse, outside_user, window + timedelta(hours=3), (touch, window + timedelta(hours=1)))
    assert credited(clickhouse, [conversion(user), conversion(outside_user)]) == [inside, ""]
    assert recorded(clickhouse, user)[0]["touch"] == touch


def test_a_transition_without_a_window_earns_nothing(clickhouse: Client, user: str) -> None:
    # `order` credits clicks within 6 hours only: a fresh delivery is not a reason to buy lunch.
    message(clickhouse, user, timedelta(hours=2), ("delivered", timedelta(hours=1)))
    assert credited(clickhouse, [conversion(user, type="order")]) == [""]
    assert converted(clickhouse, user) == []


def test_touches_after_the_conversion_do_not_count(clickhouse: Client, user: str) -> None:
    message(clickhouse, user, timedelta(hours=5), ("clicked", timedelta(hours=1)))
    assert credited(clickhouse, [conversion(user, ago=timedelta(hours=3))]) == [""]


def test_a_named_message_wins_when_it_reached_the_person_whatever_the_windows(
    clickhouse: Client, user: str
) -> None:
    named = message(clickhouse, user, timedelta(days=30), ("delivered", timedelta(days=30)))
    message(clickhouse, user, timedelta(hours=3), ("clicked", timedelta(hours=1)))
    assert credited(clickhouse, [conversion(user, message_id=named)]) == [named]
    kept = recorded(clickhouse, user)[0]
    assert (kept["touch"], kept["named_message"]) == ("delivered", named)


def test_a_named_message_of_someone_else_falls_back_to_the_windows(clickhouse: Client, user: str) -> None:
    theirs = message(clickhouse, f"{user}-other", timedelta(hours=4), ("clicked", timedelta(hours=3)))
    mine = message(clickhouse, user, timedelta(hours=3), ("read", timedelta(hours=2)))
    assert credited(clickhouse, [conversion(user, message_id=theirs)]) == [mine]
    assert recorded(clickhouse, user)[0]["named_message"] == theirs


def test_a_token_counts_only_when_verified(clickhouse: Client, user: str) -> None:
    via_link = message(clickhouse, user, timedelta(days=9), ("clicked", timedelta(days=8)))
    recent = message(clickhouse, user, timedelta(hours=3), ("delivered", timedelta(hours=2)))
    token = "eyJhIjoxfQ.c2lnbmF0dXJl"
    with_verifier = conversion(user, token=token)
    without = conversion(user, token=token)
    assert credited(clickhouse, [with_verifier], tokens={token: via_link}.get) == [via_link]
    assert credited(clickhouse, [without]) == [recent]


def test_unattributed_conversions_are_kept_for_baselines(clickhouse: Client, user: str) -> None:
    walk_in = conversion(user, value="99.00", currency="USD")
    assert attribute(clickhouse, [walk_in], RULES) == 1
    [kept] = recorded(clickhouse, user)
    assert (kept["message_id"], kept["channel"], kept["touch"], kept["touched_at"]) == ("", "", "", None)
    assert (kept["value"], kept["currency"], kept["type"]) == (Decimal("99.00"), "USD", "payment")
    assert converted(clickhouse, user) == []


def test_a_replay_is_not_counted_twice(clickhouse: Client, user: str) -> None:
    message(clickhouse, user, timedelta(hours=3), ("clicked", timedelta(hours=1)))
    paid = conversion(user)
    assert attribute(clickhouse, [paid, paid], RULES) == 2  # a repeat inside the batch is dropped too
    assert attribute(clickhouse, [paid], RULES) == 0
    # Even a later touch before it does not move the credit of a conversion already recorded.
    message(clickhouse, user, timedelta(minutes=50), ("clicked", timedelta(minutes=30)))
    assert attribute(clickhouse, [paid], RULES) == 0
    raw = clickhouse.query(
        "SELECT count() FROM message_events WHERE status = 'converted' AND user_id = {u:String}",
        parameters={"u": user},
    )
    assert raw.result_rows == [(1,)]
    assert len(recorded(clickhouse, user)) == 1


def test_two_conversions_led_by_one_message_stay_two_rows(clickhouse: Client, user: str) -> None:
    led = message(clickhouse, user, timedelta(hours=3), ("clicked", timedelta(hours=2)))
    first, second = conversion(user, ago=timedelta(hours=1)), conversion(user)
    assert credited(clickhouse, [first, second]) == [led, led]
    rows = converted(clickhouse, user)
    assert sorted(r["conversion_id"] for r in rows) == sorted([first.conversion_id, second.conversion_id])
    total = clickhouse.query(
        "SELECT sum(value) FROM message_events FINAL WHERE status = 'converted' AND user_id = {u:String}",
        parameters={"u": user},
    )
    assert total.result_rows == [(Decimal("2561.00"),)]


class CountingClient:
    """The real client, counting the queries attribution sends."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self._client.query(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.insert(*args, **kwargs)


def test_a_batch_is_read_with_two_queries_whatever_its_size(clickhouse: Client) -> None:
    people = [f"u-{uuid.uuid4().hex[:10]}" for _ in range(40)]
    for person in people:
        message(clickhouse, person, timedelta(hours=3), ("clicked", timedelta(hours=1)))
    counting = CountingClient(clickhouse)
    written = attribute(counting, [conversion(p) for p in people], RULES)  # type: ignore[arg-type]
    # One for the conversions already recorded, one for every touch of the batch's people.
    assert (written, counting.queries) == (80, 2)


def test_a_control_recipient_converts_on_its_held_out_row_under_the_delivered_window(
    clickhouse: Client, user: str
) -> None:
    """Without this a rule's control share would always convert at 0 % and every lift would be huge."""
    held = uuid.uuid4().hex[:24]
    ReceiptSink(clickhouse).write([Receipt(
        event_time=NOW - timedelta(hours=20), message_id=held, event_id="ev-held", app="lms", user_id=user,
        status="held_out", rule_id="fee-reminder", rule_version="v3", variant="control",
        reason="held out: control share control of rule fee-reminder",
    )])
    late = uuid.uuid4().hex[:24]
    ReceiptSink(clickhouse).write([Receipt(
        event_time=NOW - timedelta(days=2), message_id=late, event_id="ev-late", app="lms",
        user_id=f"{user}-other", status="held_out", rule_id="fee-reminder", variant="control",
    )])
    assert attribute(clickhouse, [conversion(user), conversion(f"{user}-other")], RULES) > 0
    (row,) = converted(clickhouse, user)
    assert (row["message_id"], row["rule_id"], row["variant"], row["channel"]) == (
        held, "fee-reminder", "control", ""
    )
    assert recorded(clickhouse, user)[0]["touch"] == "held_out"
    assert converted(clickhouse, f"{user}-other") == []  # two days ago: outside the 1-day window
