"""The people API on real Redis (no ClickHouse): operators create, read, change, list and remove people
with several addresses per channel, cleaned as at send; every change is an audit record with before and
after, and the address index follows every address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from channels.templates import TemplateCatalog
from records.topics import address_user_id
from settings import ROOT
from state.apps import AppRegistry
from state.inbox import Inbox
from state.operators import OperatorStore
from state.users import UserDirectory
from tests.integration.test_api_support import RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PHONE_TOKEN = "fcm:" + "phone" + "x" * 40
TABLET_TOKEN = "fcm:" + "tablet" + "y" * 40
LI_LEI = {
    "user_id": "s2020001", "name": "Li Lei", "tags": ["undergrad", "y2020"],
    "attributes": {"faculty": "physics", "year": 2020},
    "addresses": {
        "email": [
            {"address": "Li.Lei@UNI.Example", "label": "campus", "primary": True}, "lilei@mail.example"
        ],
        "sms": ["138 0013 8000"],
        "push": [{"address": PHONE_TOKEN, "label": "phone", "last_active": "2026-01-02T08:00:00Z"},
                 {"address": TABLET_TOKEN, "label": "tablet", "last_active": "2026-01-01T08:00:00Z"}],
    },
}


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: RecordingPublisher
    people: UserDirectory
    admin: dict[str, str]
    owner: dict[str, str]
    analyst: dict[str, str]


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    await apps.register("lms", {"email"})
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("root", "correct horse battery", grants=["administrator"])
    await operators.create("wang", "correct horse battery", grants=["app_owner@lms"])
    await operators.create("zhao", "correct horse battery", grants=["analyst"])
    publisher, people = RecordingPublisher(), UserDirectory(redis)
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=people,
        access=Access(apps, operators), people=people,
    )
    api = create_api(deps)
    transport = httpx.ASGITransport(app=api, client=("192.0.2.7", 4000))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        yield Setup(
            client, publisher, people,
            *[{"Authorization": f"Bearer {await operators.issue_token(name)}"}
              for name in ("root", "wang", "zhao")],
        )


async def test_a_person_is_created_with_cleaned_addresses_and_read_back(setup: Setup, redis: Redis) -> None:
    created = await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    assert created.status_code == 201, created.text
    person = created.json()
    emails = [a["address"] for a in person["addresses"]["email"]]
    assert emails == ["Li.Lei@uni.example", "lilei@mail.example"]
    assert person["addresses"]["sms"][0]["address"] == "+8613800138000"
    # Push defaults to the latest active device, email to the primary address.
    assert person["bindings"] == {"email": "Li.Lei@uni.example", "sms": "+8613800138000", "push": PHONE_TOKEN}
    assert person["recipients"]["push"] == [PHONE_TOKEN]
    assert person["attributes"] == {"faculty": "physics", "year": 2020}

    shown = await setup.client.get("/v1/people/s2020001", headers=setup.admin)
    assert shown.json() == person
    # Every address is indexed, the chosen ones and the others.
    others = [("email", "lilei@mail.example"), ("push", TABLET_TOKEN), ("sms", "+8613800138000")]
    for channel, address in others:
        assert await setup.people.owners(channel, address) == ["s2020001"]
    assert await redis.sismember("sb:tag:y2020", "s2020001")

    [audit] = setup.publisher.audits
    assert (audit.action, audit.target_kind, audit.target, audit.actor, audit.before) == (
        "person.create", "person", "s2020001", "root", None
    )
    # The audit log holds no address, only their pseudo ids.
    assert "lilei" not in audit.model_dump_json().lower() and "13800138000" not in audit.model_dump_json()
    assert audit.after is not None
    assert audit.after["addresses"]["sms"][0]["address"] == address_user_id("sms", "+8613800138000")

    taken = await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    assert taken.status_code == 409 and "exists" in taken.text


@pytest.mark.parametrize(
    ("addresses", "loc", "says"),
    [
        ({"sms": ["138 0013 8000", "12345"]}, ["body", "addresses", "sms", 1], "phone number"),
        ({"push": ["fcm:" + "a" * 30, "huawei:abc"]}, ["body", "addresses", "push", 1], "push address"),
        ({"email": ["a@uni.example", "not-an-email"]}, ["body", "addresses", "email", 1], "invalid email"),
        ({"email": ["a@uni.example", "a@UNI.example"]}, ["body", "addresses", "email", 1], "listed twice"),
        ({"inbox": ["someone-else"]}, ["body", "addresses", "inbox", 0], "the user id"),
    ],
)
async def test_a_bad_address_is_a_422_naming_the_channel_and_its_index(
    setup: Setup, addresses: dict[str, Any], loc: list[Any], says: str
) -> None:
    answer = await setup.client.post(
        "/v1/people", json={"user_id": "x1", "addresses": addresses}, headers=setup.admin
    )
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == loc and says in error["msg"]
    assert await setup.people.get("x1") is None and not setup.publisher.audits


async def test_a_partial_change_touches_only_what_it_names_and_the_index_follows(setup: Setup) -> None:
    await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    patch = {
        "name": "Li Lei (PhD)", "tags": ["postgrad"], "attributes": {"year": None, "degree": "phd"},
        "addresses": {"email": ["lei.li@uni.example"], "sms": []}, "address_choice": {"push": "all"},
    }
    changed = await setup.client.patch("/v1/people/s2020001", json=patch, headers=setup.admin)
    assert changed.status_code == 200, changed.text
    person = changed.json()
    assert (person["name"], person["tags"]) == ("Li Lei (PhD)", ["postgrad"])
    assert person["timezone"] == "Asia/Shanghai"
    assert person["attributes"] == {"faculty": "physics", "degree": "phd"}
    assert "sms" not in person["addresses"] and person["bindings"]["email"] == "lei.li@uni.example"
    # `all`: the push goes to both devices; the primary (none flagged: the first) stands for the channel.
    assert person["recipients"]["push"] == [PHONE_TOKEN, TABLET_TOKEN]
    assert await setup.people.owners("email", "Li.Lei@uni.example") == []
    assert await setup.people.owners("sms", "+8613800138000") == []
    assert await setup.people.owners("email", "lei.li@uni.example") == ["s2020001"]
    assert await setup.people.ids_with_tags(["y2020"]) == []
    _, audit = setup.publisher.audits
    assert audit.action == "person.update"
    assert audit.before is not None and audit.after is not None
    assert (audit.before["name"], audit.after["name"]) == ("Li Lei", "Li Lei (PhD)")

    bad = await setup.client.patch(
        "/v1/people/s2020001", json={"timezone": "Mars/Olympus"}, headers=setup.admin
    )
    assert bad.status_code == 422 and "unknown timezone" in bad.text
    unknown = await setup.client.patch("/v1/people/s2020001", json={"nickname": "x"}, headers=setup.admin)
    assert unknown.status_code == 422
    missing = await setup.client.patch("/v1/people/nobody", json={"name": "x"}, headers=setup.admin)
    assert missing.status_code == 404


async def test_a_new_device_becomes_the_latest_and_gets_the_push(setup: Setup) -> None:
    await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    new_token = "fcm:" + "watch" + "z" * 40
    old = [{"address": PHONE_TOKEN}, {"address": TABLET_TOKEN}]
    changed = await setup.client.patch(
        "/v1/people/s2020001", json={"addresses": {"push": [*old, new_token]}}, headers=setup.admin
    )
    # The two kept devices keep their last activity; the one added without any is active now.
    assert changed.json()["bindings"]["push"] == new_token
    assert [a["label"] for a in changed.json()["addresses"]["push"][:2]] == ["", ""]


async def test_listing_pages_by_cursor_and_filters_by_tag_and_prefix(setup: Setup) -> None:
    for n in range(7):
        tags = ["y2020"] if n % 2 else ["y2021"]
        body = {"user_id": f"s{n:03d}", "tags": tags, "addresses": {"email": [f"s{n}@uni.example"]}}
        assert (await setup.client.post("/v1/people", json=body, headers=setup.admin)).status_code == 201
    await setup.client.post("/v1/people", json={"user_id": "t001"}, headers=setup.admin)

    seen: list[str] = []
    after = ""
    while True:
        page = (await setup.client.get(f"/v1/people?limit=3&after={after}", headers=setup.admin)).json()
        seen += [p["user_id"] for p in page["people"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"s{n:03d}" for n in range(7)] + ["t001"]
    tagged = (await setup.client.get("/v1/people?tag=y2020", headers=setup.admin)).json()
    assert [p["user_id"] for p in tagged["people"]] == ["s001", "s003", "s005"]
    prefixed = (await setup.client.get("/v1/people?prefix=t", headers=setup.admin)).json()
    assert [p["user_id"] for p in prefixed["people"]] == ["t001"] and prefixed["next"] is None


async def test_remove_clears_the_directory_but_is_not_an_erasure(setup: Setup, redis: Redis) -> None:
    await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    removed = await setup.client.delete("/v1/people/s2020001", headers=setup.admin)
    assert removed.status_code == 204
    assert await setup.people.get("s2020001") is None
    assert await setup.people.owners("push", TABLET_TOKEN) == []
    assert not await redis.sismember("sb:users", "s2020001")
    assert not await redis.zscore("sb:ix:users", "s2020001")
    assert not await redis.sismember("sb:tag:undergrad", "s2020001")
    audit = setup.publisher.audits[-1]
    assert (audit.action, audit.after) == ("person.remove", None) and audit.before is not None
    again = await setup.client.delete("/v1/people/s2020001", headers=setup.admin)
    assert again.status_code == 404 and "no person" in again.text


async def test_reading_needs_people_read_over_every_app_and_writing_people_write(setup: Setup) -> None:
    await setup.client.post("/v1/people", json=LI_LEI, headers=setup.admin)
    # An app owner over one app holds people:read there only: a person is not one app's.
    scoped = await setup.client.get("/v1/people/s2020001", headers=setup.owner)
    assert scoped.status_code == 403 and "people:read" in scoped.text
    analyst = await setup.client.get("/v1/people", headers=setup.analyst)
    assert analyst.status_code == 403 and "people:read" in analyst.text
    write = await setup.client.patch("/v1/people/s2020001", json={"name": "x"}, headers=setup.owner)
    assert write.status_code == 403 and "people:write" in write.text
