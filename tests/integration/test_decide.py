"""Decide against real Redis and the real rule engine with the default rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, time, timedelta

import pytest
from redis.asyncio import Redis

from processors.decide import Decide
from records.plan import BestTime, DeliveryPlan, FallbackStep, Pacing, QuietHours
from records.topics import Delivery, Dispatch, EventCore, message_id_for
from rules.engine import AsyncRuleEngine, Decision, DecisionRequest
from rules.loader import load_ruleset
from settings import ROOT
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.engagement import EngagementHistory
from state.offline import OfflineKeep
from state.pacing import Pacer
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory
from tests.integration.moments import SHANGHAI, next_local, on_local_clock

# Times come from the real clock (Redis keeps its own): 16:00 in Shanghai, the next one to come.
NOW = next_local(16, 0)
ALERT = EventCore(
    event_id="a1",
    app="security",
    type="security.alert",
    template="security_alert",
    category="alert",
    priority="urgent",
    data={"headline": "h", "action": "a"},
)


def delivery(user_id: str, event: EventCore = ALERT, **extra: object) -> Delivery:
    return Delivery.model_validate(
        {
            "message_id": message_id_for(event.app, event.event_id, user_id),
            "user_id": user_id,
            "event": event,
            **extra,
        }
    )


@pytest.fixture
async def decide(redis: Redis) -> AsyncIterator[Decide]:
    await UserDirectory(redis).upsert(
        [
            User(user_id="both", bindings={"inbox": "both", "email": "both@uni.example"}),
            User(user_id="smsonly", bindings={"sms": "+8613800000000"}),
        ]
    )
    await AppRegistry(redis).register("security", {"inbox", "email"})
    engine = AsyncRuleEngine(load_ruleset(ROOT / "rules" / "default.yaml"))
    yield Decide(
        UserDirectory(redis),
        AppRegistry(redis),
        engine,
        DeliverySchedule(redis),
        frozenset({"inbox", "email"}),
    )
    engine.close()


async def test_alert_goes_to_every_bound_channel_with_rule_and_version(decide: Decide) -> None:
    result = await decide.handle([delivery("both")], now=NOW)
    assert sorted((d.channel, d.address) for d in result.dispatches) == [
        ("email", "both@uni.example"),
        ("inbox", "both"),
    ]
    assert {r.status for r in result.receipts} == {"decided"}
    assert {(r.rule_id, bool(r.rule_version)) for r in result.receipts} == {("security-alerts", True)}


async def test_unreachable_and_unknown_recipients_are_suppressed_with_reasons(decide: Decide) -> None:
    result = await decide.handle([delivery("smsonly"), delivery("ghost")], now=NOW)
    assert result.dispatches == []
    reasons = {r.user_id: (r.status, r.reason) for r in result.receipts}
    assert reasons["ghost"] == ("suppressed", "unknown user")
    assert reasons["smsonly"][0] == "suppressed" and reasons["smsonly"][1]


async def test_raw_addresses_and_scheduled_deliveries(decide: Decide, redis: Redis) -> None:
    later = ALERT.model_copy(update={"event_id": "a2", "send_at": NOW + timedelta(hours=1)})
    result = await decide.handle(
        [delivery("addr:x", addresses={"email": "x@ext.example"}), delivery("both", later)],
        now=NOW,
    )
    assert [(d.user_id, d.channel) for d in result.dispatches] == [("addr:x", "email")]
    assert result.scheduled == 1
    assert [r.status for r in result.receipts if r.user_id == "both"] == ["deferred"]
    due = await DeliverySchedule(redis).claim_due(now=(NOW + timedelta(hours=1, seconds=1)).timestamp())
    assert [d.event.event_id for d in due] == ["a2"]


# The plan, executed: a stand-in engine returns a fixed plan, so each part of it can be driven alone.


class PlanEngine:
    """Chooses the first of `channels` the recipient (after consent) still has, with a fixed plan."""

    def __init__(self, plan: DeliveryPlan, channels: tuple[str, ...] = ("sms", "email")) -> None:
        self.plan, self.channels = plan, channels
        self.requests: list[DecisionRequest] = []
        self.template: str | None = None

    async def decide(self, requests: list[DecisionRequest]) -> list[Decision]:
        self.requests += requests
        decisions: list[Decision] = []
        for request in requests:
            usable = [c for c in self.channels if c in request.user.bindings]
            chosen = tuple((c, request.user.bindings[c]) for c in usable[:1])
            reasons = ("rule promo matched",) + (() if chosen else ("no channel left to send on",))
            decisions.append(Decision(chosen, "promo", "v7", not chosen, reasons, self.plan, self.template))
        return decisions


class Arming:
    def __init__(self) -> None:
        self.armed: list[tuple[Dispatch, dict[str, str] | None, datetime]] = []
        self.calls = 0

    async def arm_many(self, items: Sequence[tuple[Dispatch, dict[str, str] | None, datetime]]) -> list[bool]:
        self.armed.extend(items)
        self.calls += 1
        return [True] * len(items)


PROMO = EventCore(
    event_id="p1", app="shop", type="promo", template="promo", category="marketing", campaign="bf"
)
# 23:00 in Shanghai (quiet), 10:00 or 11:00 in New York (not).
EVENING = next_local(23, 0)
NIGHT = QuietHours(start=time(22), end=time(7))


@pytest.fixture
async def people(redis: Redis) -> UserDirectory:
    directory = UserDirectory(redis)
    await directory.upsert(
        [
            User(
                user_id="sh", timezone="Asia/Shanghai", bindings={"sms": "+8613800000001", "email": "sh@x.cn"}
            ),
            User(user_id="ny", timezone="America/New_York", bindings={"sms": "+12125550100"}),
            User(user_id="off", bindings={"inbox": "off"}),
        ]
    )
    await AppRegistry(redis).register("shop", {"sms", "email", "push"})
    return directory


def planned(redis: Redis, engine: PlanEngine, **parts: object) -> Decide:
    directory = UserDirectory(redis)
    return Decide(
        directory,
        AppRegistry(redis),
        engine,  # type: ignore[arg-type]
        DeliverySchedule(redis),
        frozenset({"sms", "email", "push"}),
        consent=ConsentStore(redis, opt_in=()),
        engagement=EngagementHistory(redis),
        pacer=Pacer(redis),
        offline=OfflineKeep(redis),
        **parts,  # type: ignore[arg-type]
    )


def promo(user_id: str, event: EventCore = PROMO) -> Delivery:
    return delivery(user_id, event)


async def test_consent_takes_refused_channels_out_before_the_rule_chooses(
    redis: Redis, people: UserDirectory
) -> None:
    consent = ConsentStore(redis, opt_in=())
    await consent.unsubscribe("sh", category="marketing", channel="sms", source="reply TD")
    await consent.blacklist("ny", reason="complaint")
    engine = PlanEngine(DeliveryPlan())
    result = await planned(redis, engine).handle([promo("sh"), promo("ny")], now=EVENING)
    assert [(d.user_id, d.channel) for d in result.dispatches] == [("sh", "email")]
    assert [r.user.user_id for r in engine.requests] == ["sh"]  # a user refused everywhere is not decided
    assert "sms" not in engine.requests[0].user.bindings
    reasons = {r.user_id: (r.status, r.reason) for r in result.receipts}
    assert reasons["sh"][0] == "decided" and reasons["sh"][1].startswith("sms: unsubscribed from marketing")
    assert reasons["ny"] == ("suppressed", "consent: sms: blacklisted: complaint")


async def test_quiet_hours_defer_in_each_users_own_timezone_and_let_it_through_at_the_end(
    redis: Redis, people: UserDirectory
) -> None:
    decide = planned(redis, PlanEngine(DeliveryPlan(quiet_hours=NIGHT)))
    result = await decide.handle([promo("sh"), promo("ny")], now=EVENING)
    assert [d.user_id for d in result.dispatches] == ["ny"]
    [deferred] = [r for r in result.receipts if r.status == "deferred"]
    morning = EVENING + timedelta(hours=8)  # 07:00 in Shanghai
    assert deferred.user_id == "sh" and deferred.rule_id == "promo"
    assert deferred.reason == f"quiet hours 22:00-07:00 Asia/Shanghai: deferred until {morning.isoformat()}"
    assert await DeliverySchedule(redis).claim_due(now=morning.timestamp() - 1) == []
    [due] = await DeliverySchedule(redis).claim_due(now=morning.timestamp())
    again = await decide.handle([due], now=morning)
    assert [(d.user_id, d.channel) for d in again.dispatches] == [("sh", "sms")]
    assert again.scheduled == 0


async def test_quiet_hours_drop_is_a_suppression_with_the_window(redis: Redis, people: UserDirectory) -> None:
    plan = DeliveryPlan(quiet_hours=NIGHT.model_copy(update={"action": "drop"}), variant="B")
    result = await planned(redis, PlanEngine(plan)).handle([promo("sh")], now=EVENING)
    [receipt] = result.receipts
    assert (receipt.status, receipt.variant) == ("suppressed", "B")
    assert receipt.reason == "quiet hours 22:00-07:00 Asia/Shanghai: dropped"


async def test_bypass_skips_quiet_hours(redis: Redis, people: UserDirectory) -> None:
    plan = DeliveryPlan(quiet_hours=NIGHT, bypass=frozenset({"quiet_hours"}))
    result = await planned(redis, PlanEngine(plan)).handle([promo("sh")], now=EVENING)
    assert [d.user_id for d in result.dispatches] == ["sh"]


async def test_best_time_defers_once_to_the_users_best_hour(redis: Redis, people: UserDirectory) -> None:
    history = EngagementHistory(redis)
    morning = next_local(7, 30)  # in Shanghai
    day = morning.astimezone(SHANGHAI).date()
    at_nine = on_local_clock(day - timedelta(days=3), 9, 10)  # three days before, from 09:10 on
    await history.record_many([("sh", "clicked", at_nine + timedelta(days=d)) for d in range(3)])
    decide = planned(redis, PlanEngine(DeliveryPlan(best_time=BestTime(within=timedelta(hours=12)))))
    result = await decide.handle([promo("sh")], now=morning)
    nine = on_local_clock(day, 9, 0)
    assert result.dispatches == [] and result.scheduled == 1
    assert result.receipts[0].reason == f"best send time 09:00: deferred until {nine.isoformat()}"
    # By nine the history says ten o'clock, but the chosen time stands: sent, not deferred again.
    await history.record_many([("sh", "clicked", at_nine + timedelta(days=d, hours=1)) for d in range(5)])
    again = await decide.handle([promo("sh")], now=nine)
    assert [d.user_id for d in again.dispatches] == ["sh"] and again.scheduled == 0


async def test_pacing_spreads_deliveries_over_slots_and_each_keeps_its_own(
    redis: Redis, people: UserDirectory
) -> None:
    plan = DeliveryPlan(pacing=Pacing(per_second=2, key="campaign:bf"))
    decide = planned(redis, PlanEngine(plan))
    events = [PROMO.model_copy(update={"event_id": f"p{i}"}) for i in range(4)]
    result = await decide.handle([promo("sh", e) for e in events], now=NOW)
    # The first goes now; the others are decided once and wait, as dispatches, for their slots.
    assert len(result.dispatches) == 1 and result.scheduled == 0
    assert [slot for _, slot in result.paced] == [NOW + timedelta(milliseconds=500 * i) for i in (1, 2, 3)]
    assert [d.event.event_id for d, _ in result.paced] == ["p1", "p2", "p3"]
    deferred = [r.reason for r in result.receipts if r.status == "deferred"]
    assert deferred == [
        f"pacing campaign:bf at 2/s: deferred until {(NOW + timedelta(milliseconds=500 * i)).isoformat()}"
        for i in (1, 2, 3)
    ]
    # A redelivered delivery keeps its slot rather than taking a new one.
    again = await decide.handle([promo("sh", events[1])], now=NOW + timedelta(milliseconds=100))
    assert [slot for _, slot in again.paced] == [NOW + timedelta(milliseconds=500)]


async def test_an_unreachable_user_is_kept_offline_and_decided_again_once_reachable(
    redis: Redis, people: UserDirectory
) -> None:
    plan = DeliveryPlan(keep_offline=timedelta(days=3), variant="A")
    decide = planned(redis, PlanEngine(plan))
    result = await decide.handle([promo("off")], now=NOW)
    [kept] = result.receipts
    assert (kept.status, kept.variant, result.kept_offline) == ("deferred", "A", 1)
    assert kept.reason.startswith(f"kept offline until {(NOW + timedelta(days=3)).isoformat()}")
    offline = OfflineKeep(redis)
    assert await offline.due_for_release(NOW + timedelta(hours=1), people) == ([], [])
    await people.upsert([User(user_id="off", bindings={"inbox": "off", "sms": "+8613800000009"})])
    [released], [] = await offline.due_for_release(NOW + timedelta(hours=1), people)
    again = await decide.handle([released], now=NOW + timedelta(hours=1))
    assert [(d.user_id, d.channel) for d in again.dispatches] == [("off", "sms")]


async def test_without_keep_offline_an_unreachable_user_is_suppressed(
    redis: Redis, people: UserDirectory
) -> None:
    result = await planned(redis, PlanEngine(DeliveryPlan())).handle([promo("off")], now=NOW)
    assert [(r.status, r.reason) for r in result.receipts] == [
        ("suppressed", "rule promo matched; no channel left to send on")
    ]


async def test_variant_template_activity_and_fallback_reach_dispatches_and_receipts(
    redis: Redis, people: UserDirectory
) -> None:
    step = FallbackStep(step=1, after=timedelta(minutes=5), condition="not_delivered", channels=("email",))
    engine = PlanEngine(DeliveryPlan(variant="B", fallback=(step,)))
    engine.template = "promo_short"
    seen = NOW - timedelta(hours=23)
    await EngagementHistory(redis).record_many([("sh", "read", seen)])
    arming = Arming()
    result = await planned(redis, engine, fallback=arming).handle([promo("sh")], now=NOW)
    [dispatch] = result.dispatches
    assert (dispatch.template, dispatch.plan.variant, dispatch.step) == ("promo_short", "B", 0)
    assert [(r.status, r.variant, r.template) for r in result.receipts] == [("decided", "B", "promo_short")]
    assert (engine.requests[0].now, engine.requests[0].last_active_at) == (NOW, seen)
    assert arming.armed == [(dispatch, None, NOW)] and arming.calls == 1  # one round trip per batch


async def test_default_rules_plans_are_carried_out(redis: Redis, people: UserDirectory) -> None:
    """The shipped rules with the real engine: night drop for canteen offers, night defer for notices."""
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    await people.upsert([User(user_id="stu", timezone="Asia/Shanghai", bindings={"inbox": "stu"})])
    engine = AsyncRuleEngine(load_ruleset(ROOT / "rules" / "default.yaml"))
    directory = UserDirectory(redis)
    decide = Decide(
        directory,
        AppRegistry(redis),
        engine,
        DeliverySchedule(redis),
        frozenset({"inbox", "email"}),
        consent=ConsentStore(redis, opt_in=()),
        engagement=EngagementHistory(redis),
        pacer=Pacer(redis),
        offline=OfflineKeep(redis),
    )
    try:
        canteen = EventCore(
            event_id="c1",
            app="campus",
            type="canteen.special",
            template="campus_notice",
            category="marketing",
        )
        notice = EventCore(
            event_id="n1", app="campus", type="campus.notice", template="campus_notice", category="notice"
        )
        result = await decide.handle([delivery("stu", canteen), delivery("stu", notice)], now=EVENING)
        assert result.dispatches == []
        statuses = {r.event_id: (r.status, r.rule_id, r.reason) for r in result.receipts}
        assert statuses["c1"][:2] == ("suppressed", "canteen-specials")
        assert statuses["c1"][2] == "quiet hours 22:00-07:00 Asia/Shanghai: dropped"
        assert statuses["n1"][:2] == ("deferred", "campus-notices")
        morning = EVENING + timedelta(hours=8)  # 07:00 in Shanghai
        [due] = await DeliverySchedule(redis).claim_due(now=morning.timestamp())
        again = await decide.handle([due], now=morning)
        [sent] = again.dispatches
        assert (sent.channel, sent.plan.pacing is not None, sent.plan.quiet_hours is not None) == (
            "inbox",
            True,
            True,
        )
    finally:
        engine.close()
