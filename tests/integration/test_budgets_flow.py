"""A campaign budget through the whole flow in real processes: broker → worker (SMS through the local
gateway peer) → analytics service → ClickHouse, where the sends over budget are `over_budget` rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from analytics.connection import open_reader
from localparts.peers.server import PeerServer
from localparts.peers.sms_gateway import STATE, create_app
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.budgets import MICROS, Budget, BudgetStore
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

SECRET = "flow-gateway-secret"
PRICE = 0.05
RULES = """\
ruleset: budget-flow
rules:
  - id: reminders
    when: {type: [course.reminder]}
    then: {first_of: [sms]}
"""
PEOPLE = [f"f{n}" for n in range(5)]


def providers(url: str) -> str:
    return (
        "sms:\n  - name: gateway\n    kind: http-sms\n"
        f"    options: {{url: '{url}/sms', secret: '${{FLOW_SMS_SECRET}}', sender: CAMPUS, "
        f"cost_per_segment: {PRICE}}}\n"
    )


@pytest.mark.redis_cluster_too
async def test_a_campaign_budget_of_three_sms_sends_three_and_clickhouse_says_why_not_the_rest(
    settings: Settings, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_SMS_SECRET", SECRET)  # the worker inherits it; the file names it only
    await UserDirectory(redis).upsert([User(user_id=p, bindings={"sms": f"+86138000001{n:02d}"})
                                       for n, p in enumerate(PEOPLE)])
    await AppRegistry(redis).register("lms", {"sms"})
    budget = Budget(app="lms", campaign="autumn", period="month", limit_micros=round(3 * PRICE * MICROS))
    await BudgetStore(redis).set(budget)
    peer = create_app(SECRET)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    event = {
        "event_id": "autumn-1", "app": "lms", "type": "course.reminder", "template": "course_reminder",
        "category": "notice", "campaign": "autumn", "audience": {"user_ids": PEOPLE},
        "data": {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"},
    }
    async with PeerServer(peer) as server:
        path = tmp_path / "providers.yaml"
        path.write_text(providers(server.url))
        flow = settings.model_copy(update={
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules, "providers": path,
            "webhook_secret": SecretStr("flow-webhook-secret"),
        })
        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            await produce(flow, [json.dumps(event).encode()])
            await wait_caught_up(redis, 1, worker, service)
            assert worker.stop() == 0, worker.log_tail()
            client = open_reader(flow)
            try:
                rows = client.query(
                    "SELECT user_id, status, cost, reason FROM message_events FINAL "
                    "WHERE event_id = 'autumn-1' AND status IN ('sent', 'over_budget') ORDER BY user_id"
                ).result_rows
            finally:
                client.close()
        received = len(peer[STATE].received)

    statuses = [status for _, status, _, _ in rows]
    assert sorted(statuses) == ["over_budget"] * 2 + ["sent"] * 3 and received == 3
    assert sum(float(cost) for _, status, cost, _ in rows if status == "sent") == pytest.approx(3 * PRICE)
    reasons = {reason for _, status, _, reason in rows if status == "over_budget"}
    assert len(reasons) == 1
    assert reasons.pop().startswith("budget lms/autumn/month: spent 0.15 + 0.05 of 0.15")
    (standing,) = await BudgetStore(redis).standings([budget])
    assert standing.spent_micros == budget.limit_micros
