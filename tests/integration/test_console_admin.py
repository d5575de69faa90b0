"""The admin pages in a real browser against the real API (Redis, the broker, the test run's chdb): apps
(register, a key shown once, rotate, disable), channel accounts (create, a write-only secret, switch on,
the apps × accounts matrix), people (search, profile, addresses, consent, inbox, history with its
why), segments (count and sample, errors by path) and uploads (counts and row errors, remove); each with
a role that does not see the entry and gets 403 at its address, and a secret set through the page
that never appears in any page's HTML afterwards nor in the audit records."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client
from playwright.async_api import Browser, Page
from redis.asyncio import Redis

from analytics.sink import ReceiptSink
from records.audit import AuditRecord
from records.topics import Receipt
from settings import Settings
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.inbox import Inbox, InboxMessage
from state.users import User, UserDirectory
from tests.integration.console_support import login, open_page, running_console, screenshot

SECRET = "s3cr3t-never-shown-" + uuid.uuid4().hex
EVERY_PAGE = (
    "/console/apps", "/console/channels", "/console/people", "/console/segments", "/console/uploads",
)


def changes(audits: list[AuditRecord]) -> list[AuditRecord]:
    """The records of changes, without the operators' logins."""
    return [record for record in audits if not record.action.startswith("operator.")]


async def csrf_of(page: Page) -> str:
    token = await page.get_attribute('meta[name="csrf-token"]', "content")
    assert token
    return token


async def submit(page: Page, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(selector)


async def test_apps_register_shows_the_key_once_rotates_and_disables(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        audits = console.tap.audits
        await console.operator("ada", "administrator")
        await console.operator("tess", "template_editor")  # apps:read, nothing else here
        registry = AppRegistry(redis)
        page = await open_page(browser, console)
        await login(page, "ada")
        await page.goto("/console/apps")

        await page.fill("#register input[name=name]", "bad name!")
        await page.check("#register input[value=inbox]")
        await submit(page, "#register button[type=submit]")
        assert "pattern" in (await page.inner_text("#error-name")).lower()
        assert await registry.get("bad name!") is None

        await page.fill("#register input[name=name]", "lms")
        await page.check("#register input[value=email]")
        await submit(page, "#register button[type=submit]")
        key = await page.inner_text("#app-key")
        app = await registry.authenticate(key)
        assert app is not None and app.name == "lms" and app.channels == {"inbox", "email"}
        await screenshot(page, "console-apps-key-once")
        await page.goto("/console/apps")
        assert key not in await page.content()  # shown once, never again

        await submit(page, "#app-lms form[action$='/key'] button")
        rotated = await page.inner_text("#app-key")
        assert rotated != key and await registry.authenticate(key) is None
        await page.goto("/console/apps")
        await submit(page, "#app-lms form[action$='/disable'] button")
        assert (await registry.get("lms")).enabled is False  # type: ignore[union-attr]
        assert "Disabled" in await page.inner_text("#app-lms .state")
        actions = [(r.action, r.actor, r.target) for r in changes(audits)]
        assert actions == [("app.register", "ada", "lms"), ("app.rotate_key", "ada", "lms"),
                           ("app.disable", "ada", "lms")]  # the API's own records, the refusal none
        assert not any(key in r.model_dump_json() or rotated in r.model_dump_json() for r in audits)

        # apps:read without apps:manage: the list, no actions; a forged post is refused on the server.
        reader = await open_page(browser, console)
        await login(reader, "tess")
        await reader.goto("/console/apps")
        assert await reader.locator("#app-lms").count() == 1
        assert await reader.locator("#register").count() == 0
        assert await reader.locator("#app-lms form").count() == 0
        forged = await reader.request.post("/console/apps/lms/enable", form={"csrf": await csrf_of(reader)})
        assert forged.status == 403 and "apps:manage" in await forged.text()
        assert (await registry.get("lms")).enabled is False  # type: ignore[union-attr]


async def test_channel_secret_set_through_the_page_is_never_shown_nor_audited_and_the_matrix_ticks(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        audits = console.tap.audits
        await console.operator("ada", "administrator")
        await console.operator("ana", "analyst")  # channels:read only
        await console.operator("tess", "template_editor")  # no channels:read
        registry = AppRegistry(redis)
        await registry.register("lms", {"wechat_oa"})
        accounts = console.deps.channel_accounts
        assert accounts is not None
        page = await open_page(browser, console)
        await login(page, "ada")
        await page.goto("/console/channels")

        await page.fill("#create input[name=code]", "oa-main")
        await page.fill("#create input[name=name]", "主服务号")
        await page.select_option("#create select[name=type]", "wechat_oa")
        await page.select_option("#create select[name=platform]", "wechat-oa")
        await page.fill("#create textarea[name=settings]", '{"appid": "wx0001", "secret": "x"}')
        await submit(page, "#create button[type=submit]")
        assert "settings.secret: a secret" in await page.inner_text("#error-form")  # the API's words
        await page.fill("#create textarea[name=settings]", '{"appid": "wx0001"}')
        await submit(page, "#create button[type=submit]")
        assert (await accounts.get("oa-main")).settings == {"appid": "wx0001"}

        row = "#account-oa-main"
        await page.select_option(f"{row} select[name=name]", "secret")
        await page.fill(f"{row} input[name=value]", SECRET)
        await submit(page, f"{row} .secret-form button")
        assert (await accounts.secrets_of("oa-main"))["secret"].get_secret_value() == SECRET
        assert "******" in await page.inner_text(f"{row} .secrets")
        assert await page.input_value(f"{row} input[name=value]") == ""
        await submit(page, f"{row} form[action$='/enable'] button")
        assert (await accounts.get("oa-main")).enabled

        box = "#grant-lms-oa-main"
        assert not await page.is_checked(box)
        async with page.expect_response(lambda r: "/apps/lms" in r.url and r.request.method == "POST"):
            await page.check(box)
        await page.wait_for_function(f"document.querySelector('{box}')?.checked === true")
        assert (await accounts.get("oa-main")).apps == {"lms"}
        await screenshot(page, "console-channels")
        async with page.expect_response(lambda r: "/apps/lms" in r.url and r.request.method == "POST"):
            await page.uncheck(box)
        await page.wait_for_function(f"document.querySelector('{box}')?.checked === false")
        assert (await accounts.get("oa-main")).apps == frozenset()

        for path in (*EVERY_PAGE, "/console/overview"):
            answer = await page.request.get(path)
            assert SECRET not in await answer.text(), path
        assert [r.action for r in changes(audits)] == [
            "channel.create", "channel.secret_set", "channel.enable",
            "channel.authorise", "channel.unauthorise",
        ]
        assert not any(SECRET in r.model_dump_json() for r in audits)

        reader = await open_page(browser, console)
        await login(reader, "ana")
        await reader.goto("/console/channels")
        assert await reader.locator("#create").count() == 0 and await reader.locator(box).count() == 0
        forged = await reader.request.post("/console/channels/oa-main/apps/lms",
                                           form={"csrf": await csrf_of(reader), "allowed": "yes"})
        assert forged.status == 403 and (await accounts.get("oa-main")).apps == frozenset()
        outsider = await open_page(browser, console)
        await login(outsider, "tess")
        assert await outsider.locator("#nav-channels").count() == 0
        refused = await outsider.goto("/console/channels")
        assert refused is not None and refused.status == 403
        assert "channels:read" in await outsider.inner_text("#forbidden")


def _receipt(app: str, minutes: float, message: str, status: str, **fields: object) -> Receipt:
    at = datetime.now(UTC) - timedelta(hours=1) + timedelta(minutes=minutes)
    return Receipt.model_validate({"event_time": at, "message_id": message, "event_id": f"ev-{message}",
                                   "app": app, "user_id": fields.pop("user_id"), "status": status, **fields})


async def test_people_segments_and_uploads_pages(
    settings: Settings, redis: Redis, clickhouse: Client, browser: Browser, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:8]
    person, app = f"stu-{unique}", f"lms{unique}"
    await UserDirectory(redis).upsert([User.model_validate({
        "user_id": person, "name": "Li Lei", "tags": ["freshman", f"t{unique}"],
        "attributes": {"grade": 1},
        "addresses": {"email": [{"address": "li.lei@uni.example", "primary": True},
                                {"address": "lei@home.example"}]},
    })])
    await ConsentStore(redis).unsubscribe(person, category="marketing", channel="email", source="portal")
    await Inbox(redis).add(person, InboxMessage(
        message_id=f"{app}-m1", title="Exam timetable", body="b", app=app, event_id="e1", template="t",
        category="notice", created_at=datetime.now(UTC)))
    ReceiptSink(clickhouse).write([
        _receipt(app, 0, f"{app}-m1", "decided", user_id=person, channel="email", rule_id="exam-notice"),
        _receipt(app, 1, f"{app}-m1", "failed", user_id=person, channel="email", provider="smtp",
                 reason="mailbox full"),
        _receipt(app, 2, f"{app}-m2", "suppressed", user_id=person, rule_id="marketing-opt-out",
                 reason="unsubscribed"),
    ])
    async with running_console(settings, redis) as console:
        audits = console.tap.audits
        await console.operator("ada", "administrator")
        await console.operator("ana", "analyst")  # segments:read, no people:read nor uploads:manage
        page = await open_page(browser, console)
        await login(page, "ada")

        await page.goto(f"/console/people?tag=t{unique}")
        assert await page.locator("#people tbody tr").count() == 1
        await submit(page, f"#people a[href='/console/people/{person}']")
        assert "Li Lei" in await page.inner_text("h1")
        addresses = await page.inner_text("#addresses")
        assert "li.lei@uni.example" in addresses and "lei@home.example" in addresses
        used = await page.inner_text("#addresses tr.used")
        assert "li.lei@uni.example" in used  # email sends to the primary
        assert "marketing" in await page.inner_text("#consent")
        assert "Exam timetable" in await page.inner_text("#inbox")
        summaries = await page.inner_text("#history")  # each message's last status and its why
        assert "failed: mailbox full" in summaries and "suppressed: unsubscribed" in summaries
        await page.click(f"#trace-{app}-m2 summary")
        assert "marketing-opt-out" in await page.inner_text(f"#trace-{app}-m2")  # the rule, opened
        await page.fill("#tags input[name=tags]", f"freshman t{unique} honours")
        await submit(page, "#tags button")
        assert "honours" in (await UserDirectory(redis).get(person)).tags  # type: ignore[union-attr]
        await submit(page, "#unsubscriptions button")
        assert (await ConsentStore(redis).consent(person)).unsubscriptions == ()
        await page.select_option("#unsubscribe select[name=category]", "marketing")
        await submit(page, "#unsubscribe button")
        standing = (await ConsentStore(redis).consent(person)).unsubscriptions
        assert [(u.category, u.channel, u.source) for u in standing] == [
            ("marketing", None, "operator ada (console)"),
        ]
        await screenshot(page, "console-person")
        assert [(r.action, r.target) for r in changes(audits)] == [
            ("person.update", person), ("consent.resubscribe", person), ("consent.unsubscribe", person),
        ]
        assert "li.lei@uni.example" not in changes(audits)[0].model_dump_json()  # the API's view: pseudo ids

        await page.goto("/console/segments/new")
        await page.fill("input[name=name]", f"fresh-{unique}")
        await page.fill("input[name=app]", "*")
        await page.fill("textarea[name=definition]", "all:\n  - tags: {all: [freshman]}\n"
                        "  - engaged: {status: red, within: 30 dys}\n")
        await submit(page, "#segment-form button")
        errors = await page.inner_text("#error-definition")
        assert "all[1].engaged.status" in errors and "all[1].engaged.within" in errors
        await page.fill("textarea[name=definition]", f"tags: {{all: [t{unique}]}}\n")
        await submit(page, "#segment-form button")
        assert page.url.endswith("/console/segments")
        await page.wait_for_selector(f"#segment-fresh-{unique} .count")  # loaded after the page
        assert await page.inner_text(f"#segment-fresh-{unique} .count") == "1"
        assert "Li Lei" in await page.inner_text(f"#segment-fresh-{unique}")
        await screenshot(page, "console-segments")

        listing = tmp_path / "list.csv"
        listing.write_text("phone\n13800138000\nnot-a-phone\n13800138000\n")
        await page.goto("/console/uploads")
        await page.fill("#upload input[name=app]", app)
        await page.set_input_files("#upload input[name=file]", str(listing))
        await submit(page, "#upload button[type=submit]")
        assert await page.inner_text("#count-rows") == "3"
        assert await page.inner_text("#count-invalid") == "1"
        assert await page.locator("#row-errors tbody tr").count() == 1
        await screenshot(page, "console-upload")
        await page.goto("/console/uploads")
        await submit(page, "#uploads form button")
        assert await page.locator("#uploads tbody tr[id^=upload-]").count() == 0
        assert [r.action for r in changes(audits)][-3:] == ["segment.put", "upload.add", "upload.remove"]

        reader = await open_page(browser, console)
        await login(reader, "ana")
        assert await reader.locator("#nav-people").count() == 0
        assert await reader.locator("#nav-uploads").count() == 0
        for path, permission in (("/console/people", "people:read"), ("/console/uploads", "uploads:manage"),
                                 ("/console/segments/new", "segments:manage")):
            refused = await reader.goto(path)
            assert refused is not None and refused.status == 403, path
            assert permission in await reader.inner_text("#forbidden")
        await reader.goto("/console/segments")
        assert await reader.locator(f"#segment-fresh-{unique}").count() == 1
        forged = await reader.request.post("/console/segments", form={
            "csrf": await csrf_of(reader), "name": f"fresh-{unique}", "app": "*",
            "definition": json.dumps({"bound": "email"})})
        assert forged.status == 403
