"""The HTTP API with in-memory collaborators: auth, authorisation, validation, inbox receipts, health."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api import ApiDeps, PublishError, create_api
from records.topics import Receipt
from state.apps import App
from state.inbox import InboxMessage

LMS_KEY = "sbk_lms-secret-key"
CAMPUS_KEY = "sbk_campus-secret-key"
EVENT = {
    "event_id": "e-1", "app": "lms", "type": "course.reminder", "template": "course_reminder",
    "audience": {"user_ids": ["s1"]}, "category": "notice",
    "data": {"course": "Linear Algebra", "starts_at": "2026-11-23 08:00", "room": "A101"},
}


class FakeApps:
    def __init__(self) -> None:
        self.apps = {
            LMS_KEY: App(name="lms", channels=frozenset({"inbox", "email", "sms"})),
            CAMPUS_KEY: App(name="campus", channels=frozenset({"inbox"})),
        }

    async def authenticate(self, key: str) -> App | None:
        return self.apps.get(key)


class FakeInbox:
    def __init__(self) -> None:
        self.messages: dict[tuple[str, str], InboxMessage] = {}
        self.unread: set[tuple[str, str]] = set()

    def put(self, user_id: str, message: InboxMessage) -> None:
        self.messages[user_id, message.message_id] = message
        self.unread.add((user_id, message.message_id))

    async def list(self, user_id: str, limit: int = 20, offset: int = 0) -> list[InboxMessage]:
        mine = sorted((m for (u, _), m in self.messages.items() if u == user_id),
                      key=lambda m: m.created_at, reverse=True)
        return mine[offset:offset + limit]

    async def unread_count(self, user_id: str) -> int:
        return sum(1 for u, _ in self.unread if u == user_id)

    async def total(self, user_id: str) -> int:
        return sum(1 for u, _ in self.messages if u == user_id)

    async def mark_read(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]:
        message = self.messages.get((user_id, message_id))
        if message is None:
            return None, False
        first = (user_id, message_id) in self.unread
        self.unread.discard((user_id, message_id))
        return message, first

    async def mark_clicked(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]:
        message, _ = await self.mark_read(user_id, message_id)
        if message is None or message.clicked_at is not None:
            return message, False
        message = message.model_copy(update={"clicked_at": datetime.now(UTC)})
        self.messages[user_id, message_id] = message
        return message, True

    async def delete(self, user_id: str, message_id: str) -> bool:
        self.unread.discard((user_id, message_id))
        return self.messages.pop((user_id, message_id), None) is not None


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.receipts: list[Receipt] = []
        self.down = False
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def check(self) -> None:
        if self.down:
            raise PublishError("broker at 127.0.0.1:1 does not answer")

    async def publish_event(self, key: str, value: bytes) -> None:
        if self.down:
            raise PublishError("topic 'events' did not acknowledge the record")
        self.events.append((key, value))

    async def publish_receipt(self, receipt: Receipt) -> None:
        if self.down:
            raise PublishError("topic 'receipts' did not acknowledge the record")
        self.receipts.append(receipt)


class FakeRedis:
    def __init__(self) -> None:
        self.down = False

    async def ping(self) -> bool:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:16379")
        return True


@pytest.fixture
def inbox() -> FakeInbox:
    return FakeInbox()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def client(inbox: FakeInbox, publisher: FakePublisher, redis: FakeRedis) -> Iterator[TestClient]:
    deps = ApiDeps(apps=FakeApps(), inbox=inbox, publisher=publisher, redis=redis)
    with TestClient(create_api(deps)) as test_client:
        yield test_client


def auth(key: str = LMS_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_lifespan_starts_and_stops_the_publisher(inbox: FakeInbox, redis: FakeRedis) -> None:
    publisher = FakePublisher()
    with TestClient(create_api(ApiDeps(apps=FakeApps(), inbox=inbox, publisher=publisher, redis=redis))):
        assert publisher.started and not publisher.stopped
    assert publisher.stopped


def test_accepted_event_is_published_keyed_by_app_and_event_id(
    client: TestClient, publisher: FakePublisher
) -> None:
    answer = client.post("/v1/events", json=EVENT, headers=auth())
    assert answer.status_code == 202
    assert answer.json() == {"accepted": True, "event_id": "e-1", "app": "lms"}
    [(key, value)] = publisher.events
    assert key == "lms:e-1"
    assert json.loads(value)["data"] == EVENT["data"]


def test_x_api_key_header_works_too(client: TestClient, publisher: FakePublisher) -> None:
    assert client.post("/v1/events", json=EVENT, headers={"X-Api-Key": LMS_KEY}).status_code == 202
    assert len(publisher.events) == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sbk_wrong"}, {"X-Api-Key": "nope"}, {"Authorization": "Basic x"}],
)
def test_missing_or_bad_key_is_401_without_echoing_it(
    client: TestClient, publisher: FakePublisher, headers: dict[str, str]
) -> None:
    answer = client.post("/v1/events", json=EVENT, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in answer.json()["detail"]
    assert "sbk_wrong" not in answer.text and "nope" not in answer.text
    assert publisher.events == []


def test_event_for_another_app_is_403(client: TestClient, publisher: FakePublisher) -> None:
    answer = client.post("/v1/events", json=EVENT, headers=auth(CAMPUS_KEY))
    assert answer.status_code == 403
    assert "'campus'" in answer.json()["detail"] and "'lms'" in answer.json()["detail"]
    assert publisher.events == []


def test_unauthorised_channels_are_403_naming_them(client: TestClient, publisher: FakePublisher) -> None:
    body = {**EVENT, "channels": ["email", "wechat_oa", "push"]}
    answer = client.post("/v1/events", json=body, headers=auth())
    assert answer.status_code == 403
    assert "push, wechat_oa" in answer.json()["detail"]
    assert publisher.events == []


def test_authorised_explicit_channels_pass(client: TestClient) -> None:
    body = {**EVENT, "channels": ["email", "sms"]}
    assert client.post("/v1/events", json=body, headers=auth()).status_code == 202


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**EVENT, "category": "spam"}, ["body", "category"]),
        ({**EVENT, "audience": {"user_ids": ["s1"], "all": True}}, ["body", "audience"]),
        ({**EVENT, "colour": "red"}, ["body", "colour"]),
        ({k: v for k, v in EVENT.items() if k != "template"}, ["body", "template"]),
    ],
)
def test_bad_bodies_are_422_with_pydantic_errors(
    client: TestClient, publisher: FakePublisher, body: dict[str, object], loc: list[str]
) -> None:
    answer = client.post("/v1/events", json=body, headers=auth())
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [loc]
    assert publisher.events == []


def test_malformed_json_is_422(client: TestClient) -> None:
    answer = client.post(
        "/v1/events", content=b'{"event_id": ', headers={**auth(), "Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "json_invalid"


def test_unacknowledged_publish_is_503_not_202(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    answer = client.post("/v1/events", json=EVENT, headers=auth())
    assert answer.status_code == 503
    assert "not accepted" in answer.json()["detail"]


def test_batch_publishes_every_event(client: TestClient, publisher: FakePublisher) -> None:
    batch = [{**EVENT, "event_id": f"e-{n}"} for n in range(3)]
    answer = client.post("/v1/events:batch", json=batch, headers=auth())
    assert answer.status_code == 202
    assert answer.json() == {"accepted": True, "app": "lms", "count": 3, "event_ids": ["e-0", "e-1", "e-2"]}
    assert sorted(key for key, _ in publisher.events) == ["lms:e-0", "lms:e-1", "lms:e-2"]


def test_batch_is_refused_whole_when_one_event_is_not_authorised(
    client: TestClient, publisher: FakePublisher
) -> None:
    batch = [EVENT, {**EVENT, "event_id": "e-2", "channels": ["push"]}]
    answer = client.post("/v1/events:batch", json=batch, headers=auth())
    assert answer.status_code == 403
    assert answer.json()["detail"].startswith("events[1]: ")
    assert publisher.events == []


def test_batch_size_is_bounded(client: TestClient) -> None:
    assert client.post("/v1/events:batch", json=[], headers=auth()).status_code == 422
    too_many = [{**EVENT, "event_id": f"e-{n}"} for n in range(501)]
    answer = client.post("/v1/events:batch", json=too_many, headers=auth())
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "too_long"


def message(message_id: str, minute: int) -> InboxMessage:
    return InboxMessage(
        message_id=message_id, title=f"title {message_id}", body="body", app="lms",
        event_id=f"ev-{message_id}",
        template="course_reminder", category="notice", campaign="autumn", rule_id="r-notice",
        rule_version="v3", created_at=datetime(2026, 11, 23, 8, minute, tzinfo=UTC),
    )


def test_inbox_lists_newest_first_with_counts(client: TestClient, inbox: FakeInbox) -> None:
    for n in range(3):
        inbox.put("s1", message(f"m{n}", n))
    answer = client.get("/v1/inbox/s1?limit=2&offset=0", headers=auth(CAMPUS_KEY))
    assert answer.status_code == 200
    page = answer.json()
    assert (page["unread"], page["total"]) == (3, 3)
    assert [m["message_id"] for m in page["messages"]] == ["m2", "m1"]


def test_inbox_needs_a_key_and_sane_paging(client: TestClient) -> None:
    assert client.get("/v1/inbox/s1").status_code == 401
    assert client.get("/v1/inbox/s1?limit=0", headers=auth()).status_code == 422
    assert client.get("/v1/inbox/s1?limit=101", headers=auth()).status_code == 422
    assert client.get("/v1/inbox/s1?offset=-1", headers=auth()).status_code == 422


def test_first_read_publishes_one_receipt(
    client: TestClient, inbox: FakeInbox, publisher: FakePublisher
) -> None:
    inbox.put("s1", message("m1", 0))
    first = client.post("/v1/inbox/s1/m1/read", headers=auth())
    again = client.post("/v1/inbox/s1/m1/read", headers=auth())
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["first"], again.json()["first"]) == (True, False)
    [receipt] = publisher.receipts
    assert receipt.model_dump(exclude={"event_time"}) == Receipt(
        message_id="m1", event_id="ev-m1", app="lms", user_id="s1", channel="inbox", provider="inbox",
        status="read", template="course_reminder", campaign="autumn", rule_id="r-notice", rule_version="v3",
    ).model_dump(exclude={"event_time"})


def test_first_click_publishes_a_clicked_receipt(
    client: TestClient, inbox: FakeInbox, publisher: FakePublisher
) -> None:
    inbox.put("s1", message("m1", 0))
    assert client.post("/v1/inbox/s1/m1/click", headers=auth()).json()["first"] is True
    assert client.post("/v1/inbox/s1/m1/click", headers=auth()).json()["first"] is False
    assert [r.status for r in publisher.receipts] == ["clicked"]


def test_unknown_message_is_404(client: TestClient, publisher: FakePublisher) -> None:
    for verb, path in (("POST", "/v1/inbox/s1/nope/read"), ("POST", "/v1/inbox/s1/nope/click"),
                       ("DELETE", "/v1/inbox/s1/nope")):
        answer = client.request(verb, path, headers=auth())
        assert answer.status_code == 404
        assert "'nope'" in answer.json()["detail"]
    assert publisher.receipts == []


def test_delete_removes_the_message(client: TestClient, inbox: FakeInbox) -> None:
    inbox.put("s1", message("m1", 0))
    assert client.delete("/v1/inbox/s1/m1", headers=auth()).status_code == 204
    assert client.get("/v1/inbox/s1", headers=auth()).json() == {"unread": 0, "total": 0, "messages": []}


def test_healthz_ok_and_down(client: TestClient, redis: FakeRedis, publisher: FakePublisher) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "redis": "ok", "publisher": "ok"}
    redis.down = True
    publisher.down = True
    answer = client.get("/healthz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "down"
    assert "Error 111" in body["redis"] and "does not answer" in body["publisher"]


def test_openapi_describes_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Switchboard API" and spec["info"]["version"]
    assert {"/v1/events", "/v1/events:batch", "/v1/inbox/{user_id}", "/healthz"} <= set(spec["paths"])
    assert {t["name"] for t in spec["tags"]} == {"events", "inbox", "health"}
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_keys_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/events", json=EVENT, headers=auth())
    client.post("/v1/events", json=EVENT, headers={"X-Api-Key": "sbk_guess"})
    assert LMS_KEY not in caplog.text and "sbk_guess" not in caplog.text
