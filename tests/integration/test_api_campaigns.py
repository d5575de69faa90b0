"""The campaigns API on real Redis: an operator composes a campaign, sees its recipients and estimated
cost, submits it as one event, cancels it, recalls its inbox messages; every change is audited and
every call is checked on the campaign's app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from api.campaign_service import CampaignDesk
from api.publisher import PublishError
from channels.templates import TemplateCatalog
from records.topics import Event
from settings import ROOT
from state.apps import AppRegistry
from state.campaigns import CampaignStore, CancelledCampaigns
from state.inbox import Inbox, InboxMessage
from state.operators import OperatorStore
from state.users import User, UserDirectory
from tests.integration.test_api_support import RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SMS_PRICE = 0.05
PEOPLE = [f"s{n}" for n in range(4)]
DATA = {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}


def composition(**changes: Any) -> dict[str, Any]:
    return {
        "app": "lms",
        "name": "Week 1 reminder",
        "audience": {"tags": ["year-2020"]},
        "channels": ["sms", "inbox"],
        "category": "notice",
        "template": "course_reminder",
        "data": DATA,
        "type": "course.reminder",
    } | changes


@dataclass
class EventRecorder(RecordingPublisher):
    """Keeps the events the API published too."""

    events: list[tuple[str, bytes, str]] = field(default_factory=list)

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        if self.down:
            raise PublishError("topic 'events' did not acknowledge the record")
        self.events.append((key, value, lane))


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: EventRecorder
    inbox: Inbox
    sender: dict[str, str]
    analyst: dict[str, str]
    outsider: dict[str, str]
    redis: Redis


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    await apps.register("lms", {"sms", "inbox", "email"})
    await apps.register("bursar", {"email"})
    await UserDirectory(redis).upsert(
        [User(user_id=p, tags=("year-2020",), bindings={"inbox": p}) for p in PEOPLE]
        + [User(user_id="t1", tags=("year-2021",), bindings={"inbox": "t1"})]
    )
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("li", "correct horse battery", grants=["sender@lms"])
    await operators.create("zhao", "correct horse battery", grants=["analyst@lms"])
    await operators.create("qian", "correct horse battery", grants=["sender@bursar"])
    publisher, inbox = EventRecorder(), Inbox(redis)
    catalog = TemplateCatalog(ROOT / "templates")
    desk = CampaignDesk(CampaignStore(redis), inbox, redis, {"sms": SMS_PRICE, "inbox": 0.0}, catalog)
    deps = ApiDeps(
        apps=apps,
        inbox=inbox,
        publisher=publisher,
        redis=redis,
        templates=catalog,
        segments=UserDirectory(redis),
        access=Access(apps, operators),
        campaigns=desk,
        events_signatures_required=False,
    )
    api = create_api(deps)
    transport = httpx.ASGITransport(app=api, client=("192.0.2.9", 4000))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        tokens = [bearer(await operators.issue_token(name)) for name in ("li", "zhao", "qian")]
        yield Setup(client, publisher, inbox, *tokens, redis)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_sender_composes_sees_the_count_and_cost_and_submits_one_event(setup: Setup) -> None:
    estimated = await setup.client.post("/v1/campaigns/estimate", json=composition(), headers=setup.sender)
    assert estimated.status_code == 200, estimated.text
    # The SMS part (Chinese, 30-odd characters) is one segment: 4 people x (0.05 + 0).
    assert estimated.json() == {
        "recipients": 4,
        "exact": True,
        "counted": "tag year-2020",
        "channels": ["sms", "inbox"],
        "per_message": {"inbox": 0.0, "sms": SMS_PRICE},
        "sms_segments": 1,
        "cost": 0.2,
        "note": "",
    }

    created = await setup.client.post("/v1/campaigns", json=composition(), headers=setup.sender)
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["id"].startswith("lms.c") and campaign["state"] == "draft"
    assert (campaign["recipients"], campaign["estimate"]["cost"], campaign["created_by"]) == (
        4,
        0.2,
        "operator:li",
    )
    assert setup.publisher.events == []  # a draft sends nothing

    submitted = await setup.client.post(f"/v1/campaigns/{campaign['id']}/submit", headers=setup.sender)
    assert submitted.status_code == 202, submitted.text
    assert (submitted.json()["state"], submitted.json()["submitted_by"]) == ("running", "operator:li")
    [(key, value, lane)] = setup.publisher.events
    event = Event.model_validate_json(value)
    assert (key, lane) == (f"lms:campaign-{campaign['id']}", "bulk")
    assert (event.campaign, event.channels, event.submitted_by) == (
        campaign["id"],
        ["sms", "inbox"],
        "operator:li",
    )
    assert event.audience.tags == ["year-2020"]

    again = await setup.client.post(f"/v1/campaigns/{campaign['id']}/submit", headers=setup.sender)
    assert again.status_code == 409
    assert again.json()["detail"] == f"campaign '{campaign['id']}' is running, not a draft"
    assert len(setup.publisher.events) == 1

    listed = await setup.client.get("/v1/campaigns", headers=setup.analyst)
    assert [c["id"] for c in listed.json()] == [campaign["id"]]
    assert [a.action for a in setup.publisher.audits] == ["campaign.create", "campaign.submit"]
    submit = setup.publisher.audits[-1]
    assert (submit.actor, submit.target, submit.app, submit.source) == (
        "li",
        campaign["id"],
        "lms",
        "192.0.2.9",
    )
    assert isinstance(submit.before, dict) and submit.before["state"] == "draft"
    assert isinstance(submit.after, dict) and submit.after["state"] == "running"


async def test_counts_for_each_kind_of_target(setup: Setup) -> None:
    async def count(audience: dict[str, Any], **changes: Any) -> dict[str, Any]:
        body = composition(audience=audience, **changes)
        answer = await setup.client.post("/v1/campaigns/estimate", json=body, headers=setup.sender)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert (await count({"all": True}))["recipients"] == 5
    assert (await count({"user_ids": ["s1", "s1", "s2"]}))["recipients"] == 2
    two_tags = await count({"tags": ["year-2020", "year-2021"]})
    assert (two_tags["recipients"], two_tags["exact"]) == (5, False)
    addresses = [
        {"channel": "sms", "address": "+8613800000001"},
        {"channel": "sms", "address": "+8613800000001 "},
    ]
    assert (await count({"addresses": addresses}))["recipients"] == 1
    unknown = await count({"segment": "dormant"})
    assert (unknown["recipients"], unknown["cost"]) == (None, None)
    assert unknown["note"] == "recipients segment dormant: unknown: cost known when sent"
    await UserDirectory(setup.redis).save_segment("dormant", ["s1", "t1"])
    segment = await count({"segment": "dormant"})
    assert (segment["recipients"], segment["exact"]) == (2, True)
    assert segment["counted"] == "segment dormant, evaluated now"
    left_to_rules = await count({"all": True}, channels=None)
    assert left_to_rules["cost"] is None and set(left_to_rules["per_message"]) == {"sms", "inbox", "email"}


async def test_bad_compositions_are_refused_naming_the_field(setup: Setup) -> None:
    unknown = await setup.client.post(
        "/v1/campaigns", json=composition(template="nope"), headers=setup.sender
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "template"]
    missing = await setup.client.post("/v1/campaigns", json=composition(data={}), headers=setup.sender)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "data"]
    naive = composition(send_at="2026-12-01T08:00:00")
    answer = await setup.client.post("/v1/campaigns", json=naive, headers=setup.sender)
    assert answer.status_code == 422 and "timezone" in answer.text
    two = composition(audience={"all": True, "tags": ["x"]})
    assert (await setup.client.post("/v1/campaigns", json=two, headers=setup.sender)).status_code == 422
    extra = composition(colour="red")
    assert (await setup.client.post("/v1/campaigns", json=extra, headers=setup.sender)).status_code == 422
    assert setup.publisher.audits == []


async def test_permissions_are_checked_on_the_campaigns_app(setup: Setup) -> None:
    created = await setup.client.post("/v1/campaigns", json=composition(), headers=setup.sender)
    campaign_id = created.json()["id"]
    foreign = await setup.client.get(f"/v1/campaigns/{campaign_id}", headers=setup.outsider)
    assert foreign.status_code == 403
    assert foreign.json()["detail"] == "operator 'qian' lacks permission campaigns:read on app 'lms'"
    other_app = await setup.client.post("/v1/campaigns", json=composition(app="bursar"), headers=setup.sender)
    assert other_app.status_code == 403
    analyst = await setup.client.post(f"/v1/campaigns/{campaign_id}/submit", headers=setup.analyst)
    assert analyst.status_code == 403 and "campaigns:manage" in analyst.json()["detail"]
    assert (await setup.client.get(f"/v1/campaigns/{campaign_id}", headers=setup.analyst)).status_code == 200
    assert (await setup.client.get("/v1/campaigns", headers=setup.outsider)).json() == []
    missing = await setup.client.get("/v1/campaigns/lms.c000000000000", headers=setup.analyst)
    assert missing.status_code == 404 and missing.json()["detail"] == "no campaign 'lms.c000000000000'"
    # Not a campaign id at all: 404 before any permission is looked at, naming it.
    odd = await setup.client.get("/v1/campaigns/whatever", headers=setup.analyst)
    assert odd.status_code == 404 and odd.json()["detail"] == "'whatever' is not a campaign id"


async def test_a_cancelled_campaign_is_known_to_the_stages_and_cannot_be_cancelled_twice(
    setup: Setup, redis: Redis
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    created = await setup.client.post("/v1/campaigns", json=composition(send_at=later), headers=setup.sender)
    campaign_id = created.json()["id"]
    early = await setup.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=setup.sender)
    assert early.status_code == 409 and "is draft" in early.json()["detail"]
    submitted = await setup.client.post(f"/v1/campaigns/{campaign_id}/submit", headers=setup.sender)
    assert submitted.json()["state"] == "scheduled"

    cancelled = await setup.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=setup.sender)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["cancelled"]["by"] == "operator:li"
    found = await CancelledCampaigns(redis).among([("lms", campaign_id), ("lms", "another"), ("bursar", "")])
    assert list(found) == [("lms", campaign_id)]
    assert found["lms", campaign_id].reason.startswith("campaign cancelled by operator:li at ")
    twice = await setup.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=setup.sender)
    assert twice.status_code == 409
    audit = setup.publisher.audits[-1]
    assert (audit.action, audit.reason) == ("campaign.cancel", found["lms", campaign_id].reason)


async def test_recall_takes_the_campaigns_inbox_messages_back_and_says_so_per_message(setup: Setup) -> None:
    created = await setup.client.post("/v1/campaigns", json=composition(), headers=setup.sender)
    campaign_id = created.json()["id"]
    await setup.client.post(f"/v1/campaigns/{campaign_id}/submit", headers=setup.sender)
    for n, person in enumerate(PEOPLE):  # as send stores them
        await setup.inbox.add(person, message(f"m{n}", campaign_id))
    await setup.inbox.add("s0", message("kept", "another-campaign"))
    await setup.inbox.delete("s3", "m3")  # the person deleted it already: nothing to recall there

    recalled = await setup.client.post(f"/v1/campaigns/{campaign_id}/recall", headers=setup.sender)
    assert recalled.status_code == 200, recalled.text
    assert recalled.json() == {"campaign": campaign_id, "recalled": 3, "cancelled": True}
    assert [m.message_id for m in await setup.inbox.list("s0")] == ["kept"]
    assert [await setup.inbox.total(p) for p in PEOPLE[1:]] == [0, 0, 0]
    rows = sorted((r.user_id, r.status, r.campaign) for r in setup.publisher.receipts)
    assert rows == [(p, "recalled", campaign_id) for p in PEOPLE[:3]]
    assert all(r.reason.startswith("recalled by operator:li at ") for r in setup.publisher.receipts)
    assert [a.action for a in setup.publisher.audits][-2:] == ["campaign.cancel", "campaign.recall"]
    shown = await setup.client.get(f"/v1/campaigns/{campaign_id}", headers=setup.analyst)
    assert (shown.json()["state"], shown.json()["recalled"]) == ("cancelled", 3)
    # Again: nothing left to take back.
    again = await setup.client.post(f"/v1/campaigns/{campaign_id}/recall", headers=setup.sender)
    assert again.json() == {"campaign": campaign_id, "recalled": 0, "cancelled": False}


def message(message_id: str, campaign: str) -> InboxMessage:
    return InboxMessage(
        message_id=message_id,
        title="Linear Algebra at 10:00",
        body="B201",
        app="lms",
        event_id=f"campaign-{campaign}",
        template="course_reminder",
        category="notice",
        campaign=campaign,
        created_at=datetime.now(UTC),
    )


async def test_a_submit_the_broker_does_not_acknowledge_leaves_a_draft_to_submit_again(setup: Setup) -> None:
    created = await setup.client.post("/v1/campaigns", json=composition(), headers=setup.sender)
    campaign_id = created.json()["id"]
    setup.publisher.down = True
    refused = await setup.client.post(f"/v1/campaigns/{campaign_id}/submit", headers=setup.sender)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    shown = await setup.client.get(f"/v1/campaigns/{campaign_id}", headers=setup.analyst)
    assert (shown.json()["state"], shown.json()["submitted_by"]) == ("draft", None)
    setup.publisher.down = False
    again = await setup.client.post(f"/v1/campaigns/{campaign_id}/submit", headers=setup.sender)
    assert again.status_code == 202 and len(setup.publisher.events) == 1
