"""`switchboard budgets` against the real local parts: set, list, show, remove with spending, every change
an audit record on the broker, and every mistake one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from typer.testing import CliRunner

from app import cli
from localparts import LocalParts
from state.budgets import BudgetStore, period_window


@pytest.fixture
def env(local_parts: LocalParts, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SWITCHBOARD_REDIS": redis_url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
    }


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, ["budgets", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def audits(env: dict[str, str], expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        env["SWITCHBOARD_TOPIC_PREFIX"] + "audit", auto_offset_reset="earliest", group_id=None,
        bootstrap_servers=env["SWITCHBOARD_KAFKA"].removeprefix("kafka://"),
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=500)
            found += [json.loads(r.value) for records in batches.values() for r in records]
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


async def test_budgets_from_the_command_line(env: dict[str, str], redis: Redis) -> None:
    month = period_window("month", "Asia/Shanghai", datetime.now(UTC)).key
    [line] = await asyncio.to_thread(run, ["set", "lms", "month", "100", "--campaign", "spring"], env)
    assert line.split() == ["lms/spring/month", month, "0/100", "CNY", "remaining", "100", "ok"]
    budget = await BudgetStore(redis).get("lms", "spring", "month")
    assert budget is not None
    await BudgetStore(redis).add_spent(budget, 85_000_000)
    [listed] = await asyncio.to_thread(run, ["list"], env)
    assert listed.split() == ["lms/spring/month", month, "85/100", "CNY", "remaining", "15", "near"]
    shown = dict(line.split(maxsplit=1) for line in await asyncio.to_thread(
        run, ["show", "lms", "month", "--campaign", "spring"], env
    ))
    assert (shown["spent"], shown["remaining"], shown["state"], shown["timezone"]) == (
        "85.0", "15.0", "near", "Asia/Shanghai"
    )
    [removed] = await asyncio.to_thread(run, ["remove", "lms", "month", "--campaign", "spring"], env)
    assert removed == f"budget lms/spring/month removed (its {month} period had spent 85 CNY)"
    assert await BudgetStore(redis).all() == []
    records = await audits(env, 2)
    assert [(r["action"], r["target"], r["app"], r["source"], r["actor_kind"]) for r in records] == [
        ("budget.set", "lms/spring/month", "lms", "cli", "system"),
        ("budget.remove", "lms/spring/month", "lms", "cli", "system"),
    ]
    assert records[0]["before"] is None and records[0]["after"]["limit_micros"] == 100_000_000


def test_a_change_is_refused_before_anything_changes_when_the_broker_is_down(env: dict[str, str]) -> None:
    [line] = run(["set", "lms", "day", "5"], {**env, "SWITCHBOARD_KAFKA": "kafka://127.0.0.1:9"}, status=1)
    assert line.startswith("error: ") and line.endswith("changes are audited, so nothing was changed")
    assert run(["list"], env)[0].startswith("no budgets")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "lms", "month", "100", "--timezone", "Mars/Olympus"], "error: timezone: unknown timezone"),
        (["set", "lms", "fortnight", "100"], "error: period: Input should be 'day', 'week', 'month'"),
        (["set", "lms", "day", "0"], "error: limit: must be at least 0.000001 (a micro-unit), got 0"),
        (["show", "lms", "day"], "error: no day budget for app lms; `switchboard budgets list` shows them"),
    ],
)
def test_a_mistake_is_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    [line] = run(args, env, status=1)
    assert line.startswith(message), line


EXPLAINED = """\
ruleset: explained
rules:
  - id: spring
    when: {campaign: [spring]}
    then: {first_of: [sms, email], budget: {near: cheaper}}
"""


async def test_rules_explain_shows_the_budget_verdict(
    env: dict[str, str], redis: Redis, tmp_path: Path
) -> None:
    from rules.cli import rules_cli
    from state.apps import AppRegistry
    from state.budgets import Budget
    from state.users import User, UserDirectory

    rules = tmp_path / "rules.yaml"
    rules.write_text(EXPLAINED)
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "sms:\n  - name: gateway\n    kind: http-sms\n    cost_per_message: 0.05\n"
        "    options: {url: 'http://127.0.0.1:9/sms', secret: '${NO_SUCH_SECRET}', sender: CAMPUS}\n"
    )
    person = User(user_id="s1", bindings={"sms": "+8613800000001", "email": "s1@x"})
    await UserDirectory(redis).upsert([person])
    await AppRegistry(redis).register("lms", {"sms", "email"})
    budget = Budget(app="lms", campaign="spring", period="day", limit_micros=1_000_000)
    await BudgetStore(redis).set(budget)
    await BudgetStore(redis).add_spent(budget, 900_000)
    event = '{"app": "lms", "type": "promo", "category": "marketing", "template": "course_reminder", ' \
            '"campaign": "spring"}'
    result = await asyncio.to_thread(
        CliRunner().invoke, rules_cli, ["explain", "--event", event, "--user", "s1", "--rules", str(rules)],
        env={**env, "SWITCHBOARD_PROVIDERS": str(providers)},
    )
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "send on  sms (+8613800000001)" in lines
    [verdict] = [line for line in lines if line.startswith("budget   ") and line[9] != " "]
    assert verdict.startswith("budget   sent on email instead: budget lms/spring/day: spent 0.9 + 0.05 of 1")
    assert "budget       over it: drop; near it: cheaper" in lines
