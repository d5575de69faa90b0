"""Who may read and change consent, opt-ins, the whitelist and test mode, on real Redis: a person through
their own end-user token, operators through their roles (audited), never an app key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from state.consent import DEFAULT_OPT_IN, ConsentQuery
from tests.integration.test_api_support import Api, running_api

MARKETING = {"user_id": "s1", "category": "marketing"}


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    async with running_api(redis, opt_in=DEFAULT_OPT_IN) as running:
        await running.operators.roles.put("people_manager", ["people:read", "people:manage"])
        yield running


async def test_a_person_manages_their_own_consent_with_their_token(api: Api) -> None:
    mine = api.user("s1")
    opted = await api.client.post(
        "/v1/consent/opt-ins", json={**MARKETING, "source": "portal preference centre",
                                     "evidence": "ticked 'Send me offers'"}, headers=mine,
    )
    assert opted.status_code == 201, opted.text
    assert await api.consent.refusals([ConsentQuery("s1", "email", "marketing")]) == [None]
    unsubscribed = await api.client.post(
        "/v1/consent/unsubscribes", json={"user_id": "s1", "channel": "sms"}, headers=mine
    )
    assert unsubscribed.json()["source"] == "user via app portal"
    standing = (await api.client.get("/v1/consent/s1", headers=mine)).json()
    assert [(o["category"], o["source"], o["evidence"]) for o in standing["opt_ins"]] == [
        ("marketing", "portal preference centre", "ticked 'Send me offers'")
    ]
    withdrawn = await api.client.delete(
        "/v1/consent/opt-ins", params={"user_id": "s1", "category": "marketing"}, headers=mine
    )
    assert [w["withdrawn_by"] for w in withdrawn.json()["withdrawn"]] == ["user via app portal"]
    assert await api.consent.refusals([ConsentQuery("s1", "email", "marketing")]) == [
        "no opt-in for marketing"
    ]
    resubscribed = await api.client.delete(
        "/v1/consent/unsubscribes", params={"user_id": "s1", "channel": "sms"}, headers=mine
    )
    assert resubscribed.json() == {"removed": 1}
    # A person's own choices are their consent, kept with its source: not an operator's action.
    assert api.publisher.audits == []


@pytest.mark.parametrize(
    ("method", "path", "body", "params"),
    [
        ("GET", "/v1/consent/s2", None, None),
        ("POST", "/v1/consent/unsubscribes", {"user_id": "s2"}, None),
        ("DELETE", "/v1/consent/unsubscribes", None, {"user_id": "s2"}),
        ("POST", "/v1/consent/opt-ins", {"user_id": "s2", "category": "marketing"}, None),
        ("DELETE", "/v1/consent/opt-ins", None, {"user_id": "s2", "category": "marketing"}),
        ("POST", "/v1/consent/blacklist", {"subject": "s1", "reason": "mine"}, None),
        ("DELETE", "/v1/consent/blacklist", None, {"subject": "s1"}),
        ("GET", "/v1/whitelist", None, None),
        ("POST", "/v1/whitelist", {"subject": "s1", "reason": "me"}, None),
        ("DELETE", "/v1/whitelist", None, {"subject": "s1"}),
        ("GET", "/v1/test-mode", None, None),
        ("PUT", "/v1/test-mode/portal", {"test_mode": True}, None),
    ],
)
async def test_another_persons_token_and_an_app_key_are_refused(
    api: Api, method: str, path: str, body: object, params: dict[str, str] | None
) -> None:
    await api.consent.unsubscribe("s2", source="signup")
    for headers in (api.user("s1"), {"Authorization": f"Bearer {api.key}"}):
        answer = await api.client.request(method, path, json=body, params=params, headers=headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert "lacks permission" in answer.json()["detail"] or "own user only" in answer.json()["detail"]
    assert (await api.consent.consent("s2")).unsubscriptions[0].source == "signup"
    assert await api.consent.whitelist.entries() == []


async def test_operators_read_with_people_read_and_change_with_people_manage_over_every_app(api: Api) -> None:
    await api.consent.unsubscribe("s1", category="notice", source="signup")
    analyst = await api.operator("ana", "analyst")  # no people:read
    owner = await api.operator("oli", "app_owner")  # people:read, not people:manage
    scoped = await api.operator("sam", "people_manager@portal")  # one app only: not a person's whole consent
    manager = await api.operator("mia", "people_manager")
    assert (await api.client.get("/v1/consent/s1", headers=analyst)).status_code == 403
    assert (await api.client.get("/v1/consent/s1", headers=owner)).status_code == 200
    assert (await api.client.post("/v1/consent/opt-ins", json=MARKETING, headers=owner)).status_code == 403
    refused = await api.client.post("/v1/consent/opt-ins", json=MARKETING, headers=scoped)
    assert refused.status_code == 403 and "on every app" in refused.json()["detail"]
    opted = await api.client.post(
        "/v1/consent/opt-ins", json={**MARKETING, "source": "paper form", "evidence": "form #4411"},
        headers=manager,
    )
    assert opted.status_code == 201 and opted.json()["source"] == "operator mia (paper form)"
    [record] = api.publisher.audits
    assert (record.actor, record.actor_kind, record.action, record.target_kind, record.target) == (
        "mia", "operator", "consent.opt_in", "user", "s1"
    )
    assert record.before["opt_ins"] == []  # type: ignore[index,call-overload]
    assert [o["source"] for o in record.after["opt_ins"]] == ["operator mia (paper form)"]  # type: ignore[index,union-attr]
    await api.client.delete(
        "/v1/consent/opt-ins", params={"user_id": "s1", "category": "marketing"}, headers=manager
    )
    assert [a.action for a in api.publisher.audits] == ["consent.opt_in", "consent.withdraw"]
    assert api.publisher.audits[1].after["opt_ins"] == []  # type: ignore[index,call-overload]


async def test_the_blacklist_and_whitelist_are_operators_and_audited(api: Api) -> None:
    manager = await api.operator("mia", "people_manager")
    listed = await api.client.post(
        "/v1/whitelist", json={"subject": " qa@Example.ORG", "channel": "email", "reason": "QA mailbox"},
        headers=manager,
    )
    assert listed.status_code == 201, listed.text
    assert listed.json()["subject"] == "qa@example.org"
    entries = (await api.client.get("/v1/whitelist", headers=manager)).json()
    assert [(e["subject"], e["reason"]) for e in entries] == [
        ("qa@example.org", "QA mailbox (by operator mia)")
    ]
    bad = await api.client.post("/v1/whitelist", json={"subject": "a b", "reason": "x"}, headers=manager)
    assert bad.status_code == 422 and "not a user id" in bad.text
    gone = await api.client.delete(
        "/v1/whitelist", params={"subject": "qa@example.org", "channel": "email"}, headers=manager
    )
    assert gone.status_code == 204
    again = await api.client.delete("/v1/whitelist", params={"subject": "s9"}, headers=manager)
    assert again.status_code == 404 and "not whitelisted" in again.json()["detail"]
    await api.client.post("/v1/consent/blacklist", json={"subject": "s3", "reason": "spam"}, headers=manager)
    actions = [(a.action, a.target, a.before is None, a.after is None) for a in api.publisher.audits]
    assert actions == [
        ("whitelist.add", "qa@example.org", True, False),
        ("whitelist.remove", "qa@example.org", False, True),
        ("consent.blacklist", "s3", True, False),
    ]


async def test_test_mode_is_switched_per_app_by_who_manages_its_people(api: Api) -> None:
    scoped = await api.operator("sam", "people_manager@portal")
    switched = await api.client.put("/v1/test-mode/portal", json={"test_mode": True}, headers=scoped)
    assert switched.status_code == 200, switched.text
    assert switched.json()["test_mode"] is True and switched.json()["since"]["by"] == "operator sam"
    other = await api.client.put("/v1/test-mode/bursar", json={"test_mode": True}, headers=scoped)
    assert other.status_code == 403 and "'bursar'" in other.json()["detail"]
    await api.consent.whitelist.set_test_mode("bursar", True, by="operator root")
    listed = (await api.client.get("/v1/test-mode", headers=scoped)).json()
    assert listed["everywhere"] is False
    assert [m["app"] for m in listed["apps"]] == ["portal"]  # not bursar: sam reads no one of it
    assert await api.consent.refusals([ConsentQuery("s1", "inbox", "notice", "s1", "portal")]) == [
        "test mode: not whitelisted"
    ]
    [record] = api.publisher.audits
    assert (record.action, record.app, record.before, record.after["by"]) == (  # type: ignore[index,call-overload]
        "test_mode.set", "portal", None, "operator sam"
    )
    off = await api.client.put("/v1/test-mode/portal", json={"test_mode": False}, headers=scoped)
    assert off.json()["test_mode"] is False
    bad = await api.client.put("/v1/test-mode/portal", json={"test_mode": "yes please"}, headers=scoped)
    assert bad.status_code == 422 and "test_mode" in bad.text
