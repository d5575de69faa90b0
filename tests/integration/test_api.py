"""The API against real Redis and the real broker: accepted means on the topic, reads emit receipts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from redis.asyncio import Redis

from api import ApiDeps, KafkaPublisher, create_api
from api.access import Access
from api.inbox import MAX_OFFSET
from api.publisher import PublishError, bootstrap_servers
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from localparts import LocalParts, free_port
from records.topics import Dispatch, Event, EventCore, Receipt
from settings import ROOT
from state.apps import AppExistsError, AppRegistry, UnknownAppError
from state.inbox import Inbox, InboxMessage
from state.user_tokens import UserTokenSigner
from state.users import UserDirectory
from tests.integration.moments import now

EVENT = {
    "event_id": "fee-2026", "app": "bursar", "type": "fee.due", "template": "fee_due",
    "audience": {"tags": ["undergraduate"]}, "category": "transactional", "priority": "high",
    "data": {"amount": "¥5,500.00", "due_date": "2026-12-06", "term": "2026-2027 autumn"},
}

CATALOG = TemplateCatalog(ROOT / "templates")
USER_TOKENS = UserTokenSigner(SecretStr("integration-user-token-key-0123456789abcdef"))


def user(user_id: str) -> dict[str, str]:
    """The headers of `user_id` signed in to the bursar's portal (an end-user token it minted)."""
    return {"Authorization": f"Bearer {USER_TOKENS.mint('bursar', user_id, 600)[0]}"}


@dataclass
class Running:
    client: httpx.AsyncClient
    key: str
    events_topic: str
    receipts_topic: str
    bootstrap: str
    inbox: Inbox
    apps: AppRegistry


@pytest.fixture
async def running(local_parts: LocalParts, redis: Redis) -> AsyncIterator[Running]:
    """The API with real collaborators, its lifespan run on this test's loop, topics of its own."""
    unique = uuid.uuid4().hex[:10]
    events_topic, receipts_topic = f"t{unique}-events", f"t{unique}-receipts"
    apps, inbox = AppRegistry(redis), Inbox(redis)
    key = await apps.register("bursar", {"email", "inbox", "sms"}, "Finance Office")
    publisher = KafkaPublisher(
        local_parts.kafka_url, events_topic=events_topic, receipts_topic=receipts_topic
    )
    api = create_api(ApiDeps(
        apps=apps, inbox=inbox, publisher=publisher, redis=redis, templates=CATALOG,
        segments=UserDirectory(redis), access=Access(apps, user_tokens=USER_TOKENS),
    ))
    async with api.router.lifespan_context(api), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://switchboard.test"
    ) as client:
        yield Running(client, key, events_topic, receipts_topic, publisher.bootstrap, inbox, apps)


async def consume(
    bootstrap: str, topic: str, at_least: int, linger: float = 1.0
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on the topic: waits for `at_least`, then `linger` seconds more for extras."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 20
        quiet_until: float | None = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            batches = await consumer.getmany(timeout_ms=250)
            records += [(r.key, r.value) for batch in batches.values() for r in batch]
            if quiet_until is None and len(records) >= at_least:
                quiet_until = time.monotonic() + linger
    finally:
        await consumer.stop()
    return records


async def test_accepted_event_is_on_the_events_topic(running: Running) -> None:
    answer = await running.client.post(
        "/v1/events", json=EVENT, headers={"Authorization": f"Bearer {running.key}"}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "event_id": "fee-2026", "app": "bursar"}
    # Priority high: the urgent lane's events topic.
    [(key, value)] = await consume(running.bootstrap, f"{running.events_topic}.urgent", at_least=1)
    assert key == b"bursar:fee-2026"
    assert Event.model_validate_json(value) == Event.model_validate(EVENT)


async def test_batch_lands_every_event_and_refusals_land_nothing(running: Running) -> None:
    headers = {"X-Api-Key": running.key}
    refused = await running.client.post(
        "/v1/events", json={**EVENT, "event_id": "x", "channels": ["push"]}, headers=headers
    )
    assert refused.status_code == 403 and "push" in refused.json()["detail"]
    batch = [{**EVENT, "event_id": f"fee-{n}", "priority": "normal"} for n in range(20)]
    answer = await running.client.post("/v1/events:batch", json=batch, headers=headers)
    assert answer.status_code == 202, answer.text
    records = await consume(running.bootstrap, running.events_topic, at_least=20)
    assert sorted(key for key, _ in records) == sorted(f"bursar:fee-{n}".encode() for n in range(20))


async def test_rotated_key_replaces_the_old_one(running: Running) -> None:
    new_key = await running.apps.rotate_key("bursar")
    old = await running.client.post("/v1/events", json=EVENT, headers={"X-Api-Key": running.key})
    new = await running.client.post("/v1/events", json=EVENT, headers={"X-Api-Key": new_key})
    assert (old.status_code, new.status_code) == (401, 202)


async def test_inbox_read_and_click_emit_one_receipt_each(running: Running) -> None:
    message = InboxMessage(
        message_id="m-1", title="Fee due", body="Pay by 6 Dec", app="bursar", event_id="fee-2026",
        template="fee_due", category="transactional", campaign="autumn-fees", rule_id="transactional-email",
        rule_version="4", created_at=now(),
    )
    assert await running.inbox.add("s1", message)
    headers = user("s1")
    page = (await running.client.get("/v1/inbox/s1", headers=headers)).json()
    assert (page["unread"], page["total"], page["messages"][0]["message_id"]) == (1, 1, "m-1")

    for path in ("read", "read", "click", "click"):
        assert (await running.client.post(f"/v1/inbox/s1/m-1/{path}", headers=headers)).status_code == 200
    assert (await running.client.get("/v1/inbox/s1", headers=headers)).json()["unread"] == 0

    records = await consume(running.bootstrap, running.receipts_topic, at_least=2)
    receipts = [Receipt.model_validate_json(value) for _, value in records]
    assert [r.status for r in receipts] == ["read", "clicked"]
    assert {key for key, _ in records} == {b"m-1"}
    expected = {
        "message_id": "m-1", "app": "bursar", "event_id": "fee-2026", "user_id": "s1", "channel": "inbox",
        "provider": "inbox", "template": "fee_due", "campaign": "autumn-fees",
        "rule_id": "transactional-email", "rule_version": "4",
    }
    assert all(r.model_dump(include=set(expected)) == expected for r in receipts)

    assert (await running.client.delete("/v1/inbox/s1/m-1", headers=headers)).status_code == 204
    assert (await running.client.post("/v1/inbox/s1/m-1/read", headers=headers)).status_code == 404


async def test_healthz_reports_redis_down(running: Running, local_parts: LocalParts) -> None:
    assert (await running.client.get("/healthz")).json() == {"status": "ok", "redis": "ok", "publisher": "ok"}
    dead_redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    publisher = KafkaPublisher(local_parts.kafka_url, events_topic="unused", receipts_topic="unused")
    api = create_api(ApiDeps(
        apps=running.apps, inbox=running.inbox, publisher=publisher, redis=dead_redis, templates=CATALOG,
        segments=UserDirectory(dead_redis),
    ))
    async with api.router.lifespan_context(api), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://switchboard.test"
    ) as client:
        answer = await client.get("/healthz")
    await dead_redis.aclose()
    assert answer.status_code == 503
    assert answer.json()["status"] == "down" and answer.json()["publisher"] == "ok"
    assert answer.json()["redis"].startswith("down: ")


async def test_publisher_refuses_to_start_without_a_broker() -> None:
    publisher = KafkaPublisher(f"kafka://127.0.0.1:{free_port()}", events_topic="e", receipts_topic="r")
    with pytest.raises(PublishError, match="cannot reach"):
        await asyncio.wait_for(publisher.start(), 30)
    with pytest.raises(PublishError, match="not started"):
        await publisher.publish_event("a:b", b"{}")


def test_bootstrap_servers_from_urls() -> None:
    assert bootstrap_servers("kafka://127.0.0.1:19092") == "127.0.0.1:19092"
    assert bootstrap_servers("kafka://a:1,b:2/") == "a:1,b:2"
    with pytest.raises(ValueError, match="kafka://host:port"):
        bootstrap_servers("kafka://nohost")


async def test_registry_stores_only_the_key_hash(redis: Redis) -> None:
    apps = AppRegistry(redis)
    key = await apps.register("lms", {"inbox", "email"}, "Learning management")
    assert key.startswith("sbk_") and len(key) > 40
    stored = [await redis.dump(k) for k in await redis.keys("*")]
    assert all(key.encode() not in (value or b"") for value in stored)
    app = await apps.authenticate(key)
    assert app is not None and app.name == "lms" and app.channels == {"inbox", "email"}
    assert key not in repr(app)
    assert await apps.authenticate(key + "x") is None
    assert await apps.authenticate("not-a-key") is None
    with pytest.raises(AppExistsError, match="'lms'"):
        await apps.register("lms", {"inbox"}, "again")
    with pytest.raises(UnknownAppError, match="'ghost'"):
        await apps.rotate_key("ghost")
    await apps.register("campus", {"inbox"})
    assert [a.name for a in await apps.list()] == ["campus", "lms"]
    assert await apps.get("ghost") is None
    assert json.loads((await redis.get("sb:{apps}:app:lms")) or b"{}")["key_sha256"] != key


async def test_the_unread_count_alone_for_a_badge(running: Running) -> None:
    headers = user("s2")
    start = now()
    for n in range(3):
        await running.inbox.add("s2", InboxMessage(
            message_id=f"m-{n}", title="t", body="b", app="bursar", event_id=f"e-{n}", template="fee_due",
            category="notice", created_at=start + timedelta(minutes=n),
        ))
    assert (await running.client.get("/v1/inbox/s2/unread", headers=headers)).json() == {"unread": 3}
    await running.client.post("/v1/inbox/s2/m-1/read", headers=headers)
    assert (await running.client.get("/v1/inbox/s2/unread", headers=headers)).json() == {"unread": 2}
    nobody = await running.client.get("/v1/inbox/nobody/unread", headers=user("nobody"))
    assert nobody.json() == {"unread": 0}
    # The app's own key reaches no inbox: only its users do, with their tokens.
    by_key = await running.client.get("/v1/inbox/s2/unread", headers={"X-Api-Key": running.key})
    assert by_key.status_code == 403
    assert (await running.client.get("/v1/inbox/s2/unread")).status_code == 401


async def test_link_receipts_land_on_the_receipts_topic(local_parts: LocalParts, redis: Redis) -> None:
    unique = uuid.uuid4().hex[:10]
    publisher = KafkaPublisher(
        local_parts.kafka_url, events_topic=f"t{unique}-events", receipts_topic=f"t{unique}-receipts"
    )
    signer = LinkSigner(SecretStr("integration-link-secret-0123456789"), "https://notify.uni.example.edu")
    api = create_api(ApiDeps(apps=AppRegistry(redis), inbox=Inbox(redis), publisher=publisher, redis=redis,
                             templates=CATALOG, segments=UserDirectory(redis), links=signer))
    event = EventCore(event_id="open-day", app="campus", type="notice", template="campus_notice",
                      category="marketing")
    sent = Dispatch(message_id="m-9", user_id="s1", channel="email", address="s1@uni.example.edu",
                    event=event, rule_id="r", rule_version="1")
    async with api.router.lifespan_context(api), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="https://notify.uni.example.edu"
    ) as client:
        assert (await client.get(signer.open_pixel_url(sent))).status_code == 200
        assert (await client.get(signer.click_url(sent, "https://www.uni.example.edu/"))).status_code == 302
    records = await consume(publisher.bootstrap, f"t{unique}-receipts", at_least=2)
    assert [(key, Receipt.model_validate_json(value).status) for key, value in records] == [
        (b"m-9", "opened"), (b"m-9", "clicked"),
    ]


async def test_a_huge_inbox_offset_is_a_client_error_not_an_outage(running: Running) -> None:
    headers = user("s1")
    huge = await running.client.get("/v1/inbox/s1", params={"offset": 10**19}, headers=headers)
    assert huge.status_code == 422, huge.text
    assert huge.json()["detail"][0]["loc"] == ["query", "offset"]
    furthest = await running.client.get("/v1/inbox/s1", params={"offset": MAX_OFFSET}, headers=headers)
    assert furthest.status_code == 200 and furthest.json()["messages"] == []
