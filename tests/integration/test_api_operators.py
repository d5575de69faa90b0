"""Operators, roles, sessions, apps and end-user tokens through the API on real Redis: logging in, the
lockout and the per-address limit, the password policy, roles and grants, keys shown once, the audit
records every change leaves (with no secret in them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from channels.templates import TemplateCatalog
from records.signing import events_signing_key, signature_valid
from settings import ROOT
from state.apps import AppRegistry
from state.auth_failures import AuthFailures, FailureLimits
from state.inbox import Inbox, InboxMessage
from state.operators import OperatorStore
from state.user_tokens import UserTokenSigner
from state.users import UserDirectory
from tests.integration.moments import now

from .test_api_support import PUBLIC_URL, RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SIGNER = UserTokenSigner(SecretStr("operators-user-token-key-0123456789abcdef"))
ADMIN_PASSWORD = "correct horse battery staple"
EVENT = {
    "event_id": "e-1",
    "app": "lms",
    "type": "course.reminder",
    "template": "course_reminder",
    "audience": {"user_ids": ["s1"]},
    "category": "notice",
    "data": {"course": "Linear Algebra", "starts_at": "2026-11-23 08:00", "room": "A101"},
}


class SigningPublisher(RecordingPublisher):
    """Keeps the events with their signatures."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[bytes, str]] = []

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        self.events.append((value, signature))


@dataclass
class Console:
    client: httpx.AsyncClient
    operators: OperatorStore
    apps: AppRegistry
    inbox: Inbox
    publisher: SigningPublisher
    admin: dict[str, str]

    async def as_new(self, name: str, *grants: str) -> dict[str, str]:
        await self.operators.create(name, ADMIN_PASSWORD, grants=list(grants))
        return bearer(await self.operators.issue_token(name))

    def actions(self) -> list[str]:
        return [record.action for record in self.publisher.audits]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def console(redis: Redis) -> AsyncIterator[Console]:
    apps, inbox = AppRegistry(redis), Inbox(redis)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    failures = AuthFailures(redis, FailureLimits(per_source=8, source_window=60, per_operator=3, lockout=60))
    publisher = SigningPublisher()
    deps = ApiDeps(
        apps=apps,
        inbox=inbox,
        publisher=publisher,
        redis=redis,
        templates=TemplateCatalog(ROOT / "templates"),
        segments=UserDirectory(redis),
        access=Access(apps, operators, SIGNER, failures),
    )
    api = create_api(deps)
    await operators.create("admin", ADMIN_PASSWORD, grants=["administrator"])
    admin = bearer(await operators.issue_token("admin"))
    transport = httpx.ASGITransport(app=api, client=("198.51.100.4", 4711))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as c,
    ):
        yield Console(c, operators, apps, inbox, publisher, admin)


async def login(console: Console, name: str, password: str) -> httpx.Response:
    return await console.client.post("/v1/sessions", json={"name": name, "password": password})


async def test_login_me_and_logout(console: Console) -> None:
    answer = await login(console, "admin", ADMIN_PASSWORD)
    assert answer.status_code == 201
    session = answer.json()["token"]
    assert session.startswith("sbs_") and answer.json()["idle_seconds"] == 1800
    me = (await console.client.get("/v1/me", headers=bearer(session))).json()
    assert (me["kind"], me["name"], me["roles"]) == ("operator", "admin", ["administrator"])
    assert "operators:manage" in me["permissions"]["*"]
    assert (await console.client.delete("/v1/sessions/current", headers=bearer(session))).status_code == 204
    assert (await console.client.get("/v1/me", headers=bearer(session))).status_code == 401
    [first, last] = [r for r in console.publisher.audits if r.action.startswith("operator.log")]
    assert (first.action, first.actor, first.source, first.outcome) == (
        "operator.login",
        "admin",
        "198.51.100.4",
        "ok",
    )
    assert last.action == "operator.logout"
    assert ADMIN_PASSWORD not in json.dumps([r.model_dump(mode="json") for r in console.publisher.audits])


async def test_failed_logins_lock_the_operator_until_unlocked(console: Console) -> None:
    await console.operators.create("wang", "wang's long passphrase"[::-1], grants=["sender"])
    password = "wang's long passphrase"[::-1]
    for _ in range(3):
        refused = await login(console, "wang", "not it at all, sorry")
        assert refused.status_code == 401 and "not accepted" in refused.json()["detail"]
    # Locked out: the right password is refused with the same answer as a wrong one.
    locked = await login(console, "wang", password)
    assert locked.status_code == 401 and locked.json() == refused.json()
    reasons = [r.reason for r in console.publisher.audits if r.action == "operator.login"]
    assert reasons == ["wrong name or password"] * 3 + ["locked out after failed logins"]
    assert (await console.client.post("/v1/operators/wang/unlock", headers=console.admin)).status_code == 200
    assert (await login(console, "wang", password)).status_code == 201


async def test_failures_of_any_kind_from_one_address_end_in_429(console: Console) -> None:
    codes = [(await login(console, f"ghost-{n}", "wrong password here")).status_code for n in range(4)]
    codes += [
        (await console.client.get("/v1/me", headers=bearer(f"sbk_forged-{n}"))).status_code for n in range(4)
    ]
    assert codes == [401] * 7 + [429]
    refused = await console.client.get("/v1/me", headers=console.admin)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("password", "words"),
    [("short", "at least 12"), ("li.ming-2026-autumn", "must not contain the operator's name")],
)
async def test_the_password_policy_is_a_422_naming_the_field(
    console: Console, password: str, words: str
) -> None:
    answer = await console.client.post(
        "/v1/operators", json={"name": "li.ming", "password": password}, headers=console.admin
    )
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "password"] and words in error["msg"]
    assert password not in answer.text


async def test_roles_unknown_permissions_escalation_and_holders(console: Console) -> None:
    unknown = await console.client.put(
        "/v1/roles/desk", json={"permissions": ["statistic:read"]}, headers=console.admin
    )
    assert unknown.status_code == 422
    assert "did you mean 'statistics:read'" in unknown.json()["detail"][0]["msg"]
    assert (
        await console.client.put(
            "/v1/roles/desk",
            json={"permissions": ["operators:read", "operators:manage"]},
            headers=console.admin,
        )
    ).status_code == 200
    desk = await console.as_new("desk-clerk", "desk")
    # operators:manage alone does not make an administrator: nobody grants more than they hold.
    escalate = await console.client.post(
        "/v1/operators/desk-clerk/grants", json={"role": "administrator"}, headers=desk
    )
    assert escalate.status_code == 403 and "which you do not hold" in escalate.json()["detail"]
    # A changed role changes its holder at their next request.
    assert (await console.client.get("/v1/roles", headers=desk)).status_code == 200
    await console.client.put(
        "/v1/roles/desk", json={"permissions": ["operators:manage"]}, headers=console.admin
    )
    assert (await console.client.get("/v1/roles", headers=desk)).status_code == 403
    held = await console.client.delete("/v1/roles/desk", headers=console.admin)
    assert held.status_code == 409 and "desk-clerk" in held.json()["detail"]
    builtin = await console.client.put(
        "/v1/roles/sender", json={"permissions": ["apps:read"]}, headers=console.admin
    )
    assert builtin.status_code == 409
    assert {"role.create", "role.change"} <= set(console.actions())


async def test_an_apps_key_is_shown_once_and_never_audited(console: Console) -> None:
    made = await console.client.post(
        "/v1/apps", json={"name": "lms", "channels": ["inbox", "email"]}, headers=console.admin
    )
    assert made.status_code == 201
    key, signing_key = made.json()["key"], made.json()["signing_key"]
    assert key.startswith("sbk_") and signing_key == events_signing_key(key)
    shown = (await console.client.get("/v1/apps/lms", headers=console.admin)).text
    rotated = await console.client.post("/v1/apps/lms/key", headers=console.admin)
    new_key = rotated.json()["key"]
    audits = json.dumps([r.model_dump(mode="json") for r in console.publisher.audits])
    for secret in (key, signing_key, new_key, rotated.json()["signing_key"]):
        assert secret not in shown and secret not in audits
    assert (await console.client.post("/v1/events", json=EVENT, headers=bearer(key))).status_code == 401
    assert (await console.client.post("/v1/events", json=EVENT, headers=bearer(new_key))).status_code == 202
    user = SIGNER.mint("lms", "s1", 600)[0]
    assert (await console.client.get("/v1/inbox/s1", headers=bearer(user))).status_code == 200
    assert (await console.client.post("/v1/apps/lms/disable", headers=console.admin)).status_code == 200
    # A disabled app's key and its users' tokens stop at once.
    assert (await console.client.post("/v1/events", json=EVENT, headers=bearer(new_key))).status_code == 401
    assert (await console.client.get("/v1/inbox/s1", headers=bearer(user))).status_code == 401
    assert [a for a in console.actions() if a.startswith("app.")] == [
        "app.register",
        "app.rotate_key",
        "app.disable",
    ]


async def test_operators_send_for_the_apps_they_hold_events_send_on(console: Console) -> None:
    await console.apps.register("lms", {"inbox"})
    await console.apps.register("bursar", {"inbox"})
    sender = await console.as_new("zhao", "sender@lms")
    assert (await console.client.post("/v1/events", json=EVENT, headers=sender)).status_code == 202
    [(value, signed)] = console.publisher.events
    assert signature_valid(value, signed, str(await console.apps.signing_key("lms")))
    other = await console.client.post("/v1/events", json={**EVENT, "app": "bursar"}, headers=sender)
    assert other.status_code == 403 and "'bursar'" in other.json()["detail"]


async def test_operators_read_an_inbox_but_never_mark_it(console: Console) -> None:
    for n, app in enumerate(("lms", "bursar", "lms")):
        message = InboxMessage(
            message_id=f"m-{n}",
            title="t",
            body="b",
            app=app,
            event_id=f"e{n}",
            template="course_reminder",
            category="notice",
            created_at=now() + timedelta(seconds=n),
        )
        await console.inbox.add("s1", message)
    await console.inbox.mark_read("s1", "m-2")
    reader = await console.as_new("qian", "app_owner")
    scoped = await console.as_new("sun", "app_owner@lms")
    page = await console.client.get("/v1/inbox/s1", headers=reader)
    assert page.status_code == 200 and (page.json()["total"], page.json()["unread"]) == (3, 2)
    assert (await console.client.post("/v1/inbox/s1/m-1/read", headers=reader)).status_code == 403
    assert (await console.client.delete("/v1/inbox/s1/m-1", headers=reader)).status_code == 403
    # people:read on one app: that app's messages only, counted as such.
    theirs = (await console.client.get("/v1/inbox/s1", headers=scoped)).json()
    assert [m["message_id"] for m in theirs["messages"]] == ["m-2", "m-0"]
    assert (theirs["total"], theirs["unread"]) == (2, 1)
    assert (await console.client.get("/v1/inbox/s1/unread", headers=scoped)).json() == {"unread": 1}
    assert console.publisher.receipts == []


async def test_changing_my_password_ends_my_sessions(console: Console) -> None:
    session = bearer((await login(console, "admin", ADMIN_PASSWORD)).json()["token"])
    wrong = await console.client.put(
        "/v1/me/password",
        headers=console.admin,
        json={"old_password": "guess guess guess", "new_password": "x" * 20},
    )
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "old_password"]
    changed = await console.client.put(
        "/v1/me/password",
        headers=console.admin,
        json={"old_password": ADMIN_PASSWORD, "new_password": "a new passphrase!"},
    )
    assert changed.status_code == 204
    assert (await console.client.get("/v1/me", headers=session)).status_code == 401
    assert (await login(console, "admin", "a new passphrase!")).status_code == 201


async def test_my_tokens_and_no_resetting_my_own_password(console: Console) -> None:
    issued = await console.client.post("/v1/me/tokens", json={"label": "ci"}, headers=console.admin)
    assert issued.status_code == 201
    mine = (await console.client.get("/v1/me/tokens", headers=console.admin)).json()
    assert issued.json()["token_id"] in [t["token_id"] for t in mine] and issued.json()["token"] not in str(
        mine
    )
    new = bearer(issued.json()["token"])
    assert (await console.client.get("/v1/me", headers=new)).json()["name"] == "admin"
    revoked = await console.client.delete(f"/v1/me/tokens/{issued.json()['token_id']}", headers=console.admin)
    assert revoked.status_code == 204
    assert (await console.client.get("/v1/me", headers=new)).status_code == 401
    own = await console.client.put(
        "/v1/operators/admin/password", json={"password": "x" * 20}, headers=console.admin
    )
    assert own.status_code == 409 and "/v1/me/password" not in own.text and "yourself" in own.json()["detail"]
