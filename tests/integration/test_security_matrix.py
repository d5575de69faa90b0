"""The security matrix: every endpoint of `security_cases.CASES` with every built-in role (over every
app, and over another app), no credentials, forged and revoked credentials, the app's own key, another
app's key and an end-user token — 401, 403, or neither, exactly as the row's permission says. And every
route of the built API is in the table or the public allow-list, so a new endpoint without a row fails.

The expectation is worked out here from the catalog (`settings.permissions`), not by asking
`api.access`: the test states the rule the code must keep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr
from redis.asyncio import Redis
from starlette.routing import Route

from api import ApiDeps, create_api
from api.access import Access
from api.analytics_reader import LazyReader
from api.approval_service import Approvals
from api.campaign_service import CampaignDesk
from api.deps import Analytics, UploadSettings
from api.person_rights import DataRights
from api.publisher import bootstrap_servers
from api.template_service import Templates
from api.trace import Tracer
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from localparts import LocalParts
from processors.dead_letter_shelf import DeadLetterShelf
from rules.loader import load_ruleset
from rules.watch import RulesWatcher
from settings import ROOT
from settings.permissions import ALL_APPS, APP_POWERS, BUILT_IN_ROLES, GLOBAL_PERMISSIONS
from settings.secret_box import SecretBox
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.auth_failures import AuthFailures, FailureLimits
from state.budgets import BudgetStore
from state.campaigns import CampaignStore
from state.channel_accounts import ChannelAccounts
from state.consent import ConsentStore
from state.data_rights import PersonState
from state.inbox import Inbox, InboxMessage
from state.operators import OperatorStore
from state.provider_messages import ProviderMessages
from state.segments import SegmentStore
from state.template_store import TemplateStore
from state.uploads import Recipient, UploadStore
from state.user_tokens import UserTokenSigner
from state.users import UserDirectory
from tests.integration.moments import now

from .security_cases import (
    AUTHENTICATED,
    CASES,
    MATRIX_APP,
    MATRIX_MESSAGE,
    MATRIX_UPLOAD,
    MATRIX_USER,
    OPERATOR,
    OTHER_APP,
    PUBLIC_ROUTES,
    TARGET_APP,
    TARGET_OPERATOR,
    EndpointCase,
)
from .test_api_support import LINK_SECRET, PUBLIC_URL, RecordingPublisher

MATRIX_MASTER_KEY = "bWF0cml4LW1hc3Rlci1rZXktMDEyMzQ1Njc4OWFiY2Q="  # 32 bytes, for the channel accounts
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SIGNER = UserTokenSigner(SecretStr("matrix-user-token-key-0123456789abcdefghij"))
PASSWORD = "matrix operators' password"
USER_POWERS = frozenset({"inbox:own", "consent:own"})
APP_KEY_POWERS = APP_POWERS | {"user_tokens:issue"}

Outcome = Literal[401, 403, "allowed"]


@dataclass(frozen=True)
class Caller:
    """One credential and what it is: an operator with one role over a scope, an app key, a user..."""

    label: str
    token: str | None
    kind: Literal["none", "invalid", "operator", "app", "user"]
    role: str = ""
    scope: str = ""
    app: str = ""


class MatrixPublisher(RecordingPublisher):
    """Accepts events and conversions too: an allowed request must reach its end."""

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        return None

    async def publish_conversion(self, conversion: Any) -> None:
        return None

    async def publish_erasure(self, request: Any) -> None:
        return None


def _no_clickhouse() -> Any:
    raise RuntimeError("no ClickHouse in the matrix: reports answer 503")


def matrix_api(
    redis: Redis, apps: AppRegistry, operators: OperatorStore, kafka_url: str = "kafka://127.0.0.1:9"
) -> FastAPI:
    """Every router switched on, as `build_deps` wires them; a failure limit no run reaches. Dead
    letters are read from a topic of the matrix's own (none: every listing is empty, every letter 404)."""
    reader = LazyReader(_no_clickhouse)
    failures = AuthFailures(redis, FailureLimits(per_source=1_000_000))
    publisher = MatrixPublisher()
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=SegmentStore(redis),
        links=LinkSigner(LINK_SECRET, PUBLIC_URL),
        consent=ConsentStore(redis), provider_messages=ProviderMessages(redis),
        analytics=Analytics(reader, Tracer(reader, redis)),
        access=Access(apps, operators, SIGNER, failures),
        data_rights=DataRights(PersonState(redis), publisher, reader, b"matrix-pseudonym-key"),
        channel_accounts=ChannelAccounts(redis, SecretBox([MATRIX_MASTER_KEY])),
        dead_letters=DeadLetterShelf(bootstrap_servers(kafka_url), "matrix-events.deadletter"),
        approvals=Approvals(ApprovalStore(redis), PolicyStore(redis), roles=operators.roles),
        budgets=BudgetStore(redis),
        template_versions=Templates(TemplateStore(redis), TemplateCatalog(ROOT / "templates"),
                                    ApprovalStore(redis), PolicyStore(redis)),
        rules=RulesWatcher(ROOT / "rules", current=load_ruleset(ROOT / "rules")),
        uploads=UploadSettings(UploadStore(redis)),
        campaigns=CampaignDesk(CampaignStore(redis), Inbox(redis), redis),
        people=UserDirectory(redis),
    )
    return create_api(deps, {}, metrics_allow=["127.0.0.1/32"])


@dataclass
class Matrix:
    client: httpx.AsyncClient
    callers: list[Caller]


@pytest.fixture
async def matrix(redis: Redis, local_parts: LocalParts) -> AsyncIterator[Matrix]:
    apps = AppRegistry(redis)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    keys = {name: await apps.register(name, {"inbox", "email", "sms"})
            for name in (MATRIX_APP, OTHER_APP, TARGET_APP)}
    await Inbox(redis).add(MATRIX_USER, InboxMessage(
        message_id=MATRIX_MESSAGE, title="t", body="b", app=MATRIX_APP, event_id="e-1",
        template="course_reminder", category="notice", created_at=now(),
    ))
    await operators.create(TARGET_OPERATOR, PASSWORD, grants=["sender"])
    await matrix_upload(redis)
    callers = [
        Caller("no credentials", None, "none"),
        Caller("forged operator token", "sbo_" + "F" * 43, "invalid"),
        Caller("forged app key", "sbk_" + "F" * 43, "invalid"),
        Caller("forged session", "sbs_" + "F" * 43, "invalid"),
        Caller("user token signed with another key", "sbu_" + jwt.encode(
            {"sub": MATRIX_USER, "app": MATRIX_APP, "aud": "switchboard:user", "exp": 4102444800},
            "another key of thirty-two bytes or more", algorithm="HS256"), "invalid"),
        Caller("unsigned user token", "sbu_" + jwt.encode(
            {"sub": MATRIX_USER, "app": MATRIX_APP, "aud": "switchboard:user", "exp": 4102444800},
            "", algorithm="none"), "invalid"),
        Caller("the app's key", keys[MATRIX_APP], "app", app=MATRIX_APP),
        Caller("another app's key", keys[OTHER_APP], "app", app=OTHER_APP),
        Caller("end-user token", SIGNER.mint(MATRIX_APP, MATRIX_USER, 600)[0], "user", app=MATRIX_APP),
    ]
    await operators.create("revoked", PASSWORD, grants=["administrator"])
    revoked = await operators.issue_token("revoked")
    [info] = await operators.tokens("revoked")
    await operators.revoke_token("revoked", info.token_id)
    callers.append(Caller("revoked administrator token", revoked, "invalid"))
    for role in sorted(BUILT_IN_ROLES):
        for scope in (ALL_APPS, OTHER_APP):
            name = f"{role}-{'all' if scope == ALL_APPS else scope}"
            await operators.create(name, PASSWORD, grants=[f"{role}@{scope}"])
            token = await operators.issue_token(name)
            callers.append(Caller(f"{role} over {scope}", token, "operator", role=role, scope=scope))
    api = matrix_api(redis, apps, operators, local_parts.kafka_url)
    transport = httpx.ASGITransport(app=api, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        yield Matrix(client, callers)


async def matrix_upload(redis: Redis) -> None:
    store = UploadStore(redis)
    draft = store.begin(MATRIX_APP, "user_id", 1, filename="m.csv", file_format="csv", encoding="utf-8",
                        created_by="matrix", max_errors_kept=10, upload_id=MATRIX_UPLOAD)
    await store.add(draft, 1, [Recipient(2, "A", MATRIX_USER)], [])
    await store.finish(draft)


def expected(case: EndpointCase, caller: Caller) -> Outcome:
    """What the row's permission says for this caller."""
    wanted = (case.permission, *case.also)
    if caller.kind in ("none", "invalid"):
        return 401
    if case.permission == AUTHENTICATED:
        return "allowed"
    if case.permission == OPERATOR:
        return "allowed" if caller.kind == "operator" else 403
    if caller.kind == "user":
        return "allowed" if any(p in USER_POWERS for p in wanted) else 403
    if caller.kind == "app":
        own = case.app in (None, caller.app)
        return "allowed" if own and any(p in APP_KEY_POWERS for p in wanted) else 403
    held = BUILT_IN_ROLES[caller.role]
    for permission in wanted:
        if permission not in held:
            continue
        if caller.scope == ALL_APPS:
            return "allowed"
        if permission not in GLOBAL_PERMISSIONS and case.app in (None, caller.scope):
            return "allowed"
    return 403


def reports(case: EndpointCase) -> bool:
    """The rows that read ClickHouse (a data-rights export too): 503 here, where there is none."""
    return case.template.startswith(("/v1/reports", "/v1/messages", "/v1/audit")) or case.template.endswith(
        "/export"
    )


def outcome(status: int) -> Outcome:
    return 401 if status == 401 else 403 if status == 403 else "allowed"


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=str(c)) for c in CASES],
)
async def test_every_caller_gets_what_the_permission_says(matrix: Matrix, case: EndpointCase) -> None:
    wrong = []
    for caller in matrix.callers:
        headers = {"Authorization": f"Bearer {caller.token}"} if caller.token else {}
        if case.files is not None:
            answer = await matrix.client.request(
                case.method, case.path, data=case.body, files=case.files, headers=headers
            )
        else:
            answer = await matrix.client.request(case.method, case.path, json=case.body, headers=headers)
        want = expected(case, caller)
        # Reports and the audit log answer 503 without ClickHouse; nothing else may fail for lack of a part.
        broken = answer.status_code in (405, 429) or (answer.status_code >= 500 and not reports(case))
        if outcome(answer.status_code) != want or broken:
            wrong.append(f"{caller.label}: {answer.status_code} {answer.text[:160]} (expected {want})")
        if caller.token:
            assert caller.token not in answer.text, f"{case} echoed the credential of {caller.label}"
    assert not wrong, f"{case} ({case.permission}):\n" + "\n".join(wrong)


def test_every_route_is_in_the_table_or_public(redis_url: str) -> None:
    """A new endpoint without a row in security_cases.py (or a place on the public list) fails here."""
    redis = Redis.from_url(redis_url)
    api = matrix_api(redis, AppRegistry(redis), OperatorStore(redis, hasher=FAST_HASHER))
    documented = {
        (method.upper(), path) for path, item in api.openapi()["paths"].items() for method in item
    }
    # The console's routes take a cookie session, not a bearer credential: their own table walks them
    # (console_security_cases.py, test_console_security.py).
    served = documented | served_routes(api.routes)
    routes = {route for route in served if not route[1].startswith("/console")}
    assert ("GET", "/metrics") in routes  # the walk reaches routes the OpenAPI leaves out
    covered = {(case.method, case.template) for case in CASES} | PUBLIC_ROUTES
    assert routes - covered == set(), "routes without a row in security_cases.py"
    assert {(c.method, c.template) for c in CASES} - routes == set(), "rows naming no route"
    assert PUBLIC_ROUTES - routes == set(), "public routes that do not exist"


def served_routes(routes: Sequence[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, through included routers (FastAPI keeps them nested), also
    those left out of the OpenAPI."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            found |= served_routes(included.routes, prefix + str(getattr(context, "prefix", "")))
        elif isinstance(route, APIRoute | Route):
            found |= {(m, prefix + route.path) for m in (route.methods or set()) - {"HEAD"}}
    return found
