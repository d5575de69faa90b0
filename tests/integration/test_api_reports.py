"""`GET /v1/reports/funnel` and `GET /v1/messages/{id}/trace` on real Redis (app keys, pending state) and
the test run's chdb, injected as the reader: an app sees its own messages only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from analytics.sink import ReceiptSink
from api import ApiDeps, create_api
from api.analytics_reader import LazyReader
from api.deps import Analytics
from api.trace import Tracer
from channels.templates import TemplateCatalog
from records.topics import Delivery, EventCore
from settings import ROOT
from state.apps import AppRegistry
from state.inbox import Inbox
from state.schedule import DeliverySchedule
from state.users import UserDirectory
from tests.integration.test_api_support import RecordingPublisher
from tests.integration.test_reports import campaign


@dataclass
class Apps:
    client: httpx.AsyncClient
    mine: str
    theirs: str
    key: str
    opened: list[int]


@pytest.fixture
async def api(redis: Redis, clickhouse: Client) -> AsyncIterator[Apps]:
    unique = uuid.uuid4().hex[:8]
    mine, theirs = f"lms_{unique}", f"bursar_{unique}"
    registry = AppRegistry(redis)
    key = await registry.register(mine, {"sms", "email"}, "")
    await registry.register(theirs, {"sms"}, "")
    ReceiptSink(clickhouse).write(campaign(mine) + campaign(theirs))
    opened: list[int] = []

    def open_reader() -> Client:
        opened.append(1)
        return clickhouse

    reader = LazyReader(open_reader)
    deps = ApiDeps(
        apps=registry,
        inbox=Inbox(redis),
        publisher=RecordingPublisher(),
        redis=redis,
        templates=TemplateCatalog(ROOT / "templates"),
        segments=UserDirectory(redis),
        analytics=Analytics(reader, Tracer(reader, redis)),
    )
    app = create_api(deps)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        assert opened == []  # not opened at start-up
        yield Apps(client, mine, theirs, key, opened)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_funnel_is_the_calling_apps_own(api: Apps) -> None:
    answer = await api.client.get(
        "/v1/reports/funnel", params={"by": "channel", "since": "3d"}, headers=bearer(api.key)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["app"] == api.mine and body["by"] == ["channel"]
    sms = next(row for row in body["rows"] if row["channel"] == "sms")
    # Two apps wrote the same campaign: only the caller's two SMS messages count.
    assert (sms["decided"], sms["sent"], sms["converted"], sms["cost"]) == (2, 2, 1, "0.095")
    assert api.opened == [1]

    hourly = await api.client.get(
        "/v1/reports/funnel", params={"interval": "hour", "since": "3d"}, headers=bearer(api.key)
    )
    assert sum(row["decided"] for row in hourly.json()["rows"]) == 5
    assert all(row["bucket"].endswith(":00:00+00:00") for row in hourly.json()["rows"])


@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"by": "chanel"}, "by", "did you mean 'channel'"),
        ({"since": "yesterday"}, "since", "is not a time"),
        ({"until": "2001-01-01"}, "until", "period is empty"),
        ({"interval": "week"}, "interval", "choose day or hour"),
    ],
)
async def test_bad_parameters_are_422_naming_them(
    api: Apps, params: dict[str, str], parameter: str, words: str
) -> None:
    answer = await api.client.get("/v1/reports/funnel", params=params, headers=bearer(api.key))
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", parameter] and words in error["msg"]


async def test_another_apps_report_or_message_is_refused(api: Apps) -> None:
    other = await api.client.get("/v1/reports/funnel", params={"app": api.theirs}, headers=bearer(api.key))
    assert other.status_code == 403 and api.theirs in other.json()["detail"]
    assert (await api.client.get("/v1/reports/funnel")).status_code == 401
    # Their message and a message of nobody get the same 404.
    for message in (f"{api.theirs}-m1", "no-such-message"):
        answer = await api.client.get(f"/v1/messages/{message}/trace", headers=bearer(api.key))
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == f"no message {message!r} of app {api.mine!r}"


async def test_trace_of_own_message_with_pending_state(api: Apps, redis: Redis) -> None:
    answer = await api.client.get(f"/v1/messages/{api.mine}-m2/trace", headers=bearer(api.key))
    assert answer.status_code == 200, answer.text
    trace = answer.json()
    assert trace["app"] == api.mine and trace["user_id"] == "u1"
    steps = [(t["status"], t["provider"], t["reason"]) for t in trace["transitions"]]
    assert steps == [
        ("decided", "", ""), ("failed", "aliyun", "quota"), ("sent", "tencent", ""),
        ("delivered", "tencent", ""), ("read", "", ""),
    ]  # fmt: skip
    assert trace["pending"] == {"scheduled": [], "parked": [], "fallback": None}

    # A delivery waiting for its send_at: Redis alone knows it yet.
    event = EventCore(event_id="later", app=api.mine, type="t", template="t", category="notice")
    due = datetime.now(UTC) + timedelta(hours=3)
    await DeliverySchedule(redis).add(
        Delivery(message_id=f"{api.mine}-later", user_id="u1", event=event), due
    )
    waiting = (await api.client.get(f"/v1/messages/{api.mine}-later/trace", headers=bearer(api.key))).json()
    assert waiting["transitions"] == [] and len(waiting["pending"]["scheduled"]) == 1
    assert waiting["pending"]["scheduled"][0]["claimed"] is False
