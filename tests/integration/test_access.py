"""`api.access.Access` on real Redis: operator tokens and sessions, app keys, end-user tokens, 401 / 403 /
429 as the permission says, and roles changed under their holders."""

# No `from __future__ import annotations`: FastAPI reads the probe routes' signatures at runtime.

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from api.access import Access
from settings.permissions import Principal
from state.apps import AppRegistry
from state.auth_failures import AuthFailures, FailureLimits
from state.operators import LastAdministratorError, OperatorGrant, OperatorStore
from state.user_tokens import UserTokenSigner

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

# Cheap parameters: the tests hash a few passwords, not measure argon2.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SIGNER = UserTokenSigner(SecretStr("integration-user-token-key-0123456789abcdef"))


@dataclass
class Setup:
    client: httpx.AsyncClient
    operators: OperatorStore
    apps: AppRegistry
    lms_key: str


def probe_api(access: Access) -> FastAPI:
    """Two routes shaped like the real ones: one global permission, one scoped to the app in the path."""
    api = FastAPI()

    @api.get("/operators")
    async def operators(principal: Annotated[Principal, Depends(access.requires("operators:read"))]) -> str:
        return principal.name

    @api.post("/apps/{app}/channels")
    async def channels(
        app: str, principal: Annotated[Principal, Depends(access.requires("channels:manage"))]
    ) -> str:
        access.authorize(principal, "channels:manage", app)
        return principal.name

    return api


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    lms_key = await apps.register("lms", {"inbox"})
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    failures = AuthFailures(redis, FailureLimits(per_source=5, source_window=60))
    access = Access(apps, operators, SIGNER, failures)
    transport = httpx.ASGITransport(app=probe_api(access), client=("192.0.2.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client:
        yield Setup(client, operators, apps, lms_key)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_operator_token_carries_its_grants_scoped_per_app(setup: Setup) -> None:
    await setup.operators.create("wang", "correct horse battery", grants=["app_owner@lms"])
    token = await setup.operators.issue_token("wang", "laptop")
    assert token.startswith("sbo_")
    ok = await setup.client.post("/apps/lms/channels", headers=bearer(token))
    assert (ok.status_code, ok.json()) == (200, "wang")
    other = await setup.client.post("/apps/bursar/channels", headers=bearer(token))
    assert other.status_code == 403
    assert other.json()["detail"] == "operator 'wang' lacks permission channels:manage on app 'bursar'"
    # A global permission needs a grant over every app.
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 403
    [listed] = await setup.operators.tokens("wang")
    assert listed.label == "laptop" and listed.last_used_at is not None


async def test_an_app_key_holds_app_powers_only(setup: Setup) -> None:
    answer = await setup.client.post("/apps/lms/channels", headers=bearer(setup.lms_key))
    assert answer.status_code == 403 and "channels:manage" in answer.json()["detail"]


async def test_no_forged_revoked_or_disabled_credentials(setup: Setup) -> None:
    await setup.operators.create("li", "a long enough secret", grants=["auditor"])
    token = await setup.operators.issue_token("li")
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 200
    assert (await setup.client.get("/operators")).status_code == 401
    forged = await setup.client.get("/operators", headers=bearer("sbo_" + "A" * 43))
    assert forged.status_code == 401 and "A" * 43 not in forged.text
    [info] = await setup.operators.tokens("li")
    await setup.operators.revoke_token("li", info.token_id)
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 401
    second = await setup.operators.issue_token("li")
    await setup.operators.set_state("li", "disabled")
    assert (await setup.client.get("/operators", headers=bearer(second))).status_code == 401


async def test_a_changed_role_changes_its_holders_at_once(setup: Setup) -> None:
    await setup.operators.roles.put("reviewer", ["apps:read"])
    await setup.operators.create("zhao", "a long enough secret", grants=[OperatorGrant(role="reviewer")])
    token = await setup.operators.issue_token("zhao")
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 403
    await setup.operators.roles.put("reviewer", ["apps:read", "operators:read"])
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 200


async def test_a_session_authenticates_like_a_token_until_it_ends(setup: Setup) -> None:
    await setup.operators.create("qian", "a long enough secret", grants=["auditor"])
    session = await setup.operators.start_session("qian")
    assert session.startswith("sbs_")
    assert (await setup.client.get("/operators", headers=bearer(session))).status_code == 200
    await setup.operators.end_session(session)
    assert (await setup.client.get("/operators", headers=bearer(session))).status_code == 401


async def test_failures_from_one_address_are_refused_with_retry_after(setup: Setup) -> None:
    await setup.operators.create("sun", "a long enough secret", grants=["auditor"])
    token = await setup.operators.issue_token("sun")
    answers = [
        (await setup.client.get("/operators", headers=bearer(f"sbk_wrong-{n}"))).status_code for n in range(5)
    ]
    assert answers == [401, 401, 401, 401, 429]
    # Once refused, the address is refused whatever it presents, until the window ends.
    refused = await setup.client.get("/operators", headers=bearer(token))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_locking_ends_sessions_and_removing_forgets_everything(setup: Setup, redis: Redis) -> None:
    await setup.operators.create("zhou", "a long enough secret", grants=["auditor"])
    session = await setup.operators.start_session("zhou")
    token = await setup.operators.issue_token("zhou")
    await setup.operators.set_state("zhou", "locked")
    await setup.operators.set_state("zhou", "active")
    assert (await setup.client.get("/operators", headers=bearer(session))).status_code == 401  # ended
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 200  # unlocked
    await setup.operators.remove("zhou")
    assert (await setup.client.get("/operators", headers=bearer(token))).status_code == 401
    # Nothing of the operator is left: record, tokens, their hashes, sessions.
    assert [key async for key in redis.scan_iter(match="sb:{ops}:*")] == []


async def test_the_last_administrator_cannot_be_removed_locked_disabled_or_demoted(setup: Setup) -> None:
    await setup.operators.create("root", "a long enough secret", grants=["administrator"])
    await setup.operators.create("lms-admin", "a long enough secret", grants=["administrator@lms"])
    for change in (
        setup.operators.remove("root"),
        setup.operators.set_state("root", "locked"),
        setup.operators.set_state("root", "disabled"),
        setup.operators.revoke("root", "administrator"),
        setup.operators.revoke("root", "administrator", ["*"]),
    ):
        with pytest.raises(LastAdministratorError, match="last active administrator over every app"):
            await change
    assert (await setup.operators.get("root")).state == "active"
    # An administrator over one app only is not the one that can undo everything: removing it is fine.
    await setup.operators.remove("lms-admin")
    # With a second administrator over every app, the first may go; then the second is the last.
    await setup.operators.create("deputy", "a long enough secret", grants=["administrator"])
    await setup.operators.set_state("deputy", "locked")
    with pytest.raises(LastAdministratorError):
        await setup.operators.remove("root")  # a locked administrator cannot undo anything
    await setup.operators.set_state("deputy", "active")
    await setup.operators.remove("root")
    with pytest.raises(LastAdministratorError):
        await setup.operators.revoke("deputy", "administrator")
