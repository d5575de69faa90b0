"""Every route of the console's Send and Approvals pages as a table (method, address, permission), walked
over the real API and Redis: no session leads to the login page (a POST, lacking the session's CSRF
token, is refused first), a session without the permission or holding it on another app only is 403, and
a new route of these pages without a row fails here."""

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
from tests.integration.test_security_matrix import served_routes

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


def template_of(path: str) -> str:
    """The route a case's address is served by (`/console/send/{campaign_id}/{action}`)."""
    parts = path.replace(CAMPAIGN, "{campaign_id}").replace("ap_0123", "{approval_id}").split("/")
    actions = {"submit": "{action}", "cancel": "{action}", "recall": "{action}",
               "approve": "{verdict}", "reject": "{verdict}"}
    if parts[-2] in ("{campaign_id}", "{approval_id}"):
        parts[-1] = actions.get(parts[-1], parts[-1])
    return "/".join(parts)


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


def test_every_route_of_send_and_approvals_has_a_row(settings: Settings, redis: Redis) -> None:
    api = create_api(build_deps(settings, redis))
    served = {route for route in served_routes(api.routes)
              if route[1].startswith(("/console/send", "/console/approvals"))}
    assert served == {(method, template_of(path)) for method, path, _, _ in CASES}


async def test_no_session_goes_to_login_and_a_post_without_it_is_refused(client: httpx.AsyncClient) -> None:
    for method, path, _, _ in CASES:
        answer = await call(client, method, path, {})
        if method == "GET":
            assert answer.status_code == 303 and "/console/login" in answer.headers["location"], path
        else:
            assert answer.status_code == 403, (method, path)


async def test_a_session_without_the_permission_or_on_another_app_is_403(
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
