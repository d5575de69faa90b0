"""Support for the approvals tests (no tests here): operators with roles, a policy, a marketing event."""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher
from redis.asyncio import Redis

from state.approval_policies import ApprovalPolicy, PolicyStore
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.operators import OperatorStore
from state.users import User, UserDirectory

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery staple"
CUSTOMERS = [f"c{n}" for n in range(3)]
# name → (grants, user id): ann and bo approve, sam sends (and holds the approver role too, so that
# only the distinct-approver rule stops him approving his own message).
OPERATORS: dict[str, tuple[list[str], str]] = {
    "ann": (["approver@shop,survey", "administrator@shop"], "op-ann"),
    "bo": (["administrator@shop"], "op-bo"),
    "sam": (["sender@shop", "approver@shop"], "op-sam"),
}
TWO_LEVELS = ApprovalPolicy(
    name="marketing-review",
    apps=["shop"],
    categories=["marketing"],
    audience_over=1000,
    levels=["approver", "administrator"],
)


async def seed(redis: Redis, policies: list[ApprovalPolicy] | None = None) -> dict[str, str]:
    """Apps, people, operators and policies; returns each operator's token."""
    registry = AppRegistry(redis)
    await registry.register("shop", {"inbox", "email"})
    await registry.register("survey", {"inbox"})
    await registry.register("switchboard", {"inbox", "email"})
    people = [User(user_id=c, tags=("customers",), bindings={"inbox": c}) for c in CUSTOMERS]
    people += [User(user_id=uid, bindings={"inbox": uid}) for _, uid in OPERATORS.values()]
    await UserDirectory(redis).upsert(people)
    consent = ConsentStore(redis)
    for customer in CUSTOMERS:  # marketing reaches only those who opted in (state/consent.py)
        await consent.opt_in(customer, category="marketing", source="shop sign-up form")
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    tokens = {}
    for name, (grants, user_id) in OPERATORS.items():
        await operators.create(name, PASSWORD, grants=grants, user_id=user_id)
        tokens[name] = await operators.issue_token(name)
    for policy in policies if policies is not None else [TWO_LEVELS]:
        await PolicyStore(redis).put(policy)
    return tokens


def promotion(event_id: str, app: str = "shop", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "app": app,
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "marketing",
        "campaign": "winter-sale",
        "audience": {"tags": ["customers"]},
        "data": {"headline": "Winter sale", "body": "Everything half price this week"},
    }
    event.update(overrides)
    return event


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
