"""The demo's console login: `switchboard demo --keep-running` leaves an administrator `demo` whose
password is in a file only its owner reads; that login opens the console's Overview."""

from __future__ import annotations

from playwright.async_api import Browser
from redis.asyncio import Redis

from demo.run import DEMO_OPERATOR, _demo_operator
from settings import Settings
from tests.integration.console_support import login, open_page, running_console


async def test_the_demo_operator_logs_in_to_the_console(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    await _demo_operator(settings, "first pass phrase 2026")
    await _demo_operator(settings, "second pass phrase 2026")  # a re-run keeps the operator, new password
    async with running_console(settings, redis) as console:
        operator = await console.operators.get(DEMO_OPERATOR)
        assert [str(g) for g in operator.grants] == ["administrator"] and operator.locale == "zh"
        assert await console.operators.verify_password(DEMO_OPERATOR, "first pass phrase 2026") is None
        page = await open_page(browser, console)
        await login(page, DEMO_OPERATOR, "second pass phrase 2026")
        assert page.url.endswith("/console/overview")
        assert await page.inner_text("h1") == "概览"
