"""The console's Overview in a browser: today's funnel by channel from the test run's ClickHouse, the
alerts firing and each stage's lag from Redis; an operator over one app sees that app's numbers only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client
from playwright.async_api import Browser
from redis.asyncio import Redis

from analytics.sink import ReceiptSink
from records.topics import Receipt
from settings import Settings
from state.watch import Incidents, LagBoard
from tests.integration.console_support import login, open_page, running_console, screenshot


def receipts(app: str) -> list[Receipt]:
    """Today, whatever the time: 3 emails sent (2 delivered, 1 opened, 1 clicked), 1 SMS failed."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    moment = now - min(timedelta(seconds=30), (now - midnight) / 2)  # after midnight, before now

    def row(message: str, channel: str, status: str) -> Receipt:
        return Receipt.model_validate({
            "event_time": moment, "message_id": f"{app}-{message}", "event_id": f"ev-{message}", "app": app,
            "user_id": "u1", "channel": channel, "status": status,
        })

    return [
        *(row(m, "email", "decided") for m in ("m1", "m2", "m3")),
        *(row(m, "email", "sent") for m in ("m1", "m2", "m3")),
        row("m1", "email", "delivered"), row("m2", "email", "delivered"),
        row("m1", "email", "opened"), row("m1", "email", "clicked"),
        row("m4", "sms", "decided"), row("m4", "sms", "failed"),
    ]


async def test_the_overview_shows_todays_funnel_by_channel_alerts_and_lag(
    settings: Settings, redis: Redis, clickhouse: Client, browser: Browser
) -> None:
    unique = uuid.uuid4().hex[:8]
    mine, theirs = f"campus_{unique}", f"bursar_{unique}"
    ReceiptSink(clickhouse).write(receipts(mine) + receipts(theirs)[:3])
    await Incidents(redis).move("dead_letters_rising", f"app={mine}", firing=True)
    await LagBoard(redis).report("worker-1", {("send", "dispatch"): 42})
    async with running_console(settings, redis, clickhouse=clickhouse) as console:
        await console.operator("ana", f"analyst@{mine}", locale="en")
        page = await open_page(browser, console)
        await login(page, "ana")
        assert page.url.endswith("/console/overview")
        today = page.locator("#period-today")
        assert await today.locator("#today-sent").inner_text() == "3"
        assert await today.locator("#today-delivered").inner_text() == "2"
        assert await today.locator("#today-opened").inner_text() == "1"
        assert await today.locator("#today-clicked").inner_text() == "1"
        assert await today.locator("#today-failed").inner_text() == "1"
        assert int(await page.inner_text("#week-sent")) >= 3  # the week holds today
        assert await today.locator("svg.grouped-chart rect.chart-bar").count() >= 6
        assert "email" in await today.locator("svg").inner_html()
        assert "dead_letters_rising" in await page.inner_text("#alerts")
        lag = await page.inner_text("#lag")
        assert "send" in lag and "42" in lag
        await screenshot(page, "console-overview")

        # Another app's numbers are not this operator's to read: the same check as the API's.
        response = await page.goto(f"/console/overview?app={theirs}")
        assert response is not None and response.status == 403
        assert f"statistics:read on app {theirs}" in await page.inner_text("#forbidden")
