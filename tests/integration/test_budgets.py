"""Budgets against real Redis, the real rule engine, the local SMS gateway peer and the local SMTP
server: decide's and send's verdicts, cost counted once per send, periods taken from the real clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import Channel, ChannelDeps, RetryPolicy
from channels.costs import estimated_costs
from channels.email_smtp import SmtpEmail
from channels.links import LinkSigner
from channels.sms_gateway import HttpSmsGateway, HttpSmsGatewayOptions
from channels.templates import TemplateCatalog
from localparts import LocalSmtpServer
from localparts.peers.server import PeerServer
from localparts.peers.sms_gateway import STATE, create_app
from processors.decide import Decide
from processors.send import Send
from records.topics import Delivery, EventCore, message_id_for
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from settings import ROOT
from state.apps import AppRegistry
from state.budgets import MICROS, Budget, BudgetStore, period_window
from state.idempotency import SendLedger
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory

pytestmark = pytest.mark.redis_cluster_too  # the counting script keeps an app's keys in one slot

SECRET = "budget-gateway-secret"
SIGNER = LinkSigner(SecretStr("budget-test-link-secret-0123456789"), "https://notify.uni.example")
PRICE = 0.05  # per SMS segment: every reminder below is one segment
RULES = """\
ruleset: budgets
rules:
  - id: codes
    when: {category: [verification]}
    then: {first_of: [sms], bypass: [budget]}
  - id: spring-cheaper
    when: {campaign: [spring]}
    then:
      first_of: [sms, email]
      budget: {near: cheaper}
  - id: held
    when: {campaign: [held]}
    then:
      first_of: [sms]
      budget: {over: hold}
  - id: reminders
    when: {type: [course.reminder]}
    then: {first_of: [sms]}
"""
COURSE = {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}


def reminder(event_id: str, campaign: str) -> EventCore:
    return EventCore(
        event_id=event_id, app="lms", type="course.reminder", template="course_reminder",
        category="notice", campaign=campaign, data=COURSE,
    )


def delivery(event: EventCore, user_id: str) -> Delivery:
    message_id = message_id_for(event.app, event.event_id, user_id)
    return Delivery(message_id=message_id, user_id=user_id, event=event)


@dataclass
class Stages:
    decide: Decide
    send: Send
    budgets: BudgetStore
    sms_received: list[dict[str, Any]]
    channels: dict[str, Channel]


@pytest.fixture
async def stages(redis: Redis, smtp: LocalSmtpServer, tmp_path: Path) -> AsyncIterator[Stages]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    people = [
        User(user_id=f"s{n}", bindings={"sms": f"+86138000000{n:02d}", "email": f"s{n}@uni.example"})
        for n in range(8)
    ]
    await UserDirectory(redis).upsert([*people, User(user_id="smsonly", bindings={"sms": "+8613800000099"})])
    await AppRegistry(redis).register("lms", {"sms", "email"})
    peer = create_app(SECRET)
    async with PeerServer(peer) as server, httpx.AsyncClient() as http:
        options = HttpSmsGatewayOptions(
            url=server.url + "/sms", secret=SecretStr(SECRET), sender="CAMPUS", cost_per_segment=PRICE
        )
        channels: dict[str, Channel] = {
            "sms": HttpSmsGateway.from_options(options, ChannelDeps(http=http, redis=redis)),
            "email": SmtpEmail(smtp.host, smtp.port, "noreply@uni.example", timeout=5.0, links=SIGNER),
        }
        costs = estimated_costs(channels)
        assert costs == {"sms": PRICE, "email": 0.0}
        budgets = BudgetStore(redis)
        engine = AsyncRuleEngine(load_ruleset(rules))
        decide = Decide(
            UserDirectory(redis), AppRegistry(redis), engine, DeliverySchedule(redis),
            # Standings read fresh, so each test's spending shows at once (workers trust them 1 s).
            frozenset(channels), budgets=budgets, costs=costs, budget_standing_seconds=0,
        )
        send = Send(
            channels, TemplateCatalog(ROOT / "templates"), UserDirectory(redis),
            SendLedger(redis, ttl_seconds=3600), RetryPolicy(max_attempts=1), budgets=budgets, costs=costs,
        )
        try:
            yield Stages(decide, send, budgets, peer[STATE].received, channels)
        finally:
            engine.close()


def campaign_budget(campaign: str, limit: float, **fields: Any) -> Budget:
    return Budget(app="lms", campaign=campaign, period=fields.pop("period", "day"),
                  limit_micros=round(limit * MICROS), **fields)


async def spent(budgets: BudgetStore, budget: Budget) -> float:
    (standing,) = await budgets.standings([budget])
    return standing.spent_micros / MICROS


async def test_a_campaign_budget_of_three_sends_delivers_three_then_records_over_budget(
    stages: Stages,
) -> None:
    budget = campaign_budget("autumn", 3 * PRICE)
    await stages.budgets.set(budget)
    statuses: list[tuple[str, str]] = []
    for users in (["s0", "s1"], ["s2", "s3"], ["s4"]):
        event = reminder(f"a-{users[0]}", "autumn")
        decided = await stages.decide.handle([delivery(event, user) for user in users])
        sent = await stages.send.handle(decided.dispatches)
        statuses += [(r.user_id, r.status) for r in decided.receipts + sent.receipts if r.status != "decided"]
    assert sorted(statuses) == [
        ("s0", "sent"), ("s1", "sent"), ("s2", "sent"),
        ("s3", "over_budget"), ("s4", "over_budget"),
    ]
    assert len(stages.sms_received) == 3
    assert await spent(stages.budgets, budget) == pytest.approx(3 * PRICE)
    # Another campaign of the same app is under no budget.
    other = await stages.decide.handle([delivery(reminder("b-1", "winter"), "s5")])
    assert [d.channel for d in other.dispatches] == ["sms"]


async def test_over_budget_rows_say_why_at_decide_and_at_send(stages: Stages) -> None:
    budget = campaign_budget("autumn", PRICE)
    await stages.budgets.set(budget)
    decided = await stages.decide.handle([delivery(reminder("o-1", "autumn"), "s0")])
    await stages.budgets.add_spent(budget, budget.limit_micros)  # another worker spent it meanwhile
    at_send = await stages.send.handle(decided.dispatches)
    later = await stages.decide.handle([delivery(reminder("o-2", "autumn"), "s1")])
    key = period_window("day", "Asia/Shanghai", datetime.now(UTC)).key
    why = f"budget lms/autumn/day: spent 0.05 + 0.05 of 0.05 CNY ({key}) would pass its limit; dropped"
    for [row] in (at_send.receipts, later.receipts):
        assert (row.status, row.channel, row.rule_id, row.reason) == ("over_budget", "sms", "reminders", why)
    assert not stages.sms_received
    # Dropped at send is settled: a redelivery says the same row again and sends nothing.
    again = await stages.send.handle(decided.dispatches)
    assert again.receipts == at_send.receipts and again.already_sent == 1 and not stages.sms_received


async def test_near_the_limit_cheaper_switches_sms_to_email(stages: Stages, smtp: LocalSmtpServer) -> None:
    budget = campaign_budget("spring", 20 * PRICE)  # warns from 80 %: 16 SMS
    await stages.budgets.set(budget)
    event = reminder("c-1", "spring")
    calm = await stages.decide.handle([delivery(event, "s0")])
    assert [d.channel for d in calm.dispatches] == ["sms"]
    await stages.budgets.add_spent(budget, 16 * round(PRICE * MICROS))
    near = await stages.decide.handle([delivery(event, "s1"), delivery(event, "smsonly")])
    assert [(d.user_id, d.channel) for d in near.dispatches] == [("s1", "email"), ("smsonly", "sms")]
    [why] = [r.reason for r in near.receipts if r.user_id == "s1"]
    assert "is near its limit: cheaper channel email (0) instead of sms" in why
    sent = await stages.send.handle(near.dispatches)
    assert sorted((r.user_id, r.channel, r.status) for r in sent.receipts) == [
        ("s1", "email", "sent"), ("smsonly", "sms", "sent")
    ]
    assert [list(m.rcpt_tos) for m in smtp.messages] == [["s1@uni.example"]]
    # The email cost nothing; the SMS to the person without email counted.
    assert await spent(stages.budgets, budget) == pytest.approx(17 * PRICE)


async def test_a_redelivered_dispatch_counts_once(stages: Stages, redis: Redis) -> None:
    budget = campaign_budget("autumn", 10 * PRICE)
    await stages.budgets.set(budget)
    decided = await stages.decide.handle([delivery(reminder("r-1", "autumn"), "s0")])
    first = await stages.send.handle(decided.dispatches)
    again = await stages.send.handle(decided.dispatches * 2)  # redelivered twice
    assert again.already_sent == 2 and again.receipts == first.receipts * 2
    assert len(stages.sms_received) == 1
    assert await spent(stages.budgets, budget) == pytest.approx(PRICE)
    # The outcome's pipeline run again (a retry after a lost reply, NOSCRIPT's re-run) counts nothing.
    [dispatch] = decided.dispatches
    for _ in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            stages.budgets.count_into(pipe, [budget], (dispatch.message_id, "sms", 0), round(PRICE * MICROS))
            assert await pipe.execute() == [0]
    assert await spent(stages.budgets, budget) == pytest.approx(PRICE)


async def test_a_new_period_starts_from_nothing(stages: Stages) -> None:
    budget = campaign_budget("autumn", PRICE)
    await stages.budgets.set(budget)
    # Yesterday (by the budget's own calendar, from the real clock) spent everything.
    yesterday = period_window("day", budget.timezone, datetime.now(UTC) - timedelta(days=1))
    await stages.budgets.add_spent(budget, budget.limit_micros, yesterday)
    decided = await stages.decide.handle([delivery(reminder("p-1", "autumn"), "s0")])
    sent = await stages.send.handle(decided.dispatches)
    assert [r.status for r in sent.receipts] == ["sent"]
    (today,) = await stages.budgets.standings([budget])
    assert today.window.key != yesterday.key and today.spent_micros == budget.limit_micros


async def test_hold_defers_to_the_next_period_at_decide_and_at_send(stages: Stages, redis: Redis) -> None:
    budget = campaign_budget("held", 2 * PRICE)
    await stages.budgets.set(budget)
    event = reminder("h-1", "held")
    decided = await stages.decide.handle([delivery(event, "s0"), delivery(event, "s1")])
    await stages.budgets.add_spent(budget, budget.limit_micros)  # another worker spent it meanwhile
    at_send = await stages.send.handle(decided.dispatches)
    period_end = period_window("day", budget.timezone, datetime.now(UTC)).end
    assert period_end is not None
    assert [(d.user_id, until) for d, until in at_send.parked] == [("s0", period_end), ("s1", period_end)]
    assert {r.status for r in at_send.receipts} == {"deferred"} and not stages.sms_received
    later = await stages.decide.handle([delivery(event, "s2")])
    assert later.dispatches == [] and later.scheduled == 1
    [row] = later.receipts
    assert row.status == "deferred" and row.reason.endswith(f"held until {period_end.isoformat()}")
    due = await DeliverySchedule(redis).claim_due(now=period_end.timestamp() + 1)
    assert [d.user_id for d in due] == ["s2"]


async def test_two_workers_racing_overshoot_by_at_most_one_batch(stages: Stages, redis_url: str) -> None:
    """Send's re-check reads, then sends, then counts: two workers that read the same remainder both
    spend it. The overshoot is bounded by the other worker's batch (here 10 SMS against a limit of 10)."""
    from state.connection import open_redis

    budget = campaign_budget("race", 10 * PRICE)
    await stages.budgets.set(budget)
    event = reminder("race-1", "race")
    decided = await stages.decide.handle([delivery(event, f"s{n % 8}") for n in range(8)])
    # Twenty distinct sends of the campaign, ten per worker (steps make them distinct sends).
    batches = [
        [d.model_copy(update={"step": s}) for d in decided.dispatches[:5] for s in (10 * w, 10 * w + 1)]
        for w in (1, 2)
    ]
    other = open_redis(redis_url)
    try:
        second = Send(
            stages.channels, TemplateCatalog(ROOT / "templates"), UserDirectory(other),
            SendLedger(other, ttl_seconds=3600), RetryPolicy(max_attempts=1), budgets=BudgetStore(other),
            costs={"sms": PRICE},
        )
        results = await asyncio.gather(stages.send.handle(batches[0]), second.handle(batches[1]))
    finally:
        await other.aclose()
    sent = sum(r.status == "sent" for result in results for r in result.receipts)
    over = sum(r.status == "over_budget" for result in results for r in result.receipts)
    assert sent + over == 20 and 10 <= sent <= 20
    assert await spent(stages.budgets, budget) == pytest.approx(sent * PRICE)
    print(f"two workers, batches of 10, limit 10: {sent} sent, overshoot {sent - 10}")


async def test_a_rule_may_bypass_budgets_and_its_sends_still_count(stages: Stages) -> None:
    budget = Budget(app="lms", period="day", limit_micros=round(PRICE * MICROS))
    await stages.budgets.set(budget)
    await stages.budgets.add_spent(budget, budget.limit_micros)
    code = EventCore(
        event_id="code-1", app="lms", type="login", template="verification_code", category="verification",
        data={"code": "482913", "minutes": 5},
    )
    decided = await stages.decide.handle([delivery(code, "s0")])
    sent = await stages.send.handle(decided.dispatches)
    assert [r.status for r in sent.receipts] == ["sent"] and len(stages.sms_received) == 1
    assert await spent(stages.budgets, budget) == pytest.approx(2 * PRICE)  # over the limit, counted
