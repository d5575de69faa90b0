"""Members & roles in a browser against the real API: an administrator adds an operator with a role
over an app, locks and unlocks them, grants and revokes, resets a password (the API's policy message
next to the field), adds and removes a custom role; each change audited as the API audits it. An
auditor reads but has no forms and is refused the actions; an operator without operators:read sees
no entry and gets 403."""

from __future__ import annotations

from playwright.async_api import Browser, Page
from redis.asyncio import Redis

from settings import Settings
from tests.integration.console_support import login, open_page, running_console, screenshot


async def submit(page: Page, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(selector)


async def test_an_administrator_manages_operators_and_roles(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator")
        page = await open_page(browser, console)
        await login(page, "ada")
        await page.click("#nav-members")
        assert page.url.endswith("/console/members")

        # Add bob, a sender over campus.
        await page.fill("#new-name", "bob")
        await page.fill("#new-password", "long passphrase of B 2026")
        await page.fill("#new-display", "Bob Li")
        await page.select_option("#new-role", "sender")
        await page.fill("#new-apps", "campus")
        await submit(page, "#add-operator-submit")
        assert "Operator added" in await page.inner_text("#done")
        assert "sender @ campus" in await page.inner_text("#operator-bob")
        bob = await console.operators.get("bob")
        assert [str(g) for g in bob.grants] == ["sender@campus"]
        created = console.audited("operator.create")
        assert created[-1].actor == "ada" and created[-1].target == "bob"
        assert "long passphrase of B" not in created[-1].model_dump_json()

        # The same name again: the API's 409 message, next to the form.
        await page.fill("#new-name", "bob")
        await page.fill("#new-password", "another long passphrase 2026")
        await submit(page, "#add-operator-submit")
        assert "already exists" in await page.inner_text('#add-operator [data-form="create"]')

        # Lock, then unlock.
        await submit(page, '[data-lock="bob"]')
        assert await page.get_attribute('#operator-bob [data-state]', "data-state") == "locked"
        assert (await console.operators.get("bob")).state == "locked"
        await submit(page, '[data-unlock="bob"]')
        assert (await console.operators.get("bob")).state == "active"
        assert [r.action for r in console.tap.audits][-2:] == ["operator.lock", "operator.unlock"]

        # Nobody locks themselves: the API's refusal, shown on the page.
        await submit(page, '[data-lock="ada"]')
        assert "cannot lock yourself" in await page.inner_text("#operator-ada")

        # Grant analyst over bursar, revoke sender.
        row = page.locator("#operator-bob")
        await row.locator("summary").click()
        await row.locator('.grant-form select[name="role"]').select_option("analyst")
        await row.locator('.grant-form input[name="apps"]').fill("bursar")
        await submit(page, '#operator-bob .grant-form button')
        assert "analyst @ bursar" in await page.inner_text("#operator-bob")
        await submit(page, '#operator-bob [data-revoke="sender"]')
        assert [str(g) for g in (await console.operators.get("bob")).grants] == ["analyst@bursar"]
        assert console.audited("role.grant")[-1].after == ["sender@campus", "analyst@bursar"]

        # A password the policy refuses: its message next to the field; a good one works.
        row = page.locator("#operator-bob")
        await row.locator("summary").click()
        await row.locator('.password-form input[name="password"]').fill("short")
        await submit(page, "#operator-bob .password-form button")
        error = await page.inner_text('#operator-bob .password-form [data-form="password:bob"]')
        assert "password" in error
        row = page.locator("#operator-bob")
        await row.locator('.password-form input[name="password"]').fill("new long passphrase of B")
        await submit(page, "#operator-bob .password-form button")
        assert await console.operators.verify_password("bob", "new long passphrase of B") is not None
        assert console.audited("operator.password_reset")[-1].target == "bob"

        # A custom role: add, then remove.
        await page.fill("#role-name", "reporter")
        await page.check('#add-role input[value="statistics:read"]')
        await page.check('#add-role input[value="campaigns:read"]')
        await submit(page, "#add-role-submit")
        assert "campaigns:read, statistics:read" in await page.inner_text("#role-reporter")
        await screenshot(page, "console-members")
        await submit(page, '[data-remove-role="reporter"]')
        assert await page.locator("#role-reporter").count() == 0
        assert [r.action for r in console.tap.audits][-2:] == ["role.create", "role.remove"]


async def test_an_auditor_reads_without_forms_and_others_see_no_entry(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator")
        await console.operator("aud", "auditor")
        await console.operator("sam", "sender")
        page = await open_page(browser, console)
        await login(page, "aud")
        await page.click("#nav-members")
        assert "ada" in await page.inner_text("#operators")
        assert await page.locator("#add-operator").count() == 0
        assert await page.locator("[data-lock]").count() == 0
        assert await page.locator("#add-role").count() == 0
        # Every action is checked on the server again, with a valid CSRF token too.
        token = await page.get_attribute('meta[name="csrf-token"]', "content")
        assert token
        refused = await page.request.post("/console/members/operators/ada/lock", form={"csrf": token})
        assert refused.status == 403
        assert "operators:manage" in await refused.text()
        assert (await console.operators.get("ada")).state == "active"

        page = await open_page(browser, console)
        await login(page, "sam")
        assert await page.locator("#nav-members").count() == 0
        response = await page.goto("/console/members")
        assert response is not None and response.status == 403
        assert "operators:read" in await page.inner_text("#forbidden")
