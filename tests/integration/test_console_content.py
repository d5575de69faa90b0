"""The console's Templates, Rules and Analytics pages in a real browser against the real API (and, for
Analytics, the analytics service owning its ClickHouse): what each shows, its forms' errors beside the
field, its actions, and a role without the permission neither seeing the entry nor opening the page."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import Browser, Page
from redis.asyncio import Redis

from analytics.connection import service_listening
from localparts.switchboard_process import SwitchboardProcess
from rules.loader import load_ruleset
from rules.watch import RulesWatcher
from settings import ROOT, Settings
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.template_store import TemplateStore
from state.users import User, UserDirectory
from tests.integration.console_support import login, open_page, running_console, screenshot
from tests.integration.test_api_audit_dead_letters import eventually
from tests.integration.test_reports import campaign

BROKEN_SMS = 'text: "Exam {{ course }"\n'
SMS = 'text: "【示例大学】{{ course }} exam on {{ day }}"\n'
INBOX = 'title: "Exam: {{ course }}"\nbody: "{{ course }} is on {{ day }}."\n'


async def refused(page: Page, path: str) -> int:
    answer = await page.request.get(path, max_redirects=0)
    return answer.status


async def test_templates_are_written_previewed_published_and_compared(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("tia", "template_editor@lms")
        await console.operator("ana", "analyst")
        page = await open_page(browser, console)
        await login(page, "tia")
        await page.click("#nav-templates")
        assert "course_reminder" in await page.inner_text("#template-files")  # the files, read-only
        await page.click("#new-template")
        await page.fill("#name", "exam_notice")
        await page.fill("#comment", "first")
        await page.locator("input[name=var_name]").nth(0).fill("course")
        await page.locator("input[name=var_sample]").nth(0).fill("Linear Algebra")
        await page.locator("input[name=var_name]").nth(1).fill("day")
        await page.locator("select[name=var_type]").nth(1).select_option("date")
        await page.locator("input[name=var_sample]").nth(1).fill("2026-06-20")
        await page.fill("#part_sms", BROKEN_SMS)
        await page.fill("#part_inbox", INBOX)
        async with page.expect_navigation():
            await page.click("#save-version")
        # The save's own refusal, beside the SMS part; what was typed is kept.
        assert "sms.text" in await page.inner_text("#error-part_sms")
        assert await page.input_value("#part_inbox") == INBOX
        assert await TemplateStore(redis).get("exam_notice") is None
        await page.fill("#part_sms", SMS)
        async with page.expect_navigation():
            await page.click("#save-version")
        assert page.url.endswith("/console/templates/exam_notice/versions/1")
        assert "Linear Algebra exam on 2026-06-20" in await page.inner_text("#preview-sms")
        assert "ucs2" in await page.inner_text("#sms-segments")  # Chinese text: UCS-2 segments
        assert "Exam: Linear Algebra" in await page.inner_text("#preview-inbox")
        await page.fill("#data", "course: Calculus\nday: '2026-07-01'")
        async with page.expect_navigation():
            await page.click("#preview-with-data")
        assert "Calculus exam on 2026-07-01" in await page.inner_text("#preview-sms")
        async with page.expect_navigation():
            await page.click("#publish")
        assert "live" in await page.inner_text("#notice")
        assert await TemplateStore(redis).live_number("exam_notice") == 1

        await page.click("#edit-template")
        assert "{{ course }} exam on {{ day }}" in await page.input_value("#part_sms")  # from the latest
        await page.fill("#part_sms", SMS.replace("exam on", "exam, room A-101, on"))
        await page.fill("#comment", "room added")
        async with page.expect_navigation():
            await page.click("#save-version")
        await page.goto("/console/templates/exam_notice")
        assert "v1" in await page.inner_text("#live-version")
        async with page.expect_navigation():
            await page.click("#show-diff")
        assert "+text:" in (await page.inner_text("#diff-sms")).replace("'", "").replace('"', "")
        assert "A-101" in await page.inner_text("#diff-sms")
        await screenshot(page, "console-templates-diff")
        await page.goto("/console/templates/exam_notice/versions/2")
        await screenshot(page, "console-templates-preview")
        # Under an approval policy over the app's templates, publishing holds the version and says so.
        await PolicyStore(redis).put(ApprovalPolicy(name="template-review", apps=["lms"], templates=True,
                                                    levels=["approver"]))
        async with page.expect_navigation():
            await page.click("#publish")
        assert "not live yet" in await page.inner_text("#notice")
        assert "waiting for approval" in await page.inner_text("#version-2")
        assert await TemplateStore(redis).live_number("exam_notice") == 1
        held = await TemplateStore(redis).publication("exam_notice", 2)
        assert held is not None and held.state == "pending_approval"
        assert await ApprovalStore(redis).get(held.approval_id) is not None
        missing = await page.goto("/console/templates/exam_notice/versions/9")
        assert missing is not None and missing.status == 404
        assert "template 'exam_notice' has no version 9" in await page.inner_text("#refused")

        # An analyst reads statistics, not templates: no entry, and 403 on the page and the action.
        other = await open_page(browser, console)
        await login(other, "ana")
        assert await other.locator("#nav-templates").count() == 0
        assert await refused(other, "/console/templates") == 403
        token = await other.locator("meta[name=csrf-token]").get_attribute("content")
        publish = await other.request.post("/console/templates/exam_notice/versions/2/publish",
                                           form={"csrf": token or ""}, max_redirects=0)
        assert publish.status == 403
        assert await TemplateStore(redis).live_number("exam_notice") == 1


async def test_rules_show_the_loaded_files_explain_a_person_and_refuse_a_broken_candidate(
    settings: Settings, redis: Redis, browser: Browser, tmp_path: Path
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    rule_file = folder / "default.yaml"
    rule_file.write_text((ROOT / "rules" / "default.yaml").read_text())
    watcher = RulesWatcher(folder, ROOT / "templates", current=load_ruleset(folder))
    await UserDirectory(redis).upsert(
        [User(user_id="s1", channel_pref="email", bindings={"inbox": "s1", "email": "s1@x"})]
    )
    await AppRegistry(redis).register("lms", {"inbox", "email"})
    async with running_console(settings, redis, rules=watcher) as console:
        await console.operator("ada", "administrator")
        await console.operator("sam", "sender")
        await console.operator("ana", "analyst")
        page = await open_page(browser, console)
        await login(page, "ada")
        await page.click("#nav-rules")
        rules = await page.inner_text("#rules")
        assert "course-reminders-active" in rules and "rules/default.yaml:" in rules
        assert str(tmp_path) not in rules  # paths as the rule authors know them
        assert "push_then_sms  send on first of push" in await page.inner_text("#strategies")
        assert await page.inner_text("#check-ok")
        # The check reads the files as they are now: an edit shows its error before any reload.
        await asyncio.to_thread(rule_file.write_text, rule_file.read_text() + "\nstrateges: {}\n")
        await page.reload()
        assert "rules/default.yaml:" in await page.inner_text("#check-problems")
        assert "strateges" in await page.inner_text("#check-problems")
        assert "course-reminders-active" in await page.inner_text("#rules")  # still the loaded ones
        await page.fill("#event", '{"app": "lms", "type": "course.reminder", "category": "notice", '
                                  '"template": "course_reminder"}')
        await page.fill("#user", "nobody")
        async with page.expect_navigation():
            await page.click("#run-explain")
        assert "no person 'nobody'" in await page.inner_text("#error-user")
        await page.fill("#user", "s1")
        await page.fill("#last_active", "1d")
        async with page.expect_navigation():
            await page.click("#run-explain")
        explanation = await page.inner_text("#explanation")
        assert "=> course-reminders-active" in explanation
        assert "allowed  app may use [email, inbox]" in explanation
        await page.fill("#candidate", "ruleset: candidate\nrules:\n  - id: x\n    whenn: {}\n")
        await page.fill("#since", (datetime.now(UTC) - timedelta(days=1)).isoformat())
        await page.fill("#until", datetime.now(UTC).isoformat())
        async with page.expect_navigation():
            await page.click("#run-simulate")
        assert "candidate.yaml:4" in await page.inner_text("#error-candidate")
        await screenshot(page, "console-rules")

        # A sender reads rules but may not explain (people) or simulate (every app's statistics).
        sender = await open_page(browser, console)
        await login(sender, "sam")
        await sender.goto("/console/rules")
        assert await sender.locator("#explain-form").count() == 0
        token = await sender.locator("meta[name=csrf-token]").get_attribute("content")
        explain = await sender.request.post("/console/rules/explain",
                                            form={"csrf": token or "", "user": "s1"})
        assert explain.status == 403
        analyst = await open_page(browser, console)
        await login(analyst, "ana")
        assert await analyst.locator("#nav-rules").count() == 0
        assert await refused(analyst, "/console/rules") == 403


async def test_analytics_reports_funnels_and_variants_with_charts_and_csv(
    settings: Settings, redis: Redis, browser: Browser, tmp_path: Path
) -> None:
    app = f"lms_{uuid.uuid4().hex[:6]}"
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'service-ch'}"})
    with SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service:
        # Reports go through the service once it listens (before, a reader would open its folder itself).
        where = (flow.analytics_host, flow.analytics_port, 0.2)
        await eventually(lambda: asyncio.to_thread(service_listening, *where), bool,
                         "the analytics service does not listen", service)
        async with running_console(flow, redis) as console:
            await console.operator("ana", "analyst")
            await console.operator("own", f"app_owner@{app}", "app_owner@zz_other")
            await console.operator("tia", "template_editor")
            for row in campaign(app):
                await console.deps.publisher.publish_receipt(row)
            page = await open_page(browser, console)
            await login(page, "ana")

            async def funnel_shown() -> str:
                await page.goto(f"/console/analytics?by=channel&since=7d&app={app}")
                return await page.inner_text("#funnel") if await page.locator("#funnel").count() else ""

            await eventually(funnel_shown, lambda text: "sms" in text, "no funnel rows", service)
            rows = await page.inner_text("#funnel")
            assert "email" in rows and "inbox" in rows
            assert await page.locator("#funnel-chart svg rect").count() > 0
            async with page.expect_download() as download:
                await page.click("#export-csv")
            csv = await asyncio.to_thread(Path(await (await download.value).path()).read_text)
            assert csv.splitlines()[0].startswith("channel,decided,sent,delivered")
            assert any(line.startswith("sms,2,2,2") for line in csv.splitlines())
            await page.click("#by-template")
            assert "t1" in await page.inner_text("#funnel")
            await screenshot(page, "console-analytics")
            await page.goto("/console/analytics?by=channel&since=soon")
            assert "since='soon' is not a time" in await page.inner_text("#report-error")

            await page.goto("/console/analytics/variants?rule=r1&since=7d")
            assert await page.inner_text("#baseline") == "a"
            assert await page.locator("#variant-b").count() == 1
            assert await page.locator("#variants-chart svg circle").count() == 2
            await screenshot(page, "console-analytics-variants")

            # An owner of two apps sees the first until choosing, never another's, nor the variants
            # across apps; a template editor sees no analytics.
            owner = await open_page(browser, console)
            await login(owner, "own")
            await owner.goto("/console/analytics?by=channel&since=7d")
            assert "sms" in await owner.inner_text("#funnel")
            assert await refused(owner, "/console/analytics?app=other") == 403
            assert await refused(owner, "/console/analytics/variants?rule=r1") == 403
            # Simulating a candidate reads the period's events through the same service.
            admin = await open_page(browser, console)
            await console.operator("ada", "administrator")
            await login(admin, "ada")
            await admin.goto("/console/rules")
            candidate = await asyncio.to_thread((ROOT / "rules" / "default.yaml").read_text)
            await admin.fill("#candidate", candidate)
            await admin.fill("#since", (datetime.now(UTC) - timedelta(days=1)).isoformat())
            await admin.fill("#until", (datetime.now(UTC) + timedelta(minutes=1)).isoformat())
            async with admin.expect_navigation():
                await admin.click("#run-simulate")
            assert "recipients affected: 0" in await admin.inner_text("#simulation-text")
            assert await admin.inner_text("#affected") == "0"

            editor = await open_page(browser, console)
            await login(editor, "tia")
            assert await editor.locator("#nav-analytics").count() == 0
            assert await refused(editor, "/console/analytics") == 403
