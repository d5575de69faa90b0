"""The console's base in a real browser against the real API: login and the cookie session, CSRF,
logout, expiry, navigation and pages by permission, the locale switch."""

from __future__ import annotations

import asyncio

from clickhouse_connect.driver.client import Client
from playwright.async_api import Browser
from redis.asyncio import Redis

from settings import Settings
from tests.integration.console_support import login, open_page, running_console, screenshot


async def test_without_a_session_every_page_leads_to_login_and_back_after_it(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator")
        page = await open_page(browser, console)
        await page.goto("/console/overview")
        assert "/console/login" in page.url
        assert await page.locator("#login-submit").is_visible()
        await page.fill("#name", "ada")
        await page.fill("#password", "not the password at all")
        async with page.expect_navigation():
            await page.click("#login-submit")
        assert "not accepted" in await page.inner_text("#login-error")
        await login(page, "ada")
        await page.goto("/console/login?next=/console/overview")
        await page.fill("#name", "ada")
        await page.fill("#password", "a long enough console passphrase")
        async with page.expect_navigation():
            await page.click("#login-submit")
        assert page.url.endswith("/console/overview")
        cookie = next(c for c in await page.context.cookies() if c["name"] == "sb_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"].startswith("sbs_")
        assert "ada" in await page.inner_text("#operator-name")
        await screenshot(page, "console-login-overview")


async def test_a_post_without_the_csrf_token_is_refused_and_logout_ends_the_session(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator", locale="en")
        page = await open_page(browser, console)
        await login(page, "ada")
        refused = await page.request.post("/console/locale", form={"locale": "zh"})
        assert refused.status == 403
        assert "CSRF" in await refused.text()
        assert (await console.operators.get("ada")).locale == "en"  # nothing changed
        forged = await page.request.post("/console/locale", form={"locale": "zh", "csrf": "0" * 64})
        assert forged.status == 403

        token = next(c["value"] for c in await page.context.cookies() if c["name"] == "sb_session")
        assert await console.operators.authenticate_token(token) is not None
        async with page.expect_navigation():
            await page.click("#logout")
        assert "/console/login" in page.url
        assert await console.operators.authenticate_token(token) is None
        await page.goto("/console/overview")
        assert "/console/login" in page.url
        # The old cookie, replayed by hand, opens nothing either.
        await page.context.add_cookies([{"name": "sb_session", "value": token, "url": console.url}])
        await page.goto("/console/overview")
        assert "/console/login" in page.url


async def test_an_idle_session_expires_to_the_login_page(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis, session_idle_seconds=1) as console:
        await console.operator("ada", "administrator")
        page = await open_page(browser, console)
        await login(page, "ada")
        assert page.url.endswith("/console/overview")
        await asyncio.sleep(2.2)  # Redis expires the session key on its own clock
        await page.goto("/console/overview")
        assert "/console/login" in page.url
        # The stale cookie is still in the browser: logging in again works all the same.
        await page.fill("#name", "ada")
        await page.fill("#password", "a long enough console passphrase")
        async with page.expect_navigation():
            await page.click("#login-submit")
        assert page.url.endswith("/console/overview")


async def test_an_operator_without_the_permission_sees_no_entry_and_gets_403(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("tess", "template_editor")  # no statistics:read
        page = await open_page(browser, console)
        await login(page, "tess")
        assert await page.locator("#nav-overview").count() == 0
        response = await page.goto("/console/overview")
        assert response is not None and response.status == 403
        assert "statistics:read" in await page.inner_text("#forbidden")
        await screenshot(page, "console-forbidden")


async def test_the_locale_switch_changes_every_label(
    settings: Settings, redis: Redis, clickhouse: Client, browser: Browser
) -> None:
    async with running_console(settings, redis, clickhouse=clickhouse) as console:
        await console.operator("li", "administrator", locale="zh")
        page = await open_page(browser, console)
        await login(page, "li")
        assert await page.inner_text("#nav-overview") == "概览"
        assert await page.inner_text("#logout") == "退出登录"
        assert await page.inner_text("h1") == "概览"
        assert await page.inner_text("#nav-members") == "成员与角色"
        assert "今日" in await page.inner_text("#period-today h2")
        async with page.expect_navigation():
            await page.click("#switch-locale")
        assert page.url.endswith("/console/overview")
        assert await page.inner_text("#nav-overview") == "Overview"
        assert await page.inner_text("#nav-members") == "Members & roles"
        assert await page.inner_text("#logout") == "Log out"
        assert await page.inner_text("h1") == "Overview"
        assert "Today" in await page.inner_text("#period-today h2")
        assert (await console.operators.get("li")).locale == "en"
        await page.goto("/console/members")
        assert await page.inner_text("#add-operator h2") == "Add an operator"
        async with page.expect_navigation():
            await page.click("#switch-locale")
        assert page.url.endswith("/console/members")  # back where the switch was pressed
        assert await page.inner_text("#add-operator h2") == "添加操作员"


async def test_an_address_that_failed_too_often_is_refused_even_with_a_session(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator")
        page = await open_page(browser, console)
        await login(page, "ada")
        failures = console.deps.access.failures
        assert failures is not None
        while not await failures.source_failed("127.0.0.1"):  # as many failures as the limit allows
            pass
        response = await page.goto("/console/overview")
        assert response is not None and response.status == 429
        assert int(response.headers["retry-after"]) > 0
        assert "Too many failures from this address" in await page.inner_text("#login-error")
