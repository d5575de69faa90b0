"""The console end to end, in a real browser over real processes (the API with its console, a worker,
the analytics service, ClickHouse, the broker, Redis): an operator composes a message to a segment on the
Send page, an approval policy holds it, a second operator approves it on the Approvals page (a stale second
approval is refused on the page), it reaches every person's inbox, and the campaign's page shows its
progress. An operator without the permissions sees neither page in the navigation and gets 403 on their
addresses and their forms. Screenshots of each step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from analytics.connection import service_listening
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.inbox import Inbox
from state.segment_definitions import parse_definition
from state.segments import SegmentStore
from state.users import User, UserDirectory
from tests.integration.console_support import login, open_page, running_console, screenshot

DEADLINE = 120.0
# Everything to the inbox at once: the default rules' quiet hours would make the outcome depend on the
# hour the test runs.
RULES = """
ruleset: console-flow
rules:
  - id: inbox-now
    description: Everything to the inbox at once.
    then: {channels: [inbox]}
"""
PEOPLE = [f"s2020-{n}" for n in range(4)]
INBOX_BODY = "Linear Algebra meets at 10:00 in B201"
DATA = '{"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}'


async def eventually(what: str, check: Callable[[], Awaitable[bool]], worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{what} did not happen in {DEADLINE}s\n{worker.log_tail()}"
        await asyncio.sleep(0.3)


async def analytics_up(settings: Settings, worker: SwitchboardProcess) -> None:
    """Progress is read through the analytics service: asked before it listens, the API would open the
    engine's folder itself (`open_reader`) and keep reading that empty copy."""

    async def listening() -> bool:
        host, port = settings.analytics_host, settings.analytics_port
        return await asyncio.to_thread(service_listening, host, port, 0.5)

    await eventually("the analytics service listening", listening, worker)


async def seed(redis: Redis) -> None:
    """The app, four students of 2020 and one other, their segment, and a policy holding campaigns."""
    await AppRegistry(redis).register("lms", {"inbox", "email"})
    people = [User(user_id=p, tags=("class-2020",), bindings={"inbox": p}) for p in PEOPLE]
    people.append(User(user_id="s2021-0", tags=("class-2021",), bindings={"inbox": "s2021-0"}))
    await UserDirectory(redis).upsert(people)
    definition = parse_definition({"tags": {"all": ["class-2020"]}})
    await SegmentStore(redis).put("class-2020", "lms", "students of 2020", definition, "test")
    policy = ApprovalPolicy(name="campaign-review", apps=["lms"], campaign=True, levels=["approver"])
    await PolicyStore(redis).put(policy)


async def csrf_of(page: Page) -> str:
    token = await page.get_attribute('meta[name="csrf-token"]', "content")
    assert token
    return token


async def test_compose_approve_deliver_and_a_role_without_permission(
    settings: Settings, redis: Redis, tmp_path: Path, browser: Browser
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}", "rules": rules})
    await seed(redis)
    inbox, approvals = Inbox(redis), ApprovalStore(redis)
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await analytics_up(flow, worker)
        async with running_console(flow, redis) as console:
            await console.operator("li", "sender@lms")
            await console.operator("mei", "approver@lms")
            await console.operator("ida", "template_editor@lms")
            await console.operator("kai", "administrator")  # the help desk: people are read over every app

            # li composes: a segment with its count, inbox, the live preview and estimate.
            li = await open_page(browser, console)
            await login(li, "li")
            await expect(li.locator("#nav-send")).to_be_visible()
            await expect(li.locator("#nav-approvals")).to_have_count(0)
            await li.goto("/console/send/new")
            segment = li.locator("#segment option", has_text="class-2020")
            await expect(segment).to_contain_text("students of 2020")
            await li.fill("#name", "Linear Algebra reminder")
            await li.check("#target-segment")
            await li.select_option("#segment", "class-2020")
            await li.check("#channel-inbox")
            await li.select_option("#template", "course_reminder")
            await li.fill("#data", DATA)
            await li.locator("#data").dispatch_event("change")
            await expect(li.locator("#preview-inbox")).to_contain_text(INBOX_BODY)
            await expect(li.locator("#estimate-recipients")).to_contain_text("4 segment class-2020")
            await screenshot(li, "send-compose")

            # A mistake is shown next to its field, in the API's words, and nothing is saved.
            await li.fill("#data", '{"course": "Linear Algebra"}')
            async with li.expect_navigation():
                await li.click("#send")
            await expect(li.locator("#error-data")).to_contain_text("room")
            assert await console.deps.campaigns.store.listing(None) == []  # type: ignore[union-attr]
            await li.fill("#data", DATA)
            sent_on = datetime.now(UTC).date()
            async with li.expect_navigation():
                await li.click("#send")
            assert "/console/send/lms.c" in li.url
            campaign_id = li.url.rsplit("/", 1)[1]
            await expect(li.locator("#campaign-state")).to_have_text("running")

            async def held() -> bool:
                pending = await approvals.listing("pending")
                return any(i.subject.endswith(f"campaign-{campaign_id}") for i in pending)

            await eventually("the campaign held for approval", held, worker)
            await expect(li.locator("#campaign-approval")).to_contain_text(
                "Waiting for approval: policy campaign-review", timeout=15_000
            )
            await screenshot(li, "send-campaign-held")
            assert sum([await inbox.total(p) for p in PEOPLE]) == 0

            # mei approves it on her Approvals page, with its preview; a stale page's second try is refused.
            mei = await open_page(browser, console)
            await login(mei, "mei")
            await mei.goto("/console/approvals")
            card = mei.locator(".approval", has_text=campaign_id)
            await expect(card).to_contain_text(INBOX_BODY)
            await screenshot(mei, "approvals-waiting")
            stale = await mei.context.new_page()
            await stale.goto("/console/approvals")
            await card.locator("textarea").fill("fine for 2020")
            async with mei.expect_navigation():
                await card.locator("button", has_text="Approve").click()
            await expect(mei.locator("#approval-decided")).to_be_visible()
            await expect(mei.locator("#recent")).to_contain_text("fine for 2020")
            stale_card = stale.locator(".approval", has_text=campaign_id)
            async with stale.expect_navigation():
                await stale_card.locator("button", has_text="Approve").click()
            await expect(stale.locator("#approval-message")).to_contain_text("already approved")
            await screenshot(stale, "approvals-refused")

            async def delivered() -> bool:
                return [await inbox.total(p) for p in PEOPLE] == [1, 1, 1, 1]

            await eventually("the message in each 2020 inbox", delivered, worker)
            assert await inbox.total("s2021-0") == 0

            # The campaign's page polls its progress from the analytics.
            await li.goto(f"/console/send/{campaign_id}")
            await expect(li.locator("#progress-delivered")).to_have_text("4", timeout=DEADLINE * 1000)
            await screenshot(li, "send-campaign-delivered")
            async with li.expect_navigation():
                await li.click("#recall-campaign")
            await expect(li.locator("#campaign-recalled")).to_contain_text("4 recalled")
            assert [await inbox.total(p) for p in PEOPLE] == [0, 0, 0, 0]
            await li.goto("/console/send")
            await expect(li.locator("#campaigns")).to_contain_text("Linear Algebra reminder")
            # The overview counts them among today's sends (unless the UTC day turned meanwhile).
            await li.goto("/console/overview?app=lms")
            if datetime.now(UTC).date() == sent_on:
                await expect(li.locator("#today-sent")).to_have_text("4")
            await screenshot(li, "overview-after-send")
            # The person's history shows the message, with why (people:read over every app: kai).
            kai = await open_page(browser, console)
            await login(kai, "kai")
            await kai.goto(f"/console/people/{PEOPLE[0]}")
            await expect(kai.locator("#history")).to_contain_text("course_reminder")
            await screenshot(kai, "person-history")

            # ida edits templates only: no Send or Approvals entry, 403 on their pages and forms.
            ida = await open_page(browser, console)
            await login(ida, "ida")
            await expect(ida.locator("#nav-send")).to_have_count(0)
            await expect(ida.locator("#nav-approvals")).to_have_count(0)
            token = await csrf_of(ida)
            for path in ("/console/send", "/console/send/new", f"/console/send/{campaign_id}",
                         "/console/approvals"):
                assert (await ida.goto(path)).status == 403, path  # type: ignore[union-attr]
            await expect(ida.locator("main")).to_contain_text("approvals:decide")
            await screenshot(ida, "approvals-forbidden")
            posts = {
                "/console/send/new": {"app": "lms", "target": "all", "template": "course_reminder"},
                f"/console/send/{campaign_id}/cancel": {},
                "/console/approvals/ap_x/approve": {"comment": "no"},
            }
            for path, form in posts.items():
                answer = await ida.request.post(path, form={"csrf": token, **form})
                assert answer.status == 403, (path, answer.status)
            without_token = await li.request.post(f"/console/send/{campaign_id}/cancel", form={})
            assert without_token.status == 403
            assert (await console.deps.campaigns.store.get(campaign_id)).state != "cancelled"  # type: ignore[union-attr]
        assert worker.running, worker.log_tail()
        assert service.running, service.log_tail()
