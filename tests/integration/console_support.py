"""Support for the console's browser tests (no tests here): the real API on a loopback port (uvicorn,
wired as in production by `build_deps` on the test's broker, Redis and ClickHouse), operators to log
in as, and a Chromium driven by Playwright (Debian's package: FIELD-NOTES "Browsers").

    async with running_console(settings, redis) as console:
        await console.operator("ada", "administrator")
        page = await open_page(browser, console)
        await login(page, "ada")
        await screenshot(page, "overview")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from clickhouse_connect.driver.client import Client
from playwright.async_api import Browser, Page, async_playwright
from redis.asyncio import Redis

from api.access import Access
from api.analytics_reader import LazyReader
from api.app import create_api
from api.deps import Analytics, ApiDeps, LoadedRules
from api.publisher import Publisher
from api.server import build_deps
from api.trace import Tracer
from localparts.process import free_port
from records.audit import AuditRecord
from settings import Settings
from state.operators import OperatorStore
from tests.integration.test_api_support import FAST_HASHER

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long enough console passphrase"
_screenshots: list[Path] = []  # the run's folder, set by the `browser` fixture


class AuditTap:
    """The API's publisher, keeping a copy of each audit record it published (to assert on)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self.audits: list[AuditRecord] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)

    async def publish_audit(self, record: AuditRecord) -> None:
        await self._publisher.publish_audit(record)
        self.audits.append(record)


@dataclass
class RunningConsole:
    url: str
    deps: ApiDeps
    operators: OperatorStore
    redis: Redis
    tap: AuditTap

    def audited(self, action: str) -> list[AuditRecord]:
        return [record for record in self.tap.audits if record.action == action]

    async def operator(self, name: str, *grants: str, locale: str = "en", password: str = PASSWORD) -> str:
        """A new active operator holding `grants` (`role` over every app, or `role@app`); its password."""
        await self.operators.create(name, password, grants=grants, locale=locale)  # type: ignore[arg-type]
        return password


@asynccontextmanager
async def running_console(
    settings: Settings,
    redis: Redis,
    *,
    rules: LoadedRules | None = None,
    session_idle_seconds: int | None = None,
    clickhouse: Client | None = None,
) -> AsyncIterator[RunningConsole]:
    """The API with its console served by uvicorn on a free loopback port, until the block ends.
    `session_idle_seconds` shortens sessions for the expiry test; `clickhouse` (the test run's chdb
    client) is the reports' reader, for pages that show reports without the analytics service."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings.model_copy(update={"public_url": url})
    deps = build_deps(settings, redis, rules=rules)
    operators = OperatorStore(
        redis, hasher=FAST_HASHER,
        session_idle_seconds=session_idle_seconds or settings.access_session_idle_seconds,
        session_max_seconds=settings.access_session_max_seconds,
    )
    access = deps.access
    deps = replace(deps, access=Access(access.apps, operators, access.user_tokens, access.failures))
    tap = AuditTap(deps.publisher)
    deps = replace(deps, publisher=tap)  # type: ignore[arg-type]  # it is a Publisher, by delegation
    if clickhouse is not None:
        reader = LazyReader(lambda: clickhouse)
        deps = replace(deps, analytics=Analytics(reader, Tracer(reader, redis)))
    config = uvicorn.Config(create_api(deps), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "the API did not start"
        yield RunningConsole(url, deps, operators, redis, tap)
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for one test."""
    if not _screenshots:
        folder = os.environ.get("SWITCHBOARD_SCREENSHOTS")
        _screenshots.append(Path(folder) if folder else tmp_path_factory.getbasetemp() / "screenshots")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Browser, console: RunningConsole, locale: str = "en-GB") -> Page:
    """A fresh browser context (no cookies) on the console."""
    context = await browser.new_context(base_url=console.url, locale=locale,
                                        viewport={"width": 1280, "height": 860})
    return await context.new_page()


async def login(page: Page, name: str, password: str = PASSWORD) -> None:
    """Log in through the login form; the page lands where the console sends it."""
    await page.goto("/console/login")
    await page.fill("#name", name)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("#login-submit")


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as `<name>.png` in $SWITCHBOARD_SCREENSHOTS (default `<basetemp>/screenshots`)."""
    folder = _screenshots[0] if _screenshots else Path(os.environ.get("SWITCHBOARD_SCREENSHOTS", "."))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def nav_entries(names: Iterable[str]) -> list[str]:
    """The navigation entries' element ids for page names (`#nav-overview`)."""
    return [f"#nav-{name}" for name in names]
