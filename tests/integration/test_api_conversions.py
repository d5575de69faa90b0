"""Conversions through the API onto the real broker, and from the topic into attribution on the test
chdb: what the analytics service does with each batch of `conversions`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr
from redis.asyncio import Redis

from analytics.attribution import attribute
from analytics.attribution_rules import AttributionRules
from analytics.sink import ReceiptSink
from api import ApiDeps, KafkaPublisher, create_api
from channels.links import LinkClaims, LinkSigner
from localparts import LocalParts
from records.conversions import Conversion
from records.topics import Dispatch, EventCore
from state.apps import AppRegistry
from state.inbox import Inbox
from state.users import UserDirectory
from tests.integration.moments import now
from tests.integration.test_api import CATALOG, consume
from tests.integration.test_api_support import LINK_SECRET, PUBLIC_URL

SIGNER = LinkSigner(LINK_SECRET, PUBLIC_URL)


@dataclass
class Running:
    client: httpx.AsyncClient
    headers: dict[str, str]
    topic: str
    bootstrap: str


@pytest.fixture
async def running(local_parts: LocalParts, redis: Redis) -> AsyncIterator[Running]:
    unique = uuid.uuid4().hex[:10]
    topic = f"t{unique}-conversions"
    apps = AppRegistry(redis)
    key = await apps.register("bursar", {"inbox"}, "Finance Office")
    publisher = KafkaPublisher(local_parts.kafka_url, events_topic=f"t{unique}-events",
                               receipts_topic=f"t{unique}-receipts", conversions_topic=topic)
    api = create_api(ApiDeps(apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
                             templates=CATALOG, segments=UserDirectory(redis), links=SIGNER))
    async with api.router.lifespan_context(api), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://switchboard.test"
    ) as client:
        yield Running(client, {"Authorization": f"Bearer {key}"}, topic, publisher.bootstrap)



def sent_and_clicked(client: Client, user: str) -> Dispatch:
    """An inbox message to `user`, sent two hours ago and clicked an hour ago; its dispatch."""
    dispatch = Dispatch(
        message_id=uuid.uuid4().hex[:24], user_id=user, channel="inbox", address=user,
        event=EventCore(event_id=f"fee-{user}", app="bursar", type="fee.due", template="fee_due",
                        category="notice", campaign="autumn-fees"),
        rule_id="fees", rule_version="v3",
    )
    claims = LinkClaims.of(dispatch)
    ReceiptSink(client).write([
        claims.receipt("sent", provider="inbox", event_time=now() - timedelta(hours=2)),
        claims.receipt("clicked", provider="link", event_time=now() - timedelta(hours=1)),
    ])
    return dispatch


async def test_conversions_reach_the_topic_keyed_by_user_and_are_attributed_from_it(
    running: Running, clickhouse: Client
) -> None:
    users = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    via_link = sent_and_clicked(clickhouse, users[0])
    token = SIGNER.token("click", LinkClaims.of(via_link, "https://pay.uni.example.edu/"))
    occurred = (now() - timedelta(minutes=5)).isoformat()
    batch = [
        {"conversion_id": f"pay-{u}", "app": "bursar", "user_id": u, "type": "payment",
         "value": "1280.50", "currency": "CNY", "occurred_at": occurred}
        for u in users
    ]
    batch[0]["token"] = token
    answer = await running.client.post("/v1/conversions:batch", json=batch, headers=running.headers)
    assert answer.status_code == 202, answer.text
    one = {**batch[1], "conversion_id": "pay-again"}
    again = await running.client.post("/v1/conversions", json=one, headers=running.headers)
    assert again.status_code == 202

    records = await consume(running.bootstrap, running.topic, at_least=4)
    assert sorted(key for key, _ in records) == sorted(u.encode() for u in [*users, users[1]])
    published = [Conversion.model_validate_json(value) for _, value in records]
    first = next(c for c in published if c.user_id == users[0])
    assert (first.message_id, first.token) == (via_link.message_id, None)
    assert token not in b"".join(value for _, value in records).decode()

    # A replay of the whole topic adds nothing.
    rules = AttributionRules.load("config/attribution.yaml")
    assert attribute(clickhouse, published, rules) == 5  # one converted row, four conversions
    assert attribute(clickhouse, published, rules) == 0
    rows = clickhouse.query(
        "SELECT message_id, channel, app, value FROM message_events FINAL "
        "WHERE status = 'converted' AND user_id IN {users:Array(String)}", parameters={"users": users},
    ).result_rows
    assert rows == [(via_link.message_id, "inbox", "bursar", Decimal("1280.50"))]


async def test_a_forged_token_is_refused_and_nothing_is_published(running: Running) -> None:
    forged = LinkSigner(SecretStr("another-secret-entirely-0123456789"), PUBLIC_URL)
    dispatch = Dispatch(
        message_id="0" * 24, user_id="s1", channel="inbox", address="s1",
        event=EventCore(event_id="e", app="bursar", type="t", template="fee_due", category="notice"),
        rule_id="r", rule_version="v1",
    )
    body = {"conversion_id": "pay-forged", "app": "bursar", "user_id": "s1", "type": "payment",
            "value": 1, "currency": "CNY", "occurred_at": now().isoformat(),
            "token": forged.token("click", LinkClaims.of(dispatch, "/x"))}
    answer = await running.client.post("/v1/conversions", json=body, headers=running.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "token"]
    # A good one after it: the topic then holds that one alone.
    good = {**body, "conversion_id": "pay-good", "token": None}
    accepted = await running.client.post("/v1/conversions", json=good, headers=running.headers)
    assert accepted.status_code == 202
    [(_, value)] = await consume(running.bootstrap, running.topic, at_least=1)
    assert Conversion.model_validate_json(value).conversion_id == "pay-good"
