"""The console's security table walked over real HTTP: every console route has a row (or is public);
without a session a page leads to login and an action is refused; a POST without the CSRF token is
refused even with a session that holds the permission; each built-in role gets exactly what its
permissions say (403 naming the permission otherwise)."""

from __future__ import annotations

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from api.access import holds
from api.app import create_api
from api.console.csrf import SESSION_COOKIE, csrf_token
from api.server import build_deps
from settings import Settings
from settings.permissions import BUILT_IN_ROLES
from tests.integration.console_security_cases import (
    CONSOLE_CASES,
    CONSOLE_PUBLIC,
    SESSION,
    TARGET_OPERATOR,
    ConsoleCase,
)
from tests.integration.console_support import running_console
from tests.integration.test_security_matrix import served_routes


def test_every_console_route_is_in_the_table_or_public(settings: Settings, redis: Redis) -> None:
    api = create_api(build_deps(settings, redis))
    routes = {route for route in served_routes(api.routes) if route[1].startswith("/console")}
    covered = {(case.method, case.template) for case in CONSOLE_CASES} | CONSOLE_PUBLIC
    assert routes - covered == set(), "console routes without a row in console_security_cases.py"
    assert {(c.method, c.template) for c in CONSOLE_CASES} - routes == set(), "rows naming no route"
    assert CONSOLE_PUBLIC - routes == set(), "public routes that do not exist"


def allowed(case: ConsoleCase, response: httpx.Response) -> bool:
    to_login = response.status_code == 303 and "/console/login" in response.headers.get("location", "")
    return response.status_code != 403 and not to_login and response.status_code < 500


@pytest.mark.parametrize("case", CONSOLE_CASES, ids=lambda c: f"{c.method} {c.template}")
async def test_every_role_gets_what_the_permission_says(
    settings: Settings, redis: Redis, clickhouse: Client, case: ConsoleCase
) -> None:
    async with running_console(settings, redis, clickhouse=clickhouse) as console:
        await console.operator(TARGET_OPERATOR, "sender")
        async with httpx.AsyncClient(base_url=console.url, timeout=30) as client:
            # No session: a page sends the browser to login, an action is refused and changes nothing.
            answer = await client.request(case.method, case.path, data=case.form or None)
            if case.method == "GET":
                assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")
            else:
                assert answer.status_code == 403, answer.text[:300]
            for role in BUILT_IN_ROLES:
                name = f"as-{role}".replace("_", "-")
                await console.operator(name, role)
                operator = await console.operators.get(name)
                principal = await console.operators.principal(operator)
                token = await console.operators.start_session(name)
                cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
                if case.method == "POST":
                    # A session that may do it, but no CSRF token: refused all the same.
                    bare = await client.post(case.path, data=case.form or None, headers=cookie)
                    assert bare.status_code == 403 and "CSRF" in bare.text, f"{role}: {bare.status_code}"
                form = {**case.form, "csrf": csrf_token(token)} if case.method == "POST" else None
                answer = await client.request(case.method, case.path, data=form, headers=cookie)
                may = case.permission == SESSION or holds(principal, case.permission)
                if may:
                    assert allowed(case, answer), f"{role} refused: {answer.status_code} {answer.text[:300]}"
                else:
                    assert answer.status_code == 403, f"{role} let through: {answer.status_code}"
                    assert case.permission in answer.text
