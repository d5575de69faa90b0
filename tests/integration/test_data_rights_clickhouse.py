"""A person's ClickHouse rows, written by the sink, the event log and attribution: read for an export,
then anonymised (or deleted) with no row of any table naming them, every aggregate by channel and
status unchanged, the daily rollup unchanged, and another person's rows untouched."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from analytics import erasure
from analytics.attribution import attribute
from analytics.attribution_rules import AttributionRules
from analytics.event_log import EventLog
from analytics.service import ClickHouseWriters
from analytics.sink import ReceiptSink
from records.conversions import Conversion
from records.erasure import ErasedAddress, ErasureMode, ErasureRequest, pseudonym
from records.topics import Audience, EventCore, RawAddress, Receipt, address_user_id
from tests.integration.rights_support import clickhouse_mentions


def people(run: str) -> dict[str, Any]:
    """Ids unique to this test: the session's ClickHouse is shared, rows are told apart by them."""
    return {
        "alice": f"alice-{run}",
        "bo": f"bo-{run}",
        "email": f"alice.{run}@uni.example",
        "app": f"bursar{run[:6]}",
    }


def fill(client: Client, ids: dict[str, Any]) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    alice, bo, email, app = ids["alice"], ids["bo"], ids["email"], ids["app"]
    raw = address_user_id("email", email)
    receipts = []
    for user, n in ((alice, 3), (bo, 2)):
        for i in range(n):
            common = {
                "event_id": f"fee-{i}",
                "app": app,
                "user_id": user,
                "template": "fee_due",
                "cost": 0.05,
            }
            receipts += [
                Receipt(event_time=now, message_id=f"{user}-m{i}", status="decided", **common),
                Receipt(event_time=now, message_id=f"{user}-m{i}", status="sent", channel="email", **common),
            ]
    # A send to her address given raw (recorded under the address's id), and a refusal of someone else
    # whose reason names her as the address's owner.
    receipts.append(
        Receipt(
            event_time=now, message_id=f"raw-{alice}", app=app, user_id=raw, status="sent", channel="email"
        )
    )
    receipts.append(
        Receipt(
            event_time=now,
            message_id=f"{bo}-shared",
            app=app,
            user_id=bo,
            status="suppressed",
            channel="email",
            reason=f"blacklisted (the address belongs to {alice}): spam",
        )
    )
    ReceiptSink(client).write(receipts)
    event = EventCore(
        event_id=f"notice-{alice}",
        app=app,
        type="notice",
        template="fee_due",
        category="notice",
        data={"contact": email},
    )
    to_both = Audience(user_ids=[alice, bo]).model_dump_json()
    to_address = Audience(addresses=[RawAddress(channel="email", address=email)]).model_dump_json()
    raw_event = event.model_copy(update={"event_id": f"raw-{alice}", "data": {}})
    EventLog(client).write([(now, event, to_both), (now, raw_event, to_address)])
    conversions = [
        Conversion(
            conversion_id=f"pay-{user}",
            app=app,
            user_id=user,
            type="payment",
            value=Decimal("5000"),
            currency="CNY",
            occurred_at=now + timedelta(minutes=1),
            message_id=f"{user}-m0",
            attributes={"payer": user},
        )
        for user in (alice, bo)
    ]
    attribute(client, conversions, AttributionRules())


def aggregates(client: Client, app: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    rows = client.query(
        "SELECT channel, status, uniqExact(message_id), sum(cost) FROM message_events FINAL "
        "WHERE app = {app:String} AND status != 'erased' GROUP BY channel, status",
        parameters={"app": app},
    ).result_rows
    return {(c, s): (int(n), Decimal(str(cost))) for c, s, n, cost in rows}


def rollup(client: Client, app: str) -> dict[str, int]:
    rows = client.query(
        "SELECT status, uniqCombined64Merge(messages) FROM message_rollup_daily WHERE app = {app:String} "
        "GROUP BY status",
        parameters={"app": app},
    ).result_rows
    return {str(s): int(n) for s, n in rows}


def request_for(ids: dict[str, Any], mode: ErasureMode) -> ErasureRequest:
    email = ids["email"]
    return ErasureRequest(
        user_id=ids["alice"],
        pseudonym=pseudonym(b"test-key", ids["alice"]),
        addresses=(
            ErasedAddress(channel="email", address=email, address_id=address_user_id("email", email)),
        ),
        mode=mode,
    )


def test_the_history_of_a_person_is_read_for_an_export(clickhouse: Client) -> None:
    ids = people(uuid.uuid4().hex[:10])
    fill(clickhouse, ids)
    page = erasure.history(clickhouse, request_for(ids, "anonymise"))
    assert {r["message_id"] for r in page.message_events} == {
        *(f"{ids['alice']}-m{i}" for i in range(3)),
        f"raw-{ids['alice']}",
    }
    assert {r["status"] for r in page.message_events} == {"decided", "sent", "converted"}
    assert [r["conversion_id"] for r in page.conversions] == [f"pay-{ids['alice']}"]
    assert sorted(r["event_id"] for r in page.event_log) == [f"notice-{ids['alice']}", f"raw-{ids['alice']}"]
    # Other recipients of her events are theirs, not part of her export: only how many there were.
    notice = next(r for r in page.event_log if r["event_id"].startswith("notice-"))
    assert notice["audience"]["user_ids"] == [ids["alice"]] and notice["audience"]["other_recipients"] == 1
    assert ids["bo"] not in json.dumps(page.event_log)
    assert page.more == []
    small = erasure.history(clickhouse, request_for(ids, "anonymise"), limit=2, offset=0)
    assert len(small.message_events) == 2 and small.more == ["message_events"]
    with pytest.raises(ValueError, match="history limit"):
        erasure.history(clickhouse, request_for(ids, "anonymise"), limit=0)


@pytest.mark.parametrize("mode", ["anonymise", "delete"])
def test_erasure_leaves_no_row_naming_the_person(clickhouse: Client, mode: ErasureMode) -> None:
    ids = people(uuid.uuid4().hex[:10])
    fill(clickhouse, ids)
    request = request_for(ids, mode)
    alice_needles = [ids["alice"], ids["email"], address_user_id("email", ids["email"])]
    assert set(clickhouse_mentions(clickhouse, alice_needles)) >= {
        "message_events.user_id",
        "message_events.reason",
        "conversions.user_id",
        "conversions.attributes",
        "event_log.audience",
        "event_log.payload",
    }
    before, rollup_before = aggregates(clickhouse, ids["app"]), rollup(clickhouse, ids["app"])
    bo_before = erasure.history(
        clickhouse, ErasureRequest(user_id=ids["bo"], pseudonym=pseudonym(b"k", "bo"))
    )

    left = erasure.apply(clickhouse, request)

    assert left == {"message_events": 0, "conversions": 0, "event_log": 0}
    assert clickhouse_mentions(clickhouse, alice_needles) == {}
    erased = clickhouse.query(
        "SELECT user_id, reason FROM message_events WHERE status = 'erased' AND message_id = {m:String}",
        parameters={"m": f"erasure-{request.request_id}"},
    ).result_rows
    assert erased == [(request.pseudonym, erasure.erased_row(request).reason)]
    # The daily rollup is never rewritten: its anonymous counts are the same in both modes.
    assert rollup(clickhouse, ids["app"]) == rollup_before
    after = aggregates(clickhouse, ids["app"])
    if mode == "anonymise":
        assert after == before  # every count and cost by channel and status, exactly
        named = clickhouse.query(
            "SELECT uniqExact(message_id) FROM message_events WHERE user_id = {p:String} AND status = 'sent'",
            parameters={"p": request.pseudonym},
        ).result_rows[0][0]
        assert named == 4  # her three messages and the raw send to her address, under the pseudonym
    else:
        assert after[("email", "sent")][0] == before[("email", "sent")][0] - 4
    # Bo's rows are his as before; only the reason naming her as the address's owner changed.
    bo_after = erasure.history(clickhouse, ErasureRequest(user_id=ids["bo"], pseudonym=pseudonym(b"k", "bo")))
    assert len(bo_after.message_events) == len(bo_before.message_events)
    assert bo_after.conversions == bo_before.conversions
    [(stored,)] = clickhouse.query(
        "SELECT reason FROM message_events WHERE message_id = {m:String}",
        parameters={"m": f"{ids['bo']}-shared"},
    ).result_rows
    assert stored == f"blacklisted (the address belongs to {request.pseudonym}): spam"
    # His export never names the other owner of the address, erased or not.
    shared = next(r for r in bo_after.message_events if r["message_id"] == f"{ids['bo']}-shared")
    assert shared["reason"] == "blacklisted (the address belongs to another person): spam"
    assert [row["audience"]["user_ids"] for row in bo_after.event_log] == [[ids["bo"]]]
    # Applied again (a redelivered request): nothing more to do, the same answer.
    assert erasure.apply(clickhouse, request) == left


@pytest.mark.parametrize("again_after", [0.0, 3600.0])
def test_rows_of_messages_in_flight_are_anonymised_when_the_service_applies_the_erasure_again(
    clickhouse: Client, again_after: float
) -> None:
    ids = people(uuid.uuid4().hex[:10])
    request = request_for(ids, "anonymise")
    writers = ClickHouseWriters(clickhouse, erase_again_after=again_after)
    assert writers.erasures([("erasures:0:1", request.model_dump_json().encode())]) == 1
    # A receipt of a message that was in flight when she was erased reaches the service afterwards.
    late = Receipt(
        message_id=f"{ids['alice']}-late",
        app=ids["app"],
        user_id=ids["alice"],
        status="suppressed",
        reason="unknown user",
    )
    writers.receipts([("receipts:0:9", late.model_dump_json().encode())])
    left = clickhouse_mentions(clickhouse, [ids["alice"]])
    assert left == ({} if again_after == 0.0 else {"message_events.user_id": 1})
