"""`POST /v1/conversions` with in-memory collaborators: the caller's app only, tokens verified and
resolved to message ids, 422 naming the field, one or a batch, 503 when the broker does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import create_api
from channels.links import LinkClaims, LinkSigner
from records.plan import DeliveryPlan
from records.topics import Dispatch, EventCore
from tests.unit.test_api import CAMPUS_KEY, FakeInbox, FakePublisher, FakeRedis, auth, deps_of

SIGNER = LinkSigner(SecretStr("unit-test-link-secret-0123456789"), "https://notify.uni.example.edu")
DISPATCH = Dispatch(
    message_id="5f1c0a9d2b7e4c3a8d6f0e1b", user_id="s1", channel="inbox", address="s1",
    event=EventCore(event_id="fee-2026-autumn", app="bursar", type="fee.due", template="fee_due",
                    category="notice"),
    rule_id="fees", rule_version="v3", plan=DeliveryPlan(),
)
CLICK = SIGNER.token("click", LinkClaims.of(DISPATCH, "https://pay.uni.example.edu/fees"))


def paid(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversion_id": "pay-0001", "app": "lms", "user_id": "s1", "type": "payment",
        "value": "1280.50", "currency": "CNY",
        # Relative to the real now: the API refuses times in the future.
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=3)).isoformat(),
    }
    return {**body, **change}


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher) -> Iterator[TestClient]:
    deps = replace(deps_of(FakeInbox(), publisher, FakeRedis()), links=SIGNER)
    with TestClient(create_api(deps)) as test_client:
        yield test_client


def test_one_conversion_is_published_as_given(client: TestClient, publisher: FakePublisher) -> None:
    answer = client.post("/v1/conversions", json=paid(attributes={"term": "autumn"}), headers=auth())
    assert answer.status_code == 202
    assert answer.json() == {"accepted": True, "app": "lms", "count": 1, "conversion_ids": ["pay-0001"]}
    [published] = publisher.conversions
    assert (published.user_id, published.value, published.currency) == ("s1", Decimal("1280.50"), "CNY")
    assert published.attributes == {"term": "autumn"}


def test_a_batch_is_published_whole(client: TestClient, publisher: FakePublisher) -> None:
    body = [paid(conversion_id=f"pay-{i}", user_id=f"s{i}") for i in range(3)]
    answer = client.post("/v1/conversions:batch", json=body, headers=auth())
    assert answer.status_code == 202
    assert answer.json()["conversion_ids"] == ["pay-0", "pay-1", "pay-2"]
    assert [c.user_id for c in publisher.conversions] == ["s0", "s1", "s2"]


def test_a_click_token_is_verified_and_published_as_its_message_id(
    client: TestClient, publisher: FakePublisher
) -> None:
    assert client.post("/v1/conversions", json=paid(token=CLICK), headers=auth()).status_code == 202
    [published] = publisher.conversions
    assert (published.message_id, published.token) == (DISPATCH.message_id, None)


@pytest.mark.parametrize(("body", "loc", "words"), [
    (paid(token=CLICK[:-2] + "AA"), ["body", "token"], "signature does not match"),
    (paid(token=SIGNER.token("open", LinkClaims.of(DISPATCH))), ["body", "token"], "not a click link"),
    (paid(token=CLICK, user_id="s2"), ["body", "token"], "sent to another user"),
    (paid(value="12.345"), ["body", "value"], "more decimals than CNY"),
    (paid(currency="RMB"), ["body", "currency"], "ISO 4217"),
    (paid(occurred_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), ["body", "occurred_at"],
     "future"),
    (paid(message_id="m-1", token=CLICK), ["body", "token"], "not both"),
])
def test_a_bad_conversion_is_422_naming_the_field(
    client: TestClient, publisher: FakePublisher, body: dict[str, Any], loc: list[str], words: str
) -> None:
    answer = client.post("/v1/conversions", json=body, headers=auth())
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == loc
    assert words in error["msg"]
    assert publisher.conversions == []


def test_a_batch_names_the_bad_conversion_by_index(client: TestClient, publisher: FakePublisher) -> None:
    body = [paid(), paid(conversion_id="pay-2", token=CLICK, user_id="s9")]
    answer = client.post("/v1/conversions:batch", json=body, headers=auth())
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", 1, "token"]
    assert publisher.conversions == []


def test_an_app_reports_its_own_conversions_only(client: TestClient, publisher: FakePublisher) -> None:
    answer = client.post("/v1/conversions", json=paid(), headers=auth(CAMPUS_KEY))
    assert answer.status_code == 403
    assert "belongs to app 'campus'" in answer.json()["detail"]
    assert client.post("/v1/conversions", json=paid(), headers={}).status_code == 401
    assert publisher.conversions == []


def test_without_a_link_secret_a_token_is_refused_but_message_id_works(publisher: FakePublisher) -> None:
    with TestClient(create_api(deps_of(FakeInbox(), publisher, FakeRedis()))) as client:
        answer = client.post("/v1/conversions", json=paid(token=CLICK), headers=auth())
        assert answer.status_code == 422
        assert "send message_id instead" in answer.json()["detail"][0]["msg"]
        assert client.post("/v1/conversions", json=paid(message_id="m-1"), headers=auth()).status_code == 202
    assert [c.message_id for c in publisher.conversions] == ["m-1"]


def test_a_broker_that_does_not_answer_is_503(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    answer = client.post("/v1/conversions", json=paid(), headers=auth())
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
