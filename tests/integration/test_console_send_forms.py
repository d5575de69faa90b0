"""The Send page's forms over the real API and Redis, without a browser: an uploaded list becomes the
composer's target, refusals come back next to their field or on the campaign's page in the API's words,
and what the page changes is stored and audited as the API's own routes do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis

from api import create_api
from api.console.csrf import SESSION_COOKIE, csrf_token
from api.server import build_deps
from settings import Settings
from state.apps import AppRegistry
from state.campaigns import CampaignStore
from state.operators import OperatorStore
from state.users import User, UserDirectory
from tests.integration.approvals_support import FAST_HASHER, PASSWORD

DATA = '{"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}'


@dataclass
class Console:
    client: httpx.AsyncClient
    csrf: str


@pytest.fixture
async def console(settings: Settings, redis: Redis) -> AsyncIterator[Console]:
    await AppRegistry(redis).register("lms", {"inbox", "sms"})
    await UserDirectory(redis).upsert([User(user_id="s1", tags=("class-2020",), bindings={"inbox": "s1"})])
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("li", PASSWORD, grants=["sender@lms"], locale="en")
    token = await operators.start_session("li")
    api = create_api(build_deps(settings, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test",
                          cookies={SESSION_COOKIE: token}) as client,
    ):
        yield Console(client, csrf_token(token))


def composed(**fields: str) -> dict[str, str]:
    return {"app": "lms", "name": "reminder", "target": "tags", "tags": "class-2020", "timing": "now",
            "priority": "normal", "category": "notice", "template": "course_reminder", "data": DATA} | fields


async def test_an_uploaded_list_becomes_the_target(console: Console, redis: Redis) -> None:
    csv = "phone\n13800138000\n13800138001\nnot a number\n"
    answer = await console.client.post(
        "/console/send/upload", data={"csrf": console.csrf, **composed(name="by list")},
        files={"file": ("class.csv", csv.encode(), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert 'value="by list"' in answer.text  # what was typed before the upload is kept
    assert 'id="target-upload" checked' in answer.text
    assert "class.csv · lms · 2 people" in answer.text and "selected" in answer.text
    refused = await console.client.post(
        "/console/send/upload", data={"csrf": console.csrf, **composed()},
        files={"file": ("empty.csv", b"", "text/csv")},
    )
    assert refused.status_code == 422 and 'id="error-file"' in refused.text


async def test_refusals_show_the_apis_words_where_they_belong(console: Console, redis: Redis) -> None:
    unknown = await console.client.post(
        "/console/send/new", data={"csrf": console.csrf, **composed(target="segment", segment="nobody")}
    )
    assert unknown.status_code == 422
    assert 'id="error-segment"' in unknown.text and "unknown segment &#39;nobody&#39;" in unknown.text
    assert await CampaignStore(redis).listing(None) == []
    # Sending checks the app's channels, as submitting through the API does: kept as a draft, refused.
    not_allowed = await console.client.post(
        "/console/send/new", data={"csrf": console.csrf, **composed(), "channels": "email", "action": "send"}
    )
    assert not_allowed.status_code == 403 and "not authorised for channel(s) email" in not_allowed.text
    [kept] = await CampaignStore(redis).listing(None)
    assert kept.state == "draft" and 'id="submit-campaign"' in not_allowed.text

    draft = await console.client.post("/console/send/new", data={"csrf": console.csrf, **composed()})
    assert draft.status_code == 303
    campaign_id = draft.headers["location"].rsplit("/", 1)[1]
    page = await console.client.get(draft.headers["location"])
    assert 'id="submit-campaign"' in page.text and 'id="cancel-campaign"' not in page.text
    cancelled = await console.client.post(f"/console/send/{campaign_id}/cancel", data={"csrf": console.csrf})
    assert cancelled.status_code == 409
    assert "only a scheduled or running campaign can be cancelled" in cancelled.text
    stored = await CampaignStore(redis).get(campaign_id)
    assert stored is not None and stored.id != kept.id
    assert stored is not None and stored.state == "draft" and stored.created_by == "operator:li"


async def test_the_live_preview_renders_each_channel_or_says_what_is_missing(console: Console) -> None:
    whole = await console.client.post(
        "/console/send/preview", data={"csrf": console.csrf, **composed(), "channels": "sms"}
    )
    assert whole.status_code == 200
    assert 'id="preview-sms"' in whole.text and 'id="preview-inbox"' in whole.text
    assert 'id="sms-segments"' in whole.text and 'id="estimate-recipients"' in whole.text
    no_data = {"csrf": console.csrf, **composed(data="{}")}
    missing = await console.client.post("/console/send/preview", data=no_data)
    assert "preview-sms" not in missing.text
    assert missing.text.count("needs variable(s) course, room, starts_at") == 1
    assert "Template variables (JSON)" in missing.text  # the field named by its label
