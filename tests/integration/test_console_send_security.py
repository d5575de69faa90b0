"""The Send and Approvals pages' routes (rows of `console_security_cases.py` too, walked there with every
built-in role over every app) walked here with roles scoped to apps: a session without the permission, or
holding it on another app only, is 403 naming the permission (and the campaign's app)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from api import create_api
from api.console.csrf import SESSION_COOKIE, csrf_token
from api.server import build_deps
from settings import Settings
from state.apps import AppRegistry
from state.operators import OperatorStore
from tests.integration.approvals_support import FAST_HASHER, PASSWORD

CAMPAIGN = "lms.c0123456789ab"
# (method, address, the permission it needs, whether that permission is checked on the campaign's app)
CASES: list[tuple[str, str, str, bool]] = [
    ("GET", "/console/send", "campaigns:read", False),
    ("GET", "/console/send/new", "campaigns:manage", False),
    ("POST", "/console/send/preview", "campaigns:manage", False),
    ("POST", "/console/send/new", "campaigns:manage", False),
    ("POST", "/console/send/upload", "campaigns:manage", False),
    ("GET", f"/console/send/{CAMPAIGN}", "campaigns:read", True),
    ("GET", f"/console/send/{CAMPAIGN}/progress", "campaigns:read", True),
    ("POST", f"/console/send/{CAMPAIGN}/submit", "campaigns:manage", True),
    ("POST", f"/console/send/{CAMPAIGN}/cancel", "campaigns:manage", True),
    ("POST", f"/console/send/{CAMPAIGN}/recall", "campaigns:manage", True),
    ("GET", "/console/approvals", "approvals:decide", False),
    ("GET", "/console/approvals/ap_0123", "approvals:decide", False),
    ("POST", "/console/approvals/ap_0123/approve", "approvals:decide", False),
    ("POST", "/console/approvals/ap_0123/reject", "approvals:decide", False),
]


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    await AppRegistry(redis).register("lms", {"inbox"})
    api = create_api(build_deps(settings, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):
        yield client


async def session(redis: Redis, name: str, *grants: str) -> dict[str, str]:
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create(name, PASSWORD, grants=grants)
    return {SESSION_COOKIE: await operators.start_session(name)}


async def call(client: httpx.AsyncClient, method: str, path: str, cookies: dict[str, str]) -> httpx.Response:
    token = csrf_token(cookies[SESSION_COOKIE]) if cookies else ""
    client.cookies.clear()
    client.cookies.update(cookies)
    if method == "GET":
        return await client.get(path)
    return await client.post(path, data={"csrf": token})


async def test_a_session_without_the_permission_or_holding_it_on_another_app_is_403(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    editor = await session(redis, "ida", "template_editor@lms")  # neither campaigns nor approvals
    elsewhere = await session(redis, "oz", "sender@shop", "approver@shop")
    for method, path, permission, on_app in CASES:
        answer = await call(client, method, path, editor)
        assert answer.status_code == 403 and permission in answer.text, (method, path, answer.status_code)
        if on_app:
            answer = await call(client, method, path, elsewhere)
            assert answer.status_code == 403 and "lms" in answer.text, (method, path, answer.status_code)
