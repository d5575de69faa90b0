"""The HTTP API with in-memory collaborators: auth, authorisation, validation, inbox receipts, health."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from api import ApiDeps, PublishError, create_api
from api.access import Access
from api.deps import BodyLimits
from channels.templates import TemplateCatalog
from records.audit import AuditRecord
from records.conversions import Conversion
from records.signing import events_signing_key, signature_valid
from records.topics import MAX_DATA_DEPTH, Event, Receipt
from settings import ROOT, Settings
from state.apps import App
from state.inbox import InboxMessage
from state.user_tokens import UserTokenSigner

LMS_KEY = "sbk_lms-secret-key"
CAMPUS_KEY = "sbk_campus-secret-key"
SIGNER = UserTokenSigner(SecretStr("unit-test-user-token-key-0123456789abcdef"))


def s1_token() -> str:
    """An end-user token of s1, minted when used: one minted at import would expire before the unit
    tests run after a long integration run in the same session."""
    return SIGNER.mint("campus", "s1", 600)[0]


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

    async def get(self, name: str) -> App | None:
        return next((app for app in self.apps.values() if app.name == name), None)

    async def signing_key(self, name: str) -> str | None:
        return next((events_signing_key(k) for k, app in self.apps.items() if app.name == name), None)


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
        self.signatures: list[str] = []
        self.receipts: list[Receipt] = []
        self.audits: list[AuditRecord] = []
        self.conversions: list[Conversion] = []
        self.down = False
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def check(self) -> None:
        if self.down:
            raise PublishError("broker at 127.0.0.1:1 does not answer")

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        if self.down:
            raise PublishError("topic 'events' did not acknowledge the record")
        self.events.append((key, value))
        self.signatures.append(signature)

    async def publish_receipt(self, receipt: Receipt) -> None:
        if self.down:
            raise PublishError("topic 'receipts' did not acknowledge the record")
        self.receipts.append(receipt)

    async def publish_conversion(self, conversion: Conversion) -> None:
        if self.down:
            raise PublishError("topic 'conversions' did not acknowledge the record")
        self.conversions.append(conversion)

    async def publish_audit(self, record: AuditRecord) -> None:
        if self.down:
            raise PublishError("topic 'audit' did not acknowledge the record")
        self.audits.append(record)


class FakeSegments:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    async def has_segment(self, segment: str) -> bool:
        return segment in self.names


CATALOG = TemplateCatalog(ROOT / "templates")


def deps_of(
    inbox: FakeInbox, publisher: FakePublisher, redis: FakeRedis, limits: BodyLimits | None = None
) -> ApiDeps:
    """The API's deps with fakes, and the shipped templates (a folder: no service needed)."""
    return ApiDeps(
        apps=FakeApps(), inbox=inbox, publisher=publisher, redis=redis, templates=CATALOG,
        segments=FakeSegments("cs-year-1"), limits=limits or BodyLimits(),
        access=Access(FakeApps(), user_tokens=SIGNER),
    )


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
    deps = deps_of(inbox, publisher, redis)
    with TestClient(create_api(deps)) as test_client:
        yield test_client


def auth(key: str = LMS_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_lifespan_starts_and_stops_the_publisher(inbox: FakeInbox, redis: FakeRedis) -> None:
    publisher = FakePublisher()
    with TestClient(create_api(deps_of(inbox, publisher, redis))):
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
    answer = client.get("/v1/inbox/s1?limit=2&offset=0", headers=auth(s1_token()))
    assert answer.status_code == 200
    page = answer.json()
    assert (page["unread"], page["total"]) == (3, 3)
    assert [m["message_id"] for m in page["messages"]] == ["m2", "m1"]


def test_inbox_needs_its_users_token_and_sane_paging(client: TestClient) -> None:
    assert client.get("/v1/inbox/s1").status_code == 401
    # An app key, and another user's token, are refused: the inbox is its user's.
    assert client.get("/v1/inbox/s1", headers=auth(LMS_KEY)).status_code == 403
    assert client.post("/v1/inbox/s1/m1/read", headers=auth(LMS_KEY)).status_code == 403
    other = client.get("/v1/inbox/s1", headers=auth(SIGNER.mint("campus", "s2", 600)[0]))
    assert other.status_code == 403 and "own user" in other.json()["detail"]
    assert client.get("/v1/inbox/s1?limit=0", headers=auth(s1_token())).status_code == 422
    assert client.get("/v1/inbox/s1?limit=101", headers=auth(s1_token())).status_code == 422
    assert client.get("/v1/inbox/s1?offset=-1", headers=auth(s1_token())).status_code == 422


def test_first_read_publishes_one_receipt(
    client: TestClient, inbox: FakeInbox, publisher: FakePublisher
) -> None:
    inbox.put("s1", message("m1", 0))
    first = client.post("/v1/inbox/s1/m1/read", headers=auth(s1_token()))
    again = client.post("/v1/inbox/s1/m1/read", headers=auth(s1_token()))
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
    assert client.post("/v1/inbox/s1/m1/click", headers=auth(s1_token())).json()["first"] is True
    assert client.post("/v1/inbox/s1/m1/click", headers=auth(s1_token())).json()["first"] is False
    assert [r.status for r in publisher.receipts] == ["clicked"]


def test_unknown_message_is_404(client: TestClient, publisher: FakePublisher) -> None:
    for verb, path in (("POST", "/v1/inbox/s1/nope/read"), ("POST", "/v1/inbox/s1/nope/click"),
                       ("DELETE", "/v1/inbox/s1/nope")):
        answer = client.request(verb, path, headers=auth(s1_token()))
        assert answer.status_code == 404
        assert "'nope'" in answer.json()["detail"]
    assert publisher.receipts == []


def test_delete_removes_the_message(client: TestClient, inbox: FakeInbox) -> None:
    inbox.put("s1", message("m1", 0))
    assert client.delete("/v1/inbox/s1/m1", headers=auth(s1_token())).status_code == 204
    listed = client.get("/v1/inbox/s1", headers=auth(s1_token())).json()
    assert listed == {"unread": 0, "total": 0, "messages": []}


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
    assert {"/v1/events", "/v1/events:batch", "/v1/conversions", "/v1/inbox/{user_id}", "/healthz"} <= set(
        spec["paths"]
    )
    assert {t["name"] for t in spec["tags"]} == {"events", "conversions", "inbox", "health"}
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_keys_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/events", json=EVENT, headers=auth())
    client.post("/v1/events", json=EVENT, headers={"X-Api-Key": "sbk_guess"})
    assert LMS_KEY not in caplog.text and "sbk_guess" not in caplog.text


# Issue 8, defect 4: what ingest would dead-letter and the API can see is a 422 naming the field.
@pytest.mark.parametrize(
    ("change", "loc", "named"),
    [
        ({"template": "course_remindr"}, ["body", "template"], "'course_remindr'"),
        ({"data": {"course": "Linear Algebra", "room": "A101"}}, ["body", "data"], "starts_at"),
        ({"audience": {"segment": "cs-year-9"}}, ["body", "audience", "segment"], "'cs-year-9'"),
    ],
)
def test_events_ingest_would_dead_letter_are_422_naming_the_field(
    client: TestClient, publisher: FakePublisher, change: dict[str, object], loc: list[str], named: str
) -> None:
    answer = client.post("/v1/events", json={**EVENT, **change}, headers=auth())
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == loc and named in error["msg"]
    assert publisher.events == []


def test_a_known_segment_passes(client: TestClient, publisher: FakePublisher) -> None:
    answer = client.post("/v1/events", json={**EVENT, "audience": {"segment": "cs-year-1"}}, headers=auth())
    assert answer.status_code == 202, answer.text
    assert len(publisher.events) == 1


def test_a_batch_names_the_event_that_would_be_dead_lettered(
    client: TestClient, publisher: FakePublisher
) -> None:
    batch = [EVENT, {**EVENT, "event_id": "e-2", "template": "nope"}]
    answer = client.post("/v1/events:batch", json=batch, headers=auth())
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", 1, "template"]
    assert publisher.events == []


# Issue 8, defect 5 and section 2: every body has a limit, enforced while reading; 413 names it.
def test_a_10_mb_event_is_413_naming_the_limit(client: TestClient, publisher: FakePublisher) -> None:
    body = {**EVENT, "data": {**EVENT["data"], "blob": "x" * 10_000_000}}  # type: ignore[dict-item]
    answer = client.post("/v1/events", json=body, headers=auth())
    assert answer.status_code == 413
    assert answer.json()["limit_bytes"] == 262144 and "262144 bytes" in answer.json()["detail"]
    assert publisher.events == []


def test_a_chunked_body_without_length_is_cut_off_too(client: TestClient, publisher: FakePublisher) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(EVENT)[:-1].encode() + b', "pad": "'
        for _ in range(100):
            yield b"x" * 10_000
        yield b'"}'

    headers = {**auth(), "Content-Type": "application/json"}
    answer = client.post("/v1/events", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert answer.json()["limit_bytes"] == 262144
    assert publisher.events == []


def test_limits_come_from_settings_for_events_and_other_bodies(
    inbox: FakeInbox, publisher: FakePublisher, redis: FakeRedis
) -> None:
    limits = BodyLimits.of(Settings(max_event_bytes=2048, max_body_bytes=4096))
    with TestClient(create_api(deps_of(inbox, publisher, redis, limits=limits))) as small:
        padded = {**EVENT, "data": {**EVENT["data"], "note": "y" * 2000}}  # type: ignore[dict-item]
        one = small.post("/v1/events", json=padded, headers=auth())
        assert (one.status_code, one.json()["limit_bytes"]) == (413, 2048)
        # Each event of a batch keeps the event limit, inside the whole body's limit.
        batch = small.post("/v1/events:batch", json=[EVENT, {**padded, "event_id": "e-2"}], headers=auth())
        assert batch.status_code == 413 and "events[1]" in batch.json()["detail"]
        assert batch.json()["limit_bytes"] == 2048
        many = small.post("/v1/events:batch", json=[{**EVENT, "event_id": f"e-{n}"} for n in range(20)],
                          headers=auth())
        assert (many.status_code, many.json()["limit_bytes"]) == (413, 4096)
    assert publisher.events == []


# Issue 8, defect 10: the API and ingest validate with the same model and limits.
@pytest.mark.parametrize("levels", [200, 50])
def test_deeply_nested_data_is_refused_by_the_api_as_by_ingest(
    client: TestClient, publisher: FakePublisher, levels: int
) -> None:
    nested: object = "deep"
    for _ in range(levels):
        nested = {"level": nested}
    body = {**EVENT, "data": {**EVENT["data"], "tree": nested}}
    answer = client.post("/v1/events", json=body, headers=auth())
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "data"] and f"at most {MAX_DATA_DEPTH}" in error["msg"]
    # Ingest parses the record with the same model: refused there too (at 200 levels already by the
    # JSON parser's own limit, which MAX_DATA_DEPTH keeps the API well inside).
    with pytest.raises(ValidationError, match=f"at most {MAX_DATA_DEPTH}|recursion limit"):
        Event.model_validate_json(json.dumps(body))
    assert publisher.events == []


def test_data_at_the_depth_limit_passes_both(client: TestClient, publisher: FakePublisher) -> None:
    nested: object = "leaf"
    for _ in range(MAX_DATA_DEPTH - 1):
        nested = [nested]
    body = {**EVENT, "data": {**EVENT["data"], "tree": nested}}
    assert client.post("/v1/events", json=body, headers=auth()).status_code == 202
    [(_, record)] = publisher.events
    assert Event.model_validate_json(record).data["tree"] == nested


# Issue 8, defect 11: client errors are 4xx in the documented shape.
def test_an_undecodable_body_is_a_422_list_not_a_400(client: TestClient) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    answer = client.post("/v1/events", content=b'{"event_id": "\xff\xfe"}', headers=headers)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]


def test_a_wrong_method_is_405_naming_the_allowed_ones(client: TestClient) -> None:
    answer = client.put("/v1/events", json=EVENT, headers=auth())
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"


def test_a_number_is_not_a_send_time_nor_a_yes_to_everyone(client: TestClient) -> None:
    late = client.post("/v1/events", json={**EVENT, "send_at": 0}, headers=auth())
    everyone = client.post("/v1/events", json={**EVENT, "audience": {"all": 1}}, headers=auth())
    assert (late.status_code, everyone.status_code) == (422, 422)
    assert late.json()["detail"][0]["loc"] == ["body", "send_at"]
    assert everyone.json()["detail"][0]["loc"] == ["body", "audience", "all"]


def test_openapi_states_the_audience_rule_and_the_limits(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    audience = spec["components"]["schemas"]["Audience"]
    assert [branch["required"] for branch in audience["oneOf"]] == [
        ["user_ids"], ["tags"], ["segment"], ["all"], ["addresses"], ["upload"]
    ]
    submit = spec["paths"]["/v1/events"]["post"]
    assert {"413", "422"} <= set(submit["responses"]) and "262144 bytes" in submit["description"]


def test_the_api_signs_what_it_publishes_with_the_apps_signing_key(
    client: TestClient, publisher: FakePublisher
) -> None:
    assert client.post("/v1/events", json=EVENT, headers=auth()).status_code == 202
    [(_, value)] = publisher.events
    [signed] = publisher.signatures
    assert signature_valid(value, signed, events_signing_key(LMS_KEY))
    assert not signature_valid(value, signed, events_signing_key(CAMPUS_KEY))
