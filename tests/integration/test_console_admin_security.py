"""The admin pages' security table (console_admin_security_cases.py) against the real API: every route
is listed; without a session a page leads to the login page and an action is refused; an operator who
holds nothing gets 403 naming the permission; a POST without the CSRF token is 403 even for an
administrator."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from api.app import create_api
from api.console.csrf import SESSION_COOKIE, csrf_token
from settings import Settings
from tests.integration.console_admin_security_cases import CASES, PREFIXES
from tests.integration.console_support import running_console
from tests.integration.test_security_matrix import served_routes


async def test_every_admin_route_is_checked_on_the_server(settings: Settings, redis: Redis) -> None:
    async with running_console(settings, redis) as console:
        served = {route for route in served_routes(create_api(console.deps).routes)
                  if route[1].startswith(PREFIXES)}
        listed = {(case.method, case.template) for case in CASES}
        assert served == listed, f"unlisted: {served - listed}, gone: {listed - served}"

        await console.operator("nobody")
        await console.operator("ada", "administrator")
        nobody = await console.operators.start_session("nobody")
        ada = await console.operators.start_session("ada")
        async with httpx.AsyncClient(base_url=console.url, follow_redirects=False) as client:
            for case in CASES:
                form = dict(case.form)
                anonymous = await client.request(case.method, case.path, data=form or None)
                if case.method == "GET":
                    assert anonymous.status_code == 303, case
                    assert anonymous.headers["location"].startswith("/console/login"), case
                else:
                    assert anonymous.status_code == 403, case  # no session, no CSRF token

                client.cookies.set(SESSION_COOKIE, nobody)
                signed = {**form, "csrf": csrf_token(nobody)} if case.method == "POST" else None
                refused = await client.request(case.method, case.path, data=signed)
                assert refused.status_code == 403, (case, refused.status_code)
                assert case.permission in refused.text, case

                if case.method == "POST":
                    client.cookies.set(SESSION_COOKIE, ada)
                    forged = await client.post(case.path, data=form)
                    assert forged.status_code == 403 and "CSRF" in forged.text, case
                client.cookies.clear()
