"""Consent endpoints on real Redis: unsubscribe, resubscribe, blacklist, a user's standing, as an operator
(who may reads and who may change: test_api_consent_access.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from state.consent import ConsentQuery
from tests.integration.test_api_support import Api, running_api


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    async with running_api(redis) as running:
        running.client.headers.update(await running.operator("root", "administrator"))
        yield running


def auth(api: Api) -> dict[str, str]:
    return {}  # the client carries the administrator's token


async def test_unsubscribe_resubscribe_and_standing(api: Api) -> None:
    created = await api.client.post(
        "/v1/consent/unsubscribes", json={"user_id": "s1", "category": "marketing"}, headers=auth(api)
    )
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "operator root"
    await api.client.post(
        "/v1/consent/unsubscribes",
        json={"user_id": "s1", "category": "notice", "channel": "sms", "source": "preference centre"},
        headers=auth(api),
    )
    standing = (await api.client.get("/v1/consent/s1", headers=auth(api))).json()
    assert [(u["category"], u["channel"], u["source"]) for u in standing["unsubscriptions"]] == [
        ("marketing", None, "operator root"), ("notice", "sms", "operator root (preference centre)"),
    ]
    assert standing["blacklisted"] is None
    removed = await api.client.delete(
        "/v1/consent/unsubscribes", params={"user_id": "s1", "category": "marketing"}, headers=auth(api)
    )
    assert removed.json() == {"removed": 1}
    assert await api.consent.refusals([ConsentQuery("s1", "email", "marketing")]) == [None]


async def test_blacklisting_an_address_cleans_it_first(api: Api) -> None:
    listed = await api.client.post(
        "/v1/consent/blacklist",
        json={"subject": "138 0013 8000", "channel": "sms", "reason": "complaint #88"},
        headers=auth(api),
    )
    assert listed.status_code == 201, listed.text
    assert listed.json()["subject"] == "+8613800138000"
    [refusal] = await api.consent.refusals([ConsentQuery("s9", "sms", "notice", "+8613800138000")])
    assert refusal == "blacklisted: complaint #88 (by operator root)"
    gone = await api.client.delete(
        "/v1/consent/blacklist", params={"subject": "+86 13800138000", "channel": "sms"}, headers=auth(api)
    )
    assert gone.status_code == 204
    again = await api.client.delete(
        "/v1/consent/blacklist", params={"subject": "+8613800138000", "channel": "sms"}, headers=auth(api)
    )
    assert again.status_code == 404 and "not blacklisted" in again.json()["detail"]


async def test_a_blacklisted_user_shows_in_their_standing(api: Api) -> None:
    body = {"subject": "s7", "reason": "left"}
    assert (await api.client.post("/v1/consent/blacklist", json=body, headers=auth(api))).status_code == 201
    standing = (await api.client.get("/v1/consent/s7", headers=auth(api))).json()
    assert standing["blacklisted"]["reason"] == "left (by operator root)"


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "code", "detail"),
    [
        ("POST", "/v1/consent/unsubscribes", {"user_id": "s1", "category": "spam"}, None, 422, "category"),
        ("POST", "/v1/consent/unsubscribes", {"user_id": "s1", "chanel": "sms"}, None, 422, "chanel"),
        ("POST", "/v1/consent/unsubscribes", {"user_id": "s 1"}, None, 422, "user_id"),
        ("POST", "/v1/consent/blacklist", {"subject": "12", "channel": "sms", "reason": "x"}, None, 422,
         "invalid phone number '12'"),
        ("POST", "/v1/consent/blacklist", {"subject": "a b@c", "reason": "x"}, None, 422, "not a user id"),
        ("POST", "/v1/consent/blacklist", {"subject": "s1"}, None, 422, "reason"),
        ("DELETE", "/v1/consent/unsubscribes", None, {"category": "notice"}, 422, "user_id"),
        ("GET", "/v1/consent/s%201", None, None, 422, "user_id"),
    ],
)
async def test_bad_calls_say_what_is_wrong(
    api: Api, method: str, path: str, body: object, params: dict[str, str] | None, code: int, detail: str
) -> None:
    answer = await api.client.request(method, path, json=body, params=params, headers=auth(api))
    assert answer.status_code == code, answer.text
    assert detail in answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/consent/s1"), ("POST", "/v1/consent/unsubscribes"), ("DELETE", "/v1/consent/blacklist")],
)
async def test_consent_needs_valid_credentials(api: Api, method: str, path: str) -> None:
    answer = await api.client.request(method, path, headers={"Authorization": "Bearer sbk_wrong"})
    assert answer.status_code == 401


async def test_a_wrong_method_names_every_method_of_the_path(api: Api) -> None:
    # Two routes serve /v1/consent/unsubscribes; Starlette alone named only the first one's.
    answer = await api.client.put("/v1/consent/unsubscribes", headers=auth(api))
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "DELETE, POST"


async def test_an_invalid_subject_is_a_422_list_naming_it(api: Api) -> None:
    answer = await api.client.post(
        "/v1/consent/blacklist", json={"subject": "a b@c", "reason": "x"}, headers=auth(api)
    )
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "subject"] and "not a user id" in error["msg"]
    gone = await api.client.delete("/v1/consent/blacklist", params={"subject": "a b@c"}, headers=auth(api))
    assert gone.status_code == 404 and "not a user id" in gone.json()["detail"]
