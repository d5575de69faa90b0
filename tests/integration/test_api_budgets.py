"""The budgets API on real Redis: operators set, list, show and remove budgets on the apps their roles
cover, see what the current period spent, and every change is an audit record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from channels.templates import TemplateCatalog
from settings import ROOT
from state.apps import AppRegistry
from state.budgets import Budget, BudgetStore, period_window
from state.inbox import Inbox
from state.operators import OperatorStore
from state.users import UserDirectory
from tests.integration.test_api_support import RecordingPublisher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SPRING = {"app": "lms", "campaign": "spring", "period": "month", "limit": 120.5, "warn_at": 0.9}


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: RecordingPublisher
    budgets: BudgetStore
    owner: dict[str, str]
    analyst: dict[str, str]
    app_key: dict[str, str]


@pytest.fixture
async def setup(redis: Redis) -> AsyncIterator[Setup]:
    apps = AppRegistry(redis)
    key = await apps.register("lms", {"sms", "email"})
    await apps.register("bursar", {"email"})
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("wang", "correct horse battery", grants=["app_owner@lms"])
    await operators.create("zhao", "correct horse battery", grants=["analyst"])
    publisher, budgets = RecordingPublisher(), BudgetStore(redis)
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=UserDirectory(redis),
        access=Access(apps, operators), budgets=budgets,
    )
    api = create_api(deps)
    transport = httpx.ASGITransport(app=api, client=("192.0.2.7", 4000))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        yield Setup(
            client, publisher, budgets,
            bearer(await operators.issue_token("wang")), bearer(await operators.issue_token("zhao")),
            bearer(key),
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_app_owner_sets_a_budget_and_everyone_allowed_sees_its_spending(setup: Setup) -> None:
    created = await setup.client.put("/v1/budgets", json=SPRING, headers=setup.owner)
    assert created.status_code == 200, created.text
    month = period_window("month", "Asia/Shanghai", datetime.now(UTC))
    assert created.json() | {"period_start": None, "period_end": None} == {
        "id": "lms/spring/month", "app": "lms", "campaign": "spring", "period": "month", "limit": 120.5,
        "limit_micros": 120_500_000, "currency": "CNY", "warn_at": 0.9, "timezone": "Asia/Shanghai",
        "period_key": month.key, "period_start": None, "period_end": None, "spent": 0.0, "remaining": 120.5,
        "state": "ok",
    }
    budget = await setup.budgets.get("lms", "spring", "month")
    assert isinstance(budget, Budget)
    await setup.budgets.add_spent(budget, 110_000_000)
    shown = await setup.client.get("/v1/budgets/lms/month?campaign=spring", headers=setup.analyst)
    assert shown.status_code == 200
    assert (shown.json()["spent"], shown.json()["remaining"], shown.json()["state"]) == (110.0, 10.5, "near")
    listed = await setup.client.get("/v1/budgets", headers=setup.analyst)
    assert [b["id"] for b in listed.json()] == ["lms/spring/month"]

    [audit] = setup.publisher.audits
    assert (audit.actor, audit.actor_kind, audit.action, audit.target, audit.app, audit.source) == (
        "wang", "operator", "budget.set", "lms/spring/month", "lms", "192.0.2.7"
    )
    assert audit.before is None and isinstance(audit.after, dict)
    assert audit.after["limit_micros"] == 120_500_000

    changed = await setup.client.put("/v1/budgets", json=SPRING | {"limit": 200}, headers=setup.owner)
    assert changed.json()["spent"] == 110.0  # the same period's counter: replacing keeps what was spent
    assert isinstance(setup.publisher.audits[-1].before, dict)
    assert setup.publisher.audits[-1].before["limit_micros"] == 120_500_000

    removed = await setup.client.delete("/v1/budgets/lms/month?campaign=spring", headers=setup.owner)
    assert removed.status_code == 204
    last = setup.publisher.audits[-1]
    assert (last.action, last.after) == ("budget.remove", None)
    assert last.reason == f"its {month.key} period had spent 110"
    gone = await setup.client.get("/v1/budgets/lms/month?campaign=spring", headers=setup.owner)
    assert gone.status_code == 404
    assert gone.json() == {"detail": "no month budget for app 'lms' campaign 'spring'"}


async def test_permissions_are_checked_on_the_budgets_app(setup: Setup) -> None:
    other = await setup.client.put("/v1/budgets", json=SPRING | {"app": "bursar"}, headers=setup.owner)
    assert other.status_code == 403
    assert other.json()["detail"] == "operator 'wang' lacks permission budgets:manage on app 'bursar'"
    analyst = await setup.client.put("/v1/budgets", json=SPRING, headers=setup.analyst)
    assert analyst.status_code == 403 and "budgets:manage" in analyst.json()["detail"]
    assert (await setup.client.get("/v1/budgets", headers=setup.app_key)).status_code == 403
    assert (await setup.client.get("/v1/budgets")).status_code == 401
    await setup.budgets.set(Budget(app="bursar", period="day", limit_micros=1))
    # wang reads lms only: bursar's budget is not listed, and asking for it by name is refused.
    assert (await setup.client.get("/v1/budgets", headers=setup.owner)).json() == []
    assert (await setup.client.get("/v1/budgets?app=bursar", headers=setup.owner)).status_code == 403
    assert setup.publisher.audits == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone 'Mars/Olympus'"),
        ({"period": "fortnight"}, "period", "Input should be 'day', 'week', 'month' or 'total'"),
        ({"limit": 0}, "limit", "greater than 0"),
        ({"limt": 5}, "limt", "Extra inputs are not permitted"),
    ],
)
async def test_a_bad_budget_is_a_422_naming_the_field(
    setup: Setup, change: dict[str, object], field: str, message: str
) -> None:
    answer = await setup.client.put("/v1/budgets", json=SPRING | change, headers=setup.owner)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"][-1] == field and message in error["msg"], error
