"""Frequency caps against real Redis: atomic across workers, several windows, delay time, redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from records.plan import CapLimit, DeliveryPlan, FrequencyCap
from records.topics import Dispatch, EventCore
from state.caps import FrequencyCaps, scope_value
from state.connection import open_redis
from tests.integration.moments import now

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

T0 = now()
PROMO = EventCore(
    event_id="p1", app="shop", type="promo", template="promo", category="marketing", campaign="black-friday"
)
DAILY_HOURLY = FrequencyCap(
    id="marketing",
    scope=("user",),
    limits=(CapLimit(count=3, window=timedelta(days=1)), CapLimit(count=1, window=timedelta(hours=1))),
    on_exceed="delay",
)


def dispatch(
    message_id: str, *caps: FrequencyCap, user_id: str = "u1", channel: str = "sms", step: int = 0
) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": message_id,
            "user_id": user_id,
            "channel": channel,
            "address": "+8613800000000",
            "event": PROMO,
            "rule_id": "promo",
            "rule_version": "v1",
            "step": step,
            "plan": DeliveryPlan(caps=caps),
        }
    )


@pytest.fixture
async def caps(redis: Redis) -> FrequencyCaps:
    return FrequencyCaps(redis)


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url)
    yield client
    await client.aclose()


async def test_two_workers_racing_for_the_last_slot_only_one_passes(
    redis: Redis, second_client: Redis
) -> None:
    one, two = FrequencyCaps(redis), FrequencyCaps(second_client)
    cap = FrequencyCap(id="race", limits=(CapLimit(count=2, window=timedelta(hours=1)),))
    for round_ in range(50):
        user = f"r{round_}"
        assert (await one.check(dispatch(f"{user}-a", cap, user_id=user), T0)).outcome == "passed"
        verdicts = await asyncio.gather(
            one.check(dispatch(f"{user}-b", cap, user_id=user), T0),
            two.check(dispatch(f"{user}-c", cap, user_id=user), T0),
        )
        assert sorted(v.outcome for v in verdicts) == ["drop", "passed"], round_
        assert await redis.zcard(f"sb:cap:{{{user}}}:race:user={user}") == 2


async def test_several_windows_all_pass_or_none_counts(caps: FrequencyCaps, redis: Redis) -> None:
    first = await caps.check(dispatch("m1", DAILY_HOURLY), T0)
    assert first.outcome == "passed"
    # 30 minutes later the hourly window is full; the daily one is not, but nothing is counted.
    second = await caps.check(dispatch("m2", DAILY_HOURLY), T0 + timedelta(minutes=30))
    assert second.outcome == "delay"
    assert second.until == T0 + timedelta(hours=1)  # when m1 leaves the hourly window
    hour_later = (T0 + timedelta(hours=1)).isoformat()
    assert second.reason == f"cap marketing: 1 per 1h reached; delayed until {hour_later}"
    assert await redis.zcard("sb:cap:{u1}:marketing:user=u1") == 1
    assert (await caps.check(dispatch("m2", DAILY_HOURLY), T0 + timedelta(hours=1))).outcome == "passed"
    assert (await caps.check(dispatch("m3", DAILY_HOURLY), T0 + timedelta(hours=2))).outcome == "passed"
    # The daily window is now full (3 at T0, +1 h, +2 h): allowed again when the first ages out.
    fourth = await caps.check(dispatch("m4", DAILY_HOURLY), T0 + timedelta(hours=5))
    assert (fourth.outcome, fourth.until) == ("delay", T0 + timedelta(days=1))
    assert [e.limit.window for e in fourth.exceeded] == [timedelta(days=1)]


async def test_delay_waits_for_every_exceeded_window_of_every_cap(caps: FrequencyCaps) -> None:
    per_channel = FrequencyCap(
        id="sms-burst",
        scope=("user", "channel"),
        limits=(CapLimit(count=2, window=timedelta(minutes=10)),),
        on_exceed="delay",
    )
    await caps.check(dispatch("m1", DAILY_HOURLY, per_channel), T0)
    await caps.check(dispatch("m2", per_channel), T0 + timedelta(minutes=5))
    verdict = await caps.check(dispatch("m3", DAILY_HOURLY, per_channel), T0 + timedelta(minutes=6))
    assert verdict.outcome == "delay"
    assert {e.cap.id for e in verdict.exceeded} == {"marketing", "sms-burst"}
    assert verdict.until == T0 + timedelta(hours=1)  # the later of T0 + 10 min and T0 + 1 h


async def test_drop_wins_over_delay_and_names_the_cap(caps: FrequencyCaps) -> None:
    strict = FrequencyCap(id="one-a-day", limits=(CapLimit(count=1, window=timedelta(days=1)),))
    await caps.check(dispatch("m1", DAILY_HOURLY, strict), T0)
    verdict = await caps.check(dispatch("m2", DAILY_HOURLY, strict), T0 + timedelta(minutes=1))
    assert verdict.outcome == "drop" and verdict.until is None
    assert verdict.reason == "cap one-a-day: 1 per 1d reached; dropped"


async def test_a_redelivered_dispatch_is_counted_once(caps: FrequencyCaps, redis: Redis) -> None:
    for minute in range(3):
        verdict = await caps.check(dispatch("m1", DAILY_HOURLY), T0 + timedelta(minutes=minute))
        assert verdict.outcome == "passed"
    assert await redis.zcard("sb:cap:{u1}:marketing:user=u1") == 1
    # Another step or channel of the same message is another send, and counts.
    assert (await caps.check(dispatch("m1", DAILY_HOURLY, step=1), T0)).outcome == "delay"


async def test_a_failed_send_is_uncounted(caps: FrequencyCaps) -> None:
    await caps.check(dispatch("m1", DAILY_HOURLY), T0)
    await caps.forget(dispatch("m1", DAILY_HOURLY))
    assert (await caps.check(dispatch("m2", DAILY_HOURLY), T0)).outcome == "passed"


async def test_a_batch_is_checked_in_order_and_uncapped_dispatches_pass(caps: FrequencyCaps) -> None:
    verdicts = await caps.check_many(
        [dispatch("m1", DAILY_HOURLY), dispatch("free"), dispatch("m2", DAILY_HOURLY)], T0
    )
    assert [v.outcome for v in verdicts] == ["passed", "passed", "delay"]


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ((), "global"),
        (("user",), "user=u1"),
        (("channel",), "channel=sms"),
        (("category",), "category=marketing"),
        (("app",), "app=shop"),
        (("campaign",), "campaign=black-friday"),
        (("user", "channel"), "user=u1|channel=sms"),
    ],
)
async def test_scopes_count_separately(caps: FrequencyCaps, scope: tuple[str, ...], key: str) -> None:
    cap = FrequencyCap.model_validate(
        {"id": "s", "scope": scope, "limits": [{"count": 1, "window": timedelta(hours=1)}]}
    )
    assert scope_value(cap, dispatch("m", cap)) == key
    assert (await caps.check(dispatch("m1", cap), T0)).outcome == "passed"
    other_user = await caps.check(dispatch("m2", cap, user_id="u2"), T0)
    other_channel = await caps.check(dispatch("m3", cap, channel="email"), T0)
    assert other_user.outcome == ("passed" if "user" in scope else "drop")
    assert other_channel.outcome == ("passed" if "channel" in scope else "drop")


async def test_caps_in_two_slots_count_a_send_in_both_or_in_neither(
    caps: FrequencyCaps, redis: Redis
) -> None:
    # A per-user cap and a global one live in different slots: one script each; a refusal by the
    # global cap takes back the count the user's cap made.
    campus = FrequencyCap(id="campus", scope=(), limits=(CapLimit(count=1, window=timedelta(hours=1)),))
    personal = FrequencyCap(id="personal", limits=(CapLimit(count=5, window=timedelta(hours=1)),))
    assert (await caps.check(dispatch("m1", personal, campus), T0)).outcome == "passed"
    refused = await caps.check(dispatch("m2", personal, campus, user_id="u2"), T0)
    assert refused.outcome == "drop" and [e.cap.id for e in refused.exceeded] == ["campus"]
    assert await redis.zcard("sb:cap:{u1}:personal:user=u1") == 1
    assert await redis.zcard("sb:cap:{u2}:personal:user=u2") == 0  # taken back
    assert await redis.zcard("sb:cap:{campus:global}") == 1
