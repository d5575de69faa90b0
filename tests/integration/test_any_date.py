"""State that expires, driven at an injected now a year behind and a year ahead of the real one.

Redis expires keys on its own clock. Code handed a `now` (a replay, a simulation, a test) must count
every expiry from that same now: an absolute expiry computed from a now a year back is dropped at
once, one computed from a year ahead outlives its purpose by a year. Each test checks that the state
lasts exactly as long as it should from the injected now, and is gone or handed out again when it
should be, measured on the injected clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis

from channels.base import RetryPolicy
from channels.inbox import InboxChannel
from channels.templates import TemplateCatalog
from processors.decide import Decide
from processors.send import Send
from records.plan import BestTime, CapLimit, DeliveryPlan, FallbackStep, FrequencyCap
from records.topics import Delivery, Dispatch, EventCore, message_id_for
from settings import ROOT
from state.apps import AppRegistry
from state.caps import FrequencyCaps
from state.consent import ConsentStore
from state.dedup import EventDedup
from state.engagement import CHOSEN_KEY, EngagementHistory
from state.fallback import FallbackSchedule, chain_shard
from state.idempotency import SENT_KEY, SendLedger
from state.inbox import Inbox
from state.offline import OfflineKeep, deadline_key
from state.pacing import REMEMBER_US, Pacer, SlotRequest, pace_keys
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory
from tests.integration.moments import SHANGHAI, next_local, now, on_local_clock
from tests.integration.test_decide import PlanEngine

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

YEAR = timedelta(days=365)
# What the test itself may spend between writing a key and reading its time-to-live.
SLACK = timedelta(seconds=5)

NOTICE = EventCore(
    event_id="n1",
    app="campus",
    type="campus.notice",
    template="campus_notice",
    category="notice",
    data={"headline": "Snow day", "body": "Classes are cancelled."},
)
PROMO = EventCore(event_id="p1", app="shop", type="promo", template="promo", category="marketing")


@pytest.fixture(params=[-YEAR, YEAR], ids=["a-year-ago", "a-year-ahead"])
def injected(request: pytest.FixtureRequest) -> datetime:
    """The now handed to the code: the real one moved a year back or ahead."""
    shift: timedelta = request.param
    return now() + shift


async def assert_lasts(redis: Redis, key: str, expected: timedelta) -> None:
    """`key` is kept `expected` from the write (give or take the test's own running time)."""
    ms = int(await redis.pttl(key))
    assert ms >= 0, f"{key} is gone or kept forever (PTTL {ms}), not kept {expected}"
    left = timedelta(milliseconds=ms)
    assert expected - SLACK < left <= expected, f"{key} is kept {left}, not {expected}"


def delivery(user_id: str, event: EventCore = NOTICE) -> Delivery:
    message_id = message_id_for(event.app, event.event_id, user_id)
    return Delivery(message_id=message_id, user_id=user_id, event=event)


def dispatch(message_id: str, plan: DeliveryPlan | None = None) -> Dispatch:
    return Dispatch(
        message_id=message_id,
        user_id="s1",
        channel="inbox",
        address="s1",
        event=NOTICE,
        rule_id="campus-notices",
        rule_version="v1",
        plan=plan or DeliveryPlan(),
    )


async def test_a_best_time_chosen_at_an_injected_now_stands_until_it_is_used(
    redis: Redis, injected: datetime
) -> None:
    await UserDirectory(redis).upsert(
        [User(user_id="sh", timezone="Asia/Shanghai", bindings={"sms": "+8613800000001"})]
    )
    await AppRegistry(redis).register("shop", {"sms"})
    morning = next_local(7, 30, after=injected)  # 07:30 in Shanghai
    day = morning.astimezone(SHANGHAI).date()
    history = EngagementHistory(redis)
    at_nine = on_local_clock(day - timedelta(days=3), 9, 10)
    await history.record_many([("sh", "clicked", at_nine + timedelta(days=d)) for d in range(3)])
    decide = Decide(
        UserDirectory(redis),
        AppRegistry(redis),
        PlanEngine(DeliveryPlan(best_time=BestTime(within=timedelta(hours=12)))),  # type: ignore[arg-type]
        DeliverySchedule(redis),
        frozenset({"sms"}),
        consent=ConsentStore(redis, opt_in=()),
        engagement=history,
    )
    first = await decide.handle([delivery("sh", PROMO)], now=morning)
    nine = on_local_clock(day, 9, 0)
    assert first.dispatches == [] and first.scheduled == 1
    assert first.receipts[0].reason == f"best send time 09:00: deferred until {nine.isoformat()}"
    # Kept two days past the chosen moment, counted from the decision's now.
    chosen = CHOSEN_KEY.format(delivery("sh", PROMO).message_id)
    await assert_lasts(redis, chosen, nine + timedelta(days=2) - morning)
    # By nine the history says ten o'clock, but the chosen time stands: sent, not deferred again.
    await history.record_many([("sh", "clicked", at_nine + timedelta(days=d, hours=1)) for d in range(5)])
    again = await decide.handle([delivery("sh", PROMO)], now=nine)
    assert [d.user_id for d in again.dispatches] == ["sh"] and again.scheduled == 0


async def test_a_chosen_time_is_forgotten_its_keep_after_that_time(redis: Redis, injected: datetime) -> None:
    history = EngagementHistory(redis)
    keep = timedelta(milliseconds=300)
    await history.choose_times({"m1": injected, "m2": injected - timedelta(days=3)}, keep=keep, now=injected)
    assert await history.chosen_times(["m1", "m2"]) == {"m1": injected}  # m2's keep was over already
    await asyncio.sleep(0.4)
    assert await history.chosen_times(["m1"]) == {}


async def test_a_scheduled_delivery_falls_due_and_its_claim_lapses_on_the_injected_clock(
    redis: Redis, injected: datetime
) -> None:
    schedule = DeliverySchedule(redis)
    due = injected + timedelta(hours=1)
    await schedule.add(delivery("u1"), due)
    assert await schedule.due_within(3600 - 1, now=injected.timestamp()) == 0
    assert await schedule.claim_due(now=(due - timedelta(seconds=1)).timestamp()) == []
    [claimed] = await schedule.claim_due(now=due.timestamp())  # and the claimer dies
    assert await schedule.requeue_stale(60, now=(due + timedelta(seconds=59)).timestamp()) == 0
    assert await schedule.requeue_stale(60, now=(due + timedelta(seconds=61)).timestamp()) == 1
    [again] = await schedule.claim_due(now=(due + timedelta(seconds=61)).timestamp())
    assert again == claimed
    await schedule.done([again])
    assert await schedule.due_within(YEAR.total_seconds(), now=injected.timestamp()) == 0


async def test_send_claims_and_caps_count_from_the_injected_now(redis: Redis, injected: datetime) -> None:
    await UserDirectory(redis).upsert([User(user_id="s1", name="Su", bindings={"inbox": "s1"})])
    ledger = SendLedger(redis, ttl_seconds=3600, claim_ttl_seconds=2)
    window = CapLimit(count=1, window=timedelta(hours=1))
    hourly = FrequencyCap(id="hourly", scope=("user",), limits=(window,), on_exceed="delay")
    send = Send(
        {"inbox": InboxChannel(Inbox(redis))},
        TemplateCatalog(ROOT / "templates"),
        UserDirectory(redis),
        ledger,
        RetryPolicy(max_attempts=1),
        caps=FrequencyCaps(redis),
    )
    capped = DeliveryPlan(caps=(hourly,))
    sent = await send.handle([dispatch("m1", capped)], now=injected)
    assert [r.status for r in sent.receipts] == ["sent", "delivered"]
    await assert_lasts(redis, SENT_KEY.format("m1", "inbox", 0), timedelta(hours=1))
    await assert_lasts(redis, "sb:cap:{s1}:hourly:user=s1", timedelta(hours=1))
    # Half an hour on (injected clock) the cap holds the next one back until the first ages out.
    held = await send.handle([dispatch("m2", capped)], now=injected + timedelta(minutes=30))
    assert [(d.message_id, until) for d, until in held.parked] == [("m2", injected + timedelta(hours=1))]
    redelivered = await send.handle([dispatch("m1", capped)], now=injected + timedelta(minutes=31))
    # Sent already: nothing goes out, and the same rows as the first time are re-emitted.
    assert redelivered.already_sent == 1 and redelivered.receipts == sent.receipts
    # A dispatch behind a dead worker's unfinished claim waits for that claim, from the injected now.
    assert await ledger.claim("m3", "inbox", 0)
    parked = await send.handle([dispatch("m3")], now=injected)
    [(_, due)] = parked.parked
    assert injected + timedelta(seconds=1) < due <= injected + timedelta(seconds=3)


async def test_a_fallback_chain_lives_and_its_leases_lapse_on_the_injected_clock(
    redis: Redis, injected: datetime
) -> None:
    step = FallbackStep(step=1, after=timedelta(seconds=10), condition="not_read", channels=("email",))
    first = dispatch("m1", DeliveryPlan(fallback=(step,)))
    schedule = FallbackSchedule(redis, lease_seconds=30, retention=timedelta(days=1))
    assert await schedule.arm(first, None, injected)
    # Kept a day past its last step (and a second for rounding), counted from the arming.
    await assert_lasts(redis, chain_shard("m1").message("m1"), timedelta(days=1, seconds=11))
    assert await schedule.fire_due(injected + timedelta(seconds=9)) == []
    [fired] = await schedule.fire_due(injected + timedelta(seconds=10))  # and the firer dies
    assert fired.first_sent_at == injected
    assert await schedule.fire_due(injected + timedelta(seconds=39)) == []  # its lease holds
    [again] = await schedule.fire_due(injected + timedelta(seconds=41))
    assert again.claim == fired.claim
    assert await schedule.done([again]) == 1
    assert await schedule.fire_due(injected + timedelta(hours=1)) == []
    assert not await schedule.arm(first, None, injected + timedelta(minutes=1))  # remembered, not re-armed


async def test_pacing_slots_are_remembered_from_the_injected_now(redis: Redis, injected: datetime) -> None:
    pacer = Pacer(redis)
    asked = [SlotRequest("k", 2.0, "m1"), SlotRequest("k", 2.0, "m2")]
    assert await pacer.slots(asked, injected) == [injected, injected + timedelta(milliseconds=500)]
    remember = timedelta(microseconds=REMEMBER_US)
    await assert_lasts(redis, pace_keys("k")[0], remember + timedelta(milliseconds=500))
    again = await pacer.slots([SlotRequest("k", 2.0, "m2")], injected + timedelta(milliseconds=100))
    assert again == [injected + timedelta(milliseconds=500)]


async def test_an_offline_keep_lasts_until_its_deadline_on_the_injected_clock(
    redis: Redis, injected: datetime
) -> None:
    directory = UserDirectory(redis)
    await directory.upsert([User(user_id="u2")])
    keep = OfflineKeep(redis)
    deadline = injected + timedelta(days=1)
    assert await keep.keep(delivery("u2"), {}, deadline, now=injected) == deadline
    await assert_lasts(redis, deadline_key("u2", delivery("u2").message_id), timedelta(days=1))
    assert await keep.due_for_release(injected + timedelta(hours=1), directory) == ([], [])
    [], [expired] = await keep.due_for_release(deadline, directory, confirm=True)  # and the caller dies
    assert expired.status == "expired"
    assert await keep.due_for_release(deadline + timedelta(seconds=59), directory, confirm=True) == ([], [])
    [], [again] = await keep.due_for_release(deadline + timedelta(seconds=61), directory, confirm=True)
    assert await keep.done([again]) == 1 and await keep.count("u2") == 0


async def test_event_dedup_takes_no_now_and_holds_for_its_window(redis: Redis) -> None:
    """Ingest's dedup is given no time: its window is a relative TTL on Redis's own clock."""
    dedup = EventDedup(redis, ttl_seconds=7 * 24 * 3600)
    assert await dedup.first_seen("lms", "e1", "events:0:1")
    assert not await dedup.first_seen("lms", "e1", "events:0:2")  # another copy of the same event
    assert await dedup.first_seen("lms", "e1", "events:0:1")  # the same record again, redelivered
    await assert_lasts(redis, "sb:dedup:lms:e1", timedelta(days=7))
