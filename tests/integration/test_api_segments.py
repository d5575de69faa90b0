"""The segments API on real Redis: operators define, list, show, preview and remove segments on the apps
their roles cover; a bad definition is a 422 naming each bad condition's path; every change is audited;
events naming a defined segment are accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from channels.templates import TemplateCatalog
from settings import ROOT
from state.apps import AppRegistry
from state.engagement import EngagementHistory
from state.inbox import Inbox
from state.operators import OperatorStore
from state.segments import SegmentStore
from state.users import User, UserDirectory
from tests.integration.test_api_support import RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
DORMANT_2020 = {
    "all": [
        {"tags": {"all": ["undergraduate", "class-2020"]}},
        {"not": {"engaged": {"status": "read", "within": "30 days"}}},
    ]
}
BODY = {"app": "lms", "description": "2020 undergraduates not reading", "definition": DORMANT_2020}


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: EventsPublisher
    owner: dict[str, str]
    analyst: dict[str, str]
    app_key: dict[str, str]


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    key = await apps.register("lms", {"inbox"})
    await apps.register("bursar", {"email"})
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("wang", "correct horse battery", grants=["app_owner@lms"])
    await operators.create("zhao", "correct horse battery", grants=["analyst@lms"])
    people = [
        User(user_id=f"u{i:02d}", name=f"学生{i}", tags=("undergraduate", "class-2020")) for i in range(6)
    ]
    await UserDirectory(redis).upsert([*people, User(user_id="x1", tags=("undergraduate",))])
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await EngagementHistory(redis).record_many([("u01", "read", yesterday), ("u04", "read", yesterday)])
    publisher = EventsPublisher()
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=SegmentStore(redis),
        access=Access(apps, operators),
    )
    api = create_api(deps)
    transport = httpx.ASGITransport(app=api, client=("192.0.2.7", 4000))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        yield Setup(
            client, publisher,
            bearer(await operators.issue_token("wang")), bearer(await operators.issue_token("zhao")),
            bearer(key),
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_owner_defines_a_segment_previews_it_and_removes_it(setup: Setup) -> None:
    created = await setup.client.put("/v1/segments/dormant-2020", json=BODY, headers=setup.owner)
    assert created.status_code == 200, created.text
    segment = created.json()
    assert (segment["name"], segment["app"], segment["definition"]) == ("dormant-2020", "lms", DORMANT_2020)
    assert segment["created_by"] == segment["updated_by"] == "wang"

    preview = await setup.client.get("/v1/segments/dormant-2020/preview?sample=2", headers=setup.analyst)
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert (shown["count"], shown["scanned"], shown["index"]) == (4, 6, ["sb:tag:class-2020"])
    assert shown["sample"] == [{"user_id": "u00", "name": "学生0"}, {"user_id": "u02", "name": "学生2"}]
    assert shown["seconds"] >= 0

    listed = await setup.client.get("/v1/segments", headers=setup.analyst)
    assert [s["name"] for s in listed.json()] == ["dormant-2020"]
    assert (await setup.client.get("/v1/segments/dormant-2020", headers=setup.analyst)).json() == segment

    [audit] = setup.publisher.audits
    assert (audit.actor, audit.action, audit.target_kind, audit.target, audit.app) == (
        "wang", "segment.put", "segment", "dormant-2020", "lms"
    )
    assert audit.before is None and isinstance(audit.after, dict)

    changed = await setup.client.put(
        "/v1/segments/dormant-2020", json=BODY | {"description": "changed"}, headers=setup.owner
    )
    assert changed.json()["created_at"] == segment["created_at"]
    assert isinstance(setup.publisher.audits[-1].before, dict)

    removed = await setup.client.delete("/v1/segments/dormant-2020", headers=setup.owner)
    assert removed.status_code == 204
    assert (setup.publisher.audits[-1].action, setup.publisher.audits[-1].after) == ("segment.remove", None)
    gone = await setup.client.get("/v1/segments/dormant-2020/preview", headers=setup.owner)
    assert gone.status_code == 404 and gone.json() == {"detail": "no segment 'dormant-2020'"}


async def test_an_unsaved_definition_is_previewed_for_the_composer(setup: Setup) -> None:
    draft = {"app": "lms", "definition": {"tags": {"all": ["undergraduate"], "none": ["class-2020"]}}}
    answer = await setup.client.post("/v1/segments/preview", json=draft, headers=setup.analyst)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["count"], answer.json()["sample"]) == (1, [{"user_id": "x1", "name": ""}])
    assert setup.publisher.audits == []  # reading changes nothing


async def test_a_bad_definition_is_a_422_naming_each_bad_condition(setup: Setup) -> None:
    bad = {"all": [{"tags": {"all": ["a"]}}, {"not": {"engaged": {"status": "red", "within": "30 dys"}}},
                   {"attribute": "locle", "equals": "en"}]}
    answer = await setup.client.put("/v1/segments/bad", json=BODY | {"definition": bad}, headers=setup.owner)
    assert answer.status_code == 422
    problems = {error["loc"][-1]: error["msg"] for error in answer.json()["detail"]}
    assert set(problems) == {"all[1].not.engaged.status", "all[1].not.engaged.within", "all[2].attribute"}
    assert "did you mean 'locale'" in problems["all[2].attribute"]
    assert setup.publisher.audits == []


async def test_permissions_are_checked_on_the_segments_app(setup: Setup) -> None:
    other = await setup.client.put("/v1/segments/fees", json=BODY | {"app": "bursar"}, headers=setup.owner)
    assert other.status_code == 403
    assert other.json()["detail"] == "operator 'wang' lacks permission segments:manage on app 'bursar'"
    shared = await setup.client.put("/v1/segments/all-2020", json=BODY | {"app": "*"}, headers=setup.owner)
    assert shared.status_code == 403 and "on every app" in shared.json()["detail"]
    analyst = await setup.client.put("/v1/segments/x", json=BODY, headers=setup.analyst)
    assert analyst.status_code == 403 and "segments:manage" in analyst.json()["detail"]
    assert (await setup.client.get("/v1/segments", headers=setup.app_key)).status_code == 403
    assert (await setup.client.get("/v1/segments")).status_code == 401
    assert setup.publisher.audits == []


async def test_events_naming_a_defined_segment_are_accepted(setup: Setup, redis: Redis) -> None:
    event = {
        "event_id": "reunion", "app": "lms", "type": "campus.notice", "template": "campus_notice",
        "category": "notice", "audience": {"segment": "dormant-2020"},
        "data": {"headline": "Reunion", "body": "Come back."},
    }
    refused = await setup.client.post("/v1/events", json=event, headers=setup.app_key)
    assert refused.status_code == 422 and "dormant-2020" in refused.text
    await setup.client.put("/v1/segments/dormant-2020", json=BODY, headers=setup.owner)
    accepted = await setup.client.post("/v1/events", json=event, headers=setup.app_key)
    assert accepted.status_code == 202, accepted.text
    assert [key for key, _ in setup.publisher.events] == ["lms:reunion"]


@dataclass
class EventsPublisher(RecordingPublisher):
    """Keeps the events the API accepted, with the key they were published under."""

    events: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        self.events.append((key, value))
