"""The uploads API on real Redis: operators upload CSV (UTF-8, GBK) and XLSX lists for their apps, read
the counts and every row error (masked), remove them; every change is an audit record; a file over the
limit is 413, one that cannot be read 422 naming why."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from argon2 import PasswordHasher
from openpyxl import Workbook
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from api.deps import BodyLimits, UploadSettings
from channels.templates import TemplateCatalog
from settings import ROOT
from state.apps import AppRegistry
from state.inbox import Inbox
from state.operators import OperatorStore
from state.uploads import UploadStore
from state.users import User, UserDirectory
from tests.integration.test_api_support import RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
LIMIT = 64 * 1024
PHONES = "姓名,手机号\n王,13800138000\n李,139 0013 9000\n李,+86 139-0013-9000\n赵,10086\n"


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: RecordingPublisher
    owner: dict[str, str]
    bursar: dict[str, str]
    app_key: dict[str, str]


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    key = await apps.register("lms", {"sms", "email"})
    await apps.register("bursar", {"email"})
    await UserDirectory(redis).upsert([User(user_id="s1", bindings={"sms": "+8613800138000"})])
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("wang", "correct horse battery", grants=["app_owner@lms"])
    await operators.create("qian", "correct horse battery", grants=["app_owner@bursar"])
    publisher = RecordingPublisher()
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=UserDirectory(redis),
        access=Access(apps, operators), limits=BodyLimits(upload_bytes=LIMIT),
        uploads=UploadSettings(UploadStore(redis), errors_shown=1),
    )
    api = create_api(deps)
    transport = httpx.ASGITransport(app=api, client=("192.0.2.7", 4000))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        yield Setup(
            client, publisher, bearer(await operators.issue_token("wang")),
            bearer(await operators.issue_token("qian")), bearer(key),
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(setup: Setup, content: bytes, name: str = "list.csv", **form: str) -> httpx.Response:
    return await setup.client.post(
        "/v1/uploads", data={"app": "lms", **form}, files={"file": (name, content, "text/csv")},
        headers=setup.owner,
    )


async def test_an_operator_uploads_a_phone_list_reads_its_errors_and_removes_it(setup: Setup) -> None:
    created = await upload(setup, PHONES.encode())
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in ("app", "kind", "format", "encoding", "rows", "valid", "invalid",
                                 "duplicates", "known_people", "raw_addresses", "recipients")} == {
        "app": "lms", "kind": "phone", "format": "csv", "encoding": "utf-8", "rows": 4, "valid": 3,
        "invalid": 1, "duplicates": 1, "known_people": 1, "raw_addresses": 1, "recipients": 2,
    }
    [error] = body["errors"]  # errors_shown=1
    assert (error["row"], error["column"], error["value"]) == (5, "手机号", "1****")
    assert "10086" not in created.text
    upload_id = body["id"]
    errors = await setup.client.get(body["errors_url"], headers=setup.owner)
    assert [e["row"] for e in errors.json()] == [5]

    listed = await setup.client.get("/v1/uploads", headers=setup.owner)
    assert [u["id"] for u in listed.json()] == [upload_id]
    shown = await setup.client.get(f"/v1/uploads/{upload_id}", headers=setup.owner)
    assert shown.json()["expires_at"] == body["expires_at"]

    removed = await setup.client.delete(f"/v1/uploads/{upload_id}", headers=setup.owner)
    assert removed.status_code == 204
    gone = await setup.client.get(f"/v1/uploads/{upload_id}", headers=setup.owner)
    assert gone.status_code == 404 and "was removed by wang" in gone.text
    assert [(a.action, a.actor, a.target, a.app) for a in setup.publisher.audits] == [
        ("upload.add", "wang", upload_id, "lms"), ("upload.remove", "wang", upload_id, "lms"),
    ]


async def test_gbk_csv_and_xlsx_lists_are_read(setup: Setup) -> None:
    gbk = await upload(setup, "邮箱\nzhang@uni.example\nli@uni.example\n".encode("gbk"), "gbk.csv")
    assert gbk.status_code == 201, gbk.text
    got = gbk.json()
    assert (got["encoding"], got["kind"], got["raw_addresses"]) == ("gbk/gb18030", "email", 2)

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["user_id"], ["s1"], ["nobody"], ["s1"]):
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    xlsx = await upload(setup, buffer.getvalue(), "people.xlsx")
    assert xlsx.status_code == 201, xlsx.text
    body = xlsx.json()
    assert (body["format"], body["known_people"], body["duplicates"], body["invalid"]) == ("xlsx", 1, 1, 1)
    assert body["errors"] == [{"row": 3, "column": "user_id", "value": "nobody", "reason": "unknown user"}]


async def test_bad_uploads_are_refused_with_the_field_and_reason(setup: Setup) -> None:
    too_large = await upload(setup, b"phone\n" + b"13800138000\n" * (LIMIT // 12 + 1))
    assert too_large.status_code == 413 and str(LIMIT) in too_large.text
    unreadable = await upload(setup, b"phone\n\x81\x20\xff\xfe\n")
    assert unreadable.status_code == 422
    assert "neither UTF-8 nor GBK/GB18030" in unreadable.text and '"file"' in unreadable.text
    no_kind = await upload(setup, b"13800138000\n")
    assert no_kind.status_code == 422 and "give kind" in no_kind.text
    bad_ttl = await upload(setup, PHONES.encode(), ttl_hours="721")
    assert bad_ttl.status_code == 422 and "ttl_hours" in bad_ttl.text
    bad_kind = await upload(setup, PHONES.encode(), kind="fax")
    assert bad_kind.status_code == 422 and "kind" in bad_kind.text
    no_file = await setup.client.post("/v1/uploads", data={"app": "lms"}, headers=setup.owner)
    assert no_file.status_code == 422 and "a file is required" in no_file.text
    assert setup.publisher.audits == []


async def test_only_those_who_manage_the_app_see_or_use_its_uploads(setup: Setup) -> None:
    upload_id = (await upload(setup, PHONES.encode())).json()["id"]
    foreign = await setup.client.post(
        "/v1/uploads", data={"app": "lms"}, files={"file": ("l.csv", PHONES.encode(), "text/csv")},
        headers=setup.bursar,
    )
    assert foreign.status_code == 403 and "uploads:manage" in foreign.text
    assert (await setup.client.get(f"/v1/uploads/{upload_id}", headers=setup.bursar)).status_code == 403
    assert (await setup.client.get("/v1/uploads", headers=setup.bursar)).json() == []
    assert (await setup.client.get("/v1/uploads", headers=setup.app_key)).status_code == 403
    event = {
        "event_id": "n1", "app": "bursar", "type": "fee.due", "template": "campus_notice",
        "category": "notice",
        "audience": {"upload": upload_id}, "data": {"headline": "Fees", "body": "Due Friday."},
    }
    refused = await setup.client.post("/v1/events", json=event, headers=setup.bursar)
    assert refused.status_code == 422 and "belongs to another app" in refused.text, refused.text
    own_key_event = event | {"app": "lms", "audience": {"upload": "up-missing"}}
    missing = await setup.client.post("/v1/events", json=own_key_event, headers=setup.app_key)
    assert missing.status_code == 422 and "upload up-missing expired or unknown" in missing.text
