"""Pacing slots and engagement history against real Redis."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from state.connection import open_redis
from state.engagement import EngagementHistory
from state.pacing import Pacer, SlotRequest
from state.users import User
from tests.integration.moments import SHANGHAI, now, on_local_clock, recent_days

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

T0 = now()


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url)
    yield client
    await client.aclose()


async def test_two_clients_get_evenly_spaced_slots(redis: Redis, second_client: Redis) -> None:
    one, two = Pacer(redis), Pacer(second_client)

    async def ask(pacer: Pacer, prefix: str) -> list[datetime]:
        slots: list[datetime] = []
        for i in range(20):
            slots += await pacer.slots([SlotRequest("campaign:bf", 4.0, f"{prefix}{i}")], T0)
        return slots

    first, second = await asyncio.gather(ask(one, "a"), ask(two, "b"))
    slots = sorted(first + second)
    assert slots[0] == T0
    assert [b - a for a, b in itertools.pairwise(slots)] == [timedelta(milliseconds=250)] * 39


async def test_a_message_keeps_its_slot_and_keys_are_independent(redis: Redis) -> None:
    pacer = Pacer(redis)
    asked = [SlotRequest("k", 2.0, "m1"), SlotRequest("k", 2.0, "m2"), SlotRequest("other", 2.0, "m3")]
    assert await pacer.slots(asked, T0) == [T0, T0 + timedelta(milliseconds=500), T0]
    # Decided again at its slot (or redelivered), m2 gets the same slot back, not a new one.
    again = await pacer.slots([SlotRequest("k", 2.0, "m2")], T0 + timedelta(milliseconds=500))
    assert again == [T0 + timedelta(milliseconds=500)]
    # After an idle spell the next slot is now, not in the past.
    later = T0 + timedelta(minutes=1)
    assert await pacer.slots([SlotRequest("k", 2.0, "m4")], later) == [later]


async def test_pacing_rounds_towards_fewer_sends(redis: Redis) -> None:
    slots = await Pacer(redis).slots([SlotRequest("k", 3.0, f"m{i}") for i in range(4)], T0)
    assert slots[3] - slots[0] >= timedelta(seconds=1)


async def test_a_bad_rate_is_named(redis: Redis) -> None:
    with pytest.raises(ValueError, match="pacing 'k': per_second must be > 0, got 0"):
        await Pacer(redis).slots([SlotRequest("k", 0, "m")], T0)


SH = User(user_id="sh", timezone="Asia/Shanghai")
NY = User(user_id="ny", timezone="America/New_York")
NOBODY = User(user_id="nobody")


@pytest.fixture
async def history(redis: Redis) -> EngagementHistory:
    return EngagementHistory(redis)


async def test_best_hour_is_counted_in_the_users_own_timezone(history: EngagementHistory) -> None:
    london, new_york = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")
    # 20:15 in Shanghai; 07:15 or 08:15 in New York, 12:15 or 13:15 in London, the same all three days.
    days = recent_days(3, time(12, 15), steady=(london, new_york))
    evening_utc = days[0]
    recorded = await history.record_many(
        [(user, "opened", day) for day in days for user in ("sh", "ny")]
        + [("sh", "delivered", evening_utc), ("sh", "clicked", evening_utc + timedelta(hours=3))]
    )
    assert recorded == 7  # `delivered` says nothing about the person
    ny_hour = evening_utc.astimezone(new_york).hour
    assert ny_hour in (7, 8)
    assert await history.best_hours([SH, NY, NOBODY]) == {"sh": 20, "ny": ny_hour}
    assert await history.best_hour(NOBODY) is None
    # The same user read on another clock: counted in the timezone the profile has now.
    london_hour = evening_utc.astimezone(london).hour
    assert london_hour in (12, 13)
    assert await history.best_hour(SH.model_copy(update={"timezone": "Europe/London"})) == london_hour


async def test_too_little_history_gives_no_best_hour_and_ties_go_early(history: EngagementHistory) -> None:
    at = on_local_clock(T0.astimezone(SHANGHAI).date() - timedelta(days=3), 9, 0)
    await history.record_many([("sh", "read", at), ("sh", "read", at + timedelta(hours=1))])
    assert await history.best_hour(SH) is None
    await history.record_many(
        [("sh", "read", at + timedelta(days=1, hours=1)), ("sh", "read", at + timedelta(days=2))]
    )
    assert await history.best_hour(SH) == 9  # 09:00 and 10:00 have two each


async def test_a_redelivered_receipt_is_not_counted_twice(history: EngagementHistory) -> None:
    at = on_local_clock(T0.astimezone(SHANGHAI).date() - timedelta(days=3), 9, 0)
    batch = [("sh", "read", at), ("sh", "read", at + timedelta(days=1, hours=2))]
    for _ in range(3):  # the same receipts, redelivered
        await history.record_many(batch)
    assert await history.best_hour(SH) is None  # still two engagements, below the minimum


async def test_history_keeps_the_latest_engagements(history: EngagementHistory, redis: Redis) -> None:
    at = T0 - timedelta(days=21)
    await history.record_many([("sh", "opened", at + timedelta(minutes=m)) for m in range(250)])
    assert await redis.zcard("sb:engaged:sh") == 200
    oldest = await redis.zrange("sb:engaged:sh", 0, 0, withscores=True)
    assert oldest[0][1] == (at + timedelta(minutes=50)).timestamp() * 1000


async def test_last_activity_only_moves_forward(history: EngagementHistory) -> None:
    await history.record_many([("sh", "clicked", T0), ("sh", "opened", T0 - timedelta(days=2))])
    await history.record_many([("ny", "sent", T0)])
    assert await history.last_active(["sh", "ny"]) == {"sh": T0}


async def test_the_first_chosen_best_time_stands(history: EngagementHistory) -> None:
    soon = now() + timedelta(hours=1)  # kept until after it
    await history.choose_times({"m1": soon})
    await history.choose_times({"m1": soon + timedelta(hours=1), "m2": soon + timedelta(hours=2)})
    assert await history.chosen_times(["m1", "m2", "m3"]) == {"m1": soon, "m2": soon + timedelta(hours=2)}


async def test_naive_times_are_refused(history: EngagementHistory) -> None:
    naive = T0.replace(tzinfo=None)
    message = f"engagement of sh at {naive}: the time needs a timezone"
    with pytest.raises(ValueError, match=re.escape(message)):
        await history.record_many([("sh", "read", naive)])
