"""The console's Audit log and Dead letters in a browser against the real API, broker and ClickHouse:
an auditor filters and pages the log; an app owner lists and inspects their app's letters (payload
masked, the reading audited), replays one (refused as the API refuses: still invalid, masked values;
then published), and cannot reach another app's letter; roles without the permission see no entry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client
from playwright.async_api import Browser, Page
from redis.asyncio import Redis

from analytics.audit_log import AuditLog
from api.publisher import bootstrap_servers
from processors.dead_letters import dead_letter
from records.audit import AuditRecord
from settings import Settings
from state.apps import AppRegistry
from tests.integration.console_support import login, open_page, running_console, screenshot


async def submit(page: Page, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(selector)


async def test_an_auditor_filters_and_pages_the_log(
    settings: Settings, redis: Redis, clickhouse: Client, browser: Browser
) -> None:
    actor = f"clerk-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    AuditLog(clickhouse).write([
        AuditRecord(at=start + timedelta(seconds=n), actor=actor, actor_kind="operator", source="10.0.0.7",
                    action="app.rotate_key" if n % 2 else "role.grant", target=f"t{n}", app="campus")
        for n in range(60)
    ])
    async with running_console(settings, redis, clickhouse=clickhouse) as console:
        await console.operator("aud", "auditor")
        await console.operator("sam", "sender")
        page = await open_page(browser, console)
        await login(page, "aud")
        await page.click("#nav-audit")
        await page.fill("#f-actor", actor)
        await submit(page, "#audit-filter")
        assert await page.locator("tr.entry").count() == 50
        assert "t59" in await page.locator("tr.entry").first.inner_text()  # newest first
        await submit(page, "#audit-next")
        assert await page.locator("tr.entry").count() == 10
        assert "t0" in await page.locator("tr.entry").last.inner_text()
        await submit(page, "#audit-first")
        await page.fill("#f-action", "app.")
        await submit(page, "#audit-filter")
        actions = await page.locator("tr.entry").evaluate_all("rows => rows.map(r => r.dataset.action)")
        assert len(actions) == 30 and set(actions) == {"app.rotate_key"}
        await screenshot(page, "console-audit")
        await page.fill("#f-since", "yesterday-ish")
        await submit(page, "#audit-filter")
        assert "since" in await page.inner_text("#filter-error")

        page = await open_page(browser, console)
        await login(page, "sam")
        assert await page.locator("#nav-audit").count() == 0
        response = await page.goto("/console/audit")
        assert response is not None and response.status == 403


async def shelve(settings: Settings, *letters: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.kafka))
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(settings.topic("events.deadletter"), letter)
    finally:
        await producer.stop()


def refused_event(prefix: str, app: str, event_id: str, **changes: object) -> bytes:
    """A letter of ingest: the event refused for its category, with a secret-named field in its data."""
    event = {
        "event_id": event_id, "app": app, "type": "campus.notice", "template": "campus_notice",
        "category": "newsletter", "audience": {"user_ids": ["xi"]},
        "data": {"headline": "Library hours", "password": "hunter2-secret"}, **changes,
    }
    raw = json.dumps(event).encode()
    letter = dead_letter(raw, f"{prefix}events:0:7", "category: 'newsletter' is not one of ...",
                         app=app, event_id=event_id)
    return letter.model_dump_json().encode()


async def test_an_app_owner_inspects_and_replays_their_apps_letters(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    apps = AppRegistry(redis)
    await apps.register("campus", {"email"})
    await apps.register("bursar", {"email"})
    prefix = settings.topic_prefix
    await shelve(settings, refused_event(prefix, "campus", "c-1"), refused_event(prefix, "bursar", "b-1"))
    async with running_console(settings, redis) as console:
        await console.operator("olga", "app_owner@campus")
        await console.operator("ana", "analyst")
        page = await open_page(browser, console)
        await login(page, "olga")
        await page.click("#nav-dead_letters")
        rows = page.locator("tr.letter")
        assert await rows.count() == 1
        assert "campus" in await rows.first.inner_text()
        letter_id = (await rows.first.get_attribute("id") or "").removeprefix("letter-")
        await submit(page, f'[data-inspect="{letter_id}"]')
        payload = await page.inner_text("#letter-payload")
        assert "******" in payload and "hunter2" not in payload
        assert "Library hours" in payload
        assert console.audited("dead_letter.read")[-1].actor == "olga"

        # As kept it is still invalid: the API's message next to the field.
        await submit(page, "#replay-submit")
        assert "category" in await page.inner_text("#replay-error")
        # The shown payload with its mask: refused before anything is sent.
        masked = json.loads(payload) | {"category": "notice"}
        await page.fill("#event", json.dumps(masked))
        await submit(page, "#replay-submit")
        assert "masked" in await page.inner_text("#replay-error")
        # Corrected: published, and audited as the API audits a replay.
        corrected = masked | {"data": {"headline": "Library hours", "password": "a new one"}}
        await page.fill("#event", json.dumps(corrected))
        await submit(page, "#replay-submit")
        assert "Published" in await page.inner_text("#done")
        replays = console.audited("dead_letter.replay")
        # The refused one audited too (the masked attempt never reached the API's replay).
        assert [r.outcome for r in replays] == ["failed", "ok"]
        assert all(r.actor == "olga" for r in replays)
        await screenshot(page, "console-dead-letter")

        # Another app's letter: the same answer as the API's, nothing shown.
        assert console.deps.dead_letters is not None
        everyone = await console.deps.dead_letters.letters()
        bursar = next(s.letter_id for s in everyone if s.letter.app == "bursar")
        response = await page.goto(f"/console/dead-letters/{bursar}")
        assert response is not None and response.status == 404
        assert "among your apps' letters" in await page.inner_text("#letter-missing")
        assert "hunter2" not in await page.content()

        page = await open_page(browser, console)
        await login(page, "ana")
        assert await page.locator("#nav-dead_letters").count() == 0
        response = await page.goto("/console/dead-letters")
        assert response is not None and response.status == 403
