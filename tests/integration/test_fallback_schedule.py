"""The fallback schedule in a real Redis: conditions, cancelling, at most once, leases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from records.plan import DeliveryPlan, FallbackCondition, FallbackStep
from records.topics import Dispatch, EventCore, message_id_for
from state.connection import open_redis
from state.fallback import SHARDS, FallbackSchedule, chain_shard

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

EVENT = EventCore(
    event_id="fee-1", app="bursar", type="fee.due", template="fee_due", category="transactional"
)


def first_dispatch(user_id: str, *steps: tuple[FallbackCondition, float, tuple[str, ...]]) -> Dispatch:
    fallback = tuple(
        FallbackStep(step=n, after=timedelta(seconds=after), condition=condition, channels=channels)
        for n, (condition, after, channels) in enumerate(steps, start=1)
    )
    return Dispatch(
        message_id=message_id_for(EVENT.app, EVENT.event_id, user_id),
        user_id=user_id,
        channel="inbox",
        address=user_id,
        event=EVENT,
        rule_id="fees",
        rule_version="v1",
        plan=DeliveryPlan(fallback=fallback),
    )


@pytest.fixture
def t0() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def schedule(redis: Redis) -> FallbackSchedule:
    return FallbackSchedule(redis, lease_seconds=30)


# (condition, receipts observed before the step is due as (status, channel, step), fires?)
CASES: list[tuple[FallbackCondition, list[tuple[str, str, int]], bool]] = [
    ("not_delivered", [], True),
    ("not_delivered", [("sent", "sms", 0)], True),
    ("not_delivered", [("sent", "email", 0)], False),  # email never says more than sent
    ("not_delivered", [("delivered", "inbox", 0)], False),
    ("not_delivered", [("failed", "email", 0)], True),
    ("not_read", [("delivered", "inbox", 0)], True),
    ("not_read", [("read", "inbox", 0)], False),
    ("not_read", [("opened", "email", 0)], False),
    ("not_read", [("clicked", "inbox", 0)], False),  # a click implies a read
    ("not_clicked", [("read", "inbox", 0)], True),
    ("not_clicked", [("clicked", "email", 0)], False),
    ("not_clicked", [("converted", "", 0)], False),
    ("failed", [], False),  # nothing failed (yet): no reason to fall back
    ("failed", [("failed", "email", 0)], True),
    ("failed", [("failed", "email", 0), ("delivered", "inbox", 0)], False),
    ("failed", [("sent", "sms", 0), ("failed", "sms", 0)], True),  # a delivery report said failed
    ("failed", [("failed", "sms", 0), ("sent", "sms", 0)], False),  # a retry went through
    ("failed", [("sent", "sms", 0), ("failed", "email", 0)], False),  # the SMS may still arrive
    ("failed", [("failed", "email", 0), ("failed", "email", 0)], True),  # a redelivered receipt
    ("not_read", [("decided", "inbox", 0), ("suppressed", "", 0)], True),  # says nothing about reach
]


@pytest.mark.parametrize(("condition", "receipts", "fires"), CASES)
async def test_a_step_fires_iff_its_condition_holds_when_due(
    schedule: FallbackSchedule,
    t0: datetime,
    condition: FallbackCondition,
    receipts: list[tuple[str, str, int]],
    fires: bool,
) -> None:
    first = first_dispatch("u1", (condition, 5, ("email",)))
    assert await schedule.arm(first, None, t0)
    await schedule.observe_many((first.message_id, status, ch, step, t0) for status, ch, step in receipts)

    assert await schedule.fire_due(t0 + timedelta(seconds=4)) == []  # not due yet
    fired = await schedule.fire_due(t0 + timedelta(seconds=5))
    assert [(f.message_id, f.step.step) for f in fired] == ([(first.message_id, 1)] if fires else [])
    if fires:
        assert fired[0].first == first and fired[0].first_sent_at == t0 and fired[0].addresses is None
    await schedule.done(fired)
    assert await schedule.fire_due(t0 + timedelta(seconds=3600)) == []  # resolved once, either way


async def test_a_receipt_cancels_the_pending_step_and_the_next_one_keeps_its_time(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_delivered", 60, ("email",)), ("not_clicked", 1800, ("sms",)))
    await schedule.arm(first, None, t0)
    assert await due_at(redis, first.message_id) == t0.timestamp() + 60

    assert await schedule.observe(first.message_id, "delivered", "inbox", 0, t0) == 1
    assert await due_at(redis, first.message_id) == t0.timestamp() + 1800  # step 2, from the first send
    assert await schedule.observe(first.message_id, "read", "inbox", 0) == 0  # step 2 can still hold

    fired = await schedule.fire_due(t0 + timedelta(seconds=1800))
    assert [f.step.step for f in fired] == [2]
    assert fired[0].step.channels == ("sms",)


async def test_a_fired_step_schedules_the_next_relative_to_the_first_send(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_read", 10, ("email",)), ("not_read", 30, ("sms",)))
    await schedule.arm(first, {"email": "x@ext.example"}, t0)
    late = t0 + timedelta(seconds=25)  # the worker was busy: step 1 fires late
    fired = await schedule.fire_due(late)
    assert [f.step.step for f in fired] == [1] and fired[0].addresses == {"email": "x@ext.example"}
    assert await due_at(redis, first.message_id) == t0.timestamp() + 30
    await schedule.done(fired)
    assert [f.step.step for f in await schedule.fire_due(t0 + timedelta(seconds=30))] == [2]


async def test_a_receipt_that_ends_every_step_ends_the_chain(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_delivered", 10, ("email",)), ("not_read", 20, ("sms",)))
    await schedule.arm(first, None, t0)
    await schedule.observe(first.message_id, "clicked", "inbox", 0)
    assert await schedule.pending() == 0
    assert await redis.hget(message_key(first.message_id), "d") is None  # the body is dropped
    assert await schedule.fire_due(t0 + timedelta(days=1)) == []
    # What is left is a marker: a redelivered delivery cannot arm the message again.
    assert not await schedule.arm(first, None, t0 + timedelta(seconds=5))


async def test_arming_twice_keeps_the_first_timers(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_read", 10, ("email",)))
    assert await schedule.arm(first, None, t0)
    assert not await schedule.arm(first, None, t0 + timedelta(seconds=100))
    assert await due_at(redis, first.message_id) == t0.timestamp() + 10
    ttl = await redis.ttl(message_key(first.message_id))
    assert 0 < ttl <= 10 + 24 * 3600 + 1  # kept a day past its last step, then forgotten


async def test_a_plan_without_fallback_arms_nothing(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    assert not await schedule.arm(first_dispatch("u1"), None, t0)
    assert await redis.exists(message_key(first_dispatch("u1").message_id)) == 0


async def test_receipts_of_messages_without_fallback_leave_no_trace(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    assert await schedule.observe("no-such-message", "delivered", "inbox", 0, t0) == 0
    assert [key async for key in redis.scan_iter(match="sb:fb:*")] == []


async def test_naive_time_is_refused_by_name(schedule: FallbackSchedule, t0: datetime) -> None:
    with pytest.raises(ValueError, match="`at` must carry a timezone"):
        await schedule.arm(first_dispatch("u1", ("not_read", 10, ("email",))), None, t0.replace(tzinfo=None))


async def test_racing_firers_fire_each_step_exactly_once(redis_url: str, t0: datetime) -> None:
    clients = [open_redis(redis_url) for _ in range(2)]
    await clients[0].flushdb()
    try:
        schedules = [FallbackSchedule(c, lease_seconds=30) for c in clients]
        firsts = [
            first_dispatch(f"u{i}", ("not_delivered", 1, ("email",)), ("not_read", 2, ("sms",)))
            for i in range(300)
        ]
        for first in firsts:
            await schedules[0].arm(first, None, t0)
        # Half the messages get delivered while the firers run: their step 1 must never fire.
        delivered = {f.message_id for f in firsts[::2]}
        fired: list[list[tuple[str, int]]] = [[], []]

        async def firer(k: int) -> None:
            for second in (1, 1, 1, 2, 2, 2):
                batch = await schedules[k].fire_due(t0 + timedelta(seconds=second), limit=7)
                fired[k] += [(f.message_id, f.step.step) for f in batch]
                await schedules[k].done(batch)
                await asyncio.sleep(0)

        async def reader() -> None:
            for message_id in delivered:
                await schedules[1].observe(message_id, "delivered", "inbox", 0, t0)

        while await schedules[0].pending():
            await asyncio.gather(firer(0), firer(1), reader())
        together = fired[0] + fired[1]
        assert fired[0] and fired[1]  # both took part
        assert len(together) == len(set(together))  # nothing twice
        assert {(m, 2) for m in (f.message_id for f in firsts)} <= set(together)  # nobody read
        step_one = {m for m, step in together if step == 1}
        assert step_one >= {f.message_id for f in firsts} - delivered
        # A delivered message fired step 1 only if the firer got there before the receipt did.
        assert await in_flight(clients[0]) == 0
    finally:
        for client in clients:
            await client.aclose()


async def in_flight(client: Redis) -> int:
    return sum([int(await client.zcard(shard.inflight)) for shard in SHARDS])


async def due_at(client: Redis, message_id: str) -> float | None:
    """When the message's pending step falls due (unix seconds), from its shard's due set."""
    score = await client.zscore(chain_shard(message_id).due, message_id)
    return None if score is None else float(score)


def message_key(message_id: str) -> str:
    return chain_shard(message_id).message(message_id)


async def test_a_step_whose_emitter_died_is_handed_out_again_once(redis_url: str, t0: datetime) -> None:
    dying, restarted = open_redis(redis_url), open_redis(redis_url)
    await dying.flushdb()
    try:
        first = first_dispatch("u1", ("not_read", 5, ("email",)))
        await FallbackSchedule(dying, lease_seconds=30).arm(first, None, t0)
        claimed = await FallbackSchedule(dying, lease_seconds=30).fire_due(t0 + timedelta(seconds=5))
        assert len(claimed) == 1  # ... and the worker dies before emitting it
        await dying.aclose()

        schedule = FallbackSchedule(restarted, lease_seconds=30)
        assert await schedule.fire_due(t0 + timedelta(seconds=20)) == []  # its lease still holds
        again = await schedule.fire_due(t0 + timedelta(seconds=36))
        assert [(f.message_id, f.step) for f in again] == [(first.message_id, claimed[0].step)]
        assert await schedule.done(again) == 1
        assert await schedule.fire_due(t0 + timedelta(seconds=3600)) == []
        assert await schedule.done(again) == 0  # done twice counts once
        assert await restarted.hget(message_key(first.message_id), "d") is None
    finally:
        await restarted.aclose()


async def test_a_lapsed_step_is_dropped_when_its_condition_ended_meanwhile(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_read", 5, ("email",)))
    await schedule.arm(first, None, t0)
    assert len(await schedule.fire_due(t0 + timedelta(seconds=5))) == 1  # claimed, never emitted
    await schedule.observe(first.message_id, "read", "inbox", 0)
    assert await schedule.fire_due(t0 + timedelta(seconds=60)) == []
    assert await in_flight(redis) == 0
    assert await redis.hget(message_key(first.message_id), "busy") == b"0"


async def test_a_batch_arms_in_one_round_trip_and_answers_per_message(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    armed = first_dispatch("u1", ("not_read", 10, ("email",)))
    await schedule.arm(armed, None, t0)
    fresh = first_dispatch("u2", ("not_clicked", 20, ("sms",)))
    plain = first_dispatch("u3")
    answers = await schedule.arm_many([(armed, None, t0), (plain, None, t0), (fresh, {"sms": "+86138"}, t0)])
    assert answers == [False, False, True]
    assert await due_at(redis, fresh.message_id) == t0.timestamp() + 20
    assert await schedule.arm_many([]) == []


async def test_receipts_with_foreign_ids_are_skipped(schedule: FallbackSchedule, t0: datetime) -> None:
    first = first_dispatch("u1", ("not_delivered", 10, ("email",)))
    await schedule.arm(first, None, t0)
    cancelled = await schedule.observe_many(
        [
            ("odd\tid", "delivered", "inbox", 0, t0),
            ("", "delivered", "inbox", 0, t0),
            (first.message_id, "delivered", "inbox", 0, t0),
        ]
    )
    assert cancelled == 1


async def test_the_first_send_s_outcome_sets_the_chain_s_clock(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_read", 60, ("email",)), ("not_read", 120, ("sms",)))
    await schedule.arm(first, None, t0)  # decided at t0; a cap held the send back 30 s
    sent = t0 + timedelta(seconds=30)
    await schedule.observe(first.message_id, "delivered", "inbox", 0, sent)
    assert await due_at(redis, first.message_id) == sent.timestamp() + 60
    # Later outcomes, and those of fallback steps, do not move it again.
    await schedule.observe(first.message_id, "sent", "sms", 0, sent + timedelta(seconds=50))
    await schedule.observe(first.message_id, "sent", "email", 1, sent + timedelta(seconds=70))
    assert await due_at(redis, first.message_id) == sent.timestamp() + 60
    fired = await schedule.fire_due(sent + timedelta(seconds=60))
    assert fired[0].first_sent_at == sent
    assert await due_at(redis, first.message_id) == sent.timestamp() + 120


async def test_an_earlier_clock_on_the_receipt_does_not_move_the_chain_back(
    redis: Redis, schedule: FallbackSchedule, t0: datetime
) -> None:
    first = first_dispatch("u1", ("not_read", 60, ("email",)))
    await schedule.arm(first, None, t0)
    await schedule.observe(first.message_id, "delivered", "inbox", 0, t0 - timedelta(seconds=5))
    assert await due_at(redis, first.message_id) == t0.timestamp() + 60
