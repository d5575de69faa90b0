"""Offline keep against real Redis: kept, released when a binding appears, expired with a receipt."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from records.topics import Delivery, EventCore, message_id_for
from state.connection import open_redis
from state.offline import OfflineKeep, users_key
from state.users import User, UserDirectory

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

NOTICE = EventCore(event_id="n1", app="campus", type="notice", template="campus_notice", category="notice")


def soon() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def delivery(user_id: str, event_id: str = "n1") -> Delivery:
    event = NOTICE.model_copy(update={"event_id": event_id})
    return Delivery(message_id=message_id_for("campus", event_id, user_id), user_id=user_id, event=event)


@pytest.fixture
async def directory(redis: Redis) -> UserDirectory:
    users = UserDirectory(redis)
    await users.upsert([User(user_id="u1", bindings={"sms": "+8613800000001"}), User(user_id="u2")])
    return users


async def test_a_kept_delivery_is_released_once_a_binding_is_added(
    redis: Redis, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    await keep.keep(delivery("u1"), {"sms": "+8613800000001"}, now + timedelta(days=1), now=now)
    await keep.keep(delivery("u2"), {}, now + timedelta(days=1), now=now)
    assert await keep.due_for_release(now, directory, confirm=True) == ([], [])  # nothing changed yet
    await directory.upsert([User(user_id="u1", bindings={"sms": "+8613800000001", "push": "reg-1"})])
    released, expired = await keep.due_for_release(now, directory, confirm=True)
    assert [d.user_id for d in released] == ["u1"] and expired == []
    assert await keep.due_for_release(now, directory, confirm=True) == ([], [])  # leased: handed out once
    assert await keep.done(released) == 1
    assert await keep.count("u1") == 0 and await keep.count("u2") == 1


async def test_a_release_never_confirmed_is_handed_out_again_after_its_lease(
    redis: Redis, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    await keep.keep(delivery("u1"), {}, now + timedelta(days=1), now=now)
    [first], _ = await keep.due_for_release(now, directory, confirm=True)  # the caller dies before `done`
    assert await keep.due_for_release(now + timedelta(seconds=59), directory, confirm=True) == ([], [])
    [again], _ = await keep.due_for_release(now + timedelta(seconds=61), directory, confirm=True)
    assert again == first


async def test_keeping_again_during_a_release_survives_its_done(
    redis: Redis, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    await keep.keep(delivery("u1"), {}, now + timedelta(days=1), now=now)
    released, _ = await keep.due_for_release(now, directory, confirm=True)
    # Decided again before the releasing timer confirmed: still unusable, so kept again.
    await keep.keep(delivery("u1"), {"sms": "+8613800000001"}, now + timedelta(days=2), now=now)
    assert await keep.done(released) == 0
    assert await keep.count("u1") == 1


async def test_a_changed_address_also_makes_the_user_reachable(
    redis: Redis, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    await keep.keep(delivery("u1"), {"sms": "+8613800000001"}, now + timedelta(days=1), now=now)
    await directory.upsert([User(user_id="u1", bindings={"sms": "+8613800000002"})])
    released, _ = await keep.due_for_release(now, directory, confirm=True)
    assert len(released) == 1


async def test_past_their_deadline_deliveries_expire_with_a_receipt(
    redis: Redis, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    until = now + timedelta(hours=2)
    await keep.keep(delivery("u2"), {}, until, variant="B", rule_id="r1", rule_version="v9", now=now)
    released, expired = await keep.due_for_release(until, directory, confirm=True)
    assert released == []
    [receipt] = expired
    assert (receipt.status, receipt.user_id, receipt.variant, receipt.rule_id) == ("expired", "u2", "B", "r1")
    assert receipt.reason == f"kept offline until {until.isoformat()}; the user never became reachable"
    await keep.done(expired)
    assert await redis.sismember(users_key("u2"), "u2") == 0  # nothing kept: out of the index


async def test_keeping_again_keeps_the_first_deadline(redis: Redis, directory: UserDirectory) -> None:
    keep, now = OfflineKeep(redis), soon()
    first = await keep.keep(delivery("u2"), {}, now + timedelta(hours=1), now=now)
    later = now + timedelta(minutes=30)
    again = await keep.keep(delivery("u2"), {}, later + timedelta(hours=1), now=later)
    assert first == again == now + timedelta(hours=1)
    assert await keep.count("u2") == 1


async def test_two_timers_never_release_the_same_delivery(
    redis: Redis, redis_url: str, directory: UserDirectory
) -> None:
    keep, now = OfflineKeep(redis), soon()
    for i in range(20):
        await keep.keep(delivery("u1", f"n{i}"), {"sms": "+8613800000001"}, now + timedelta(days=1), now=now)
    await directory.upsert([User(user_id="u1", bindings={"sms": "+8613800000001", "email": "u1@x.example"})])
    other = open_redis(redis_url)
    try:
        (a, _), (b, _) = await asyncio.gather(
            keep.due_for_release(now, directory, confirm=True),
            OfflineKeep(other).due_for_release(now, directory, confirm=True),
        )
    finally:
        await other.aclose()
    ids = [d.message_id for d in a + b]
    assert len(ids) == len(set(ids)) == 20
    assert await keep.done(a + b) == 20 and await keep.count("u1") == 0


async def test_a_deadline_in_the_past_is_refused(redis: Redis) -> None:
    now = soon()
    with pytest.raises(ValueError, match="is not in the future"):
        await OfflineKeep(redis).keep(delivery("u2"), {}, now, now=now)


async def test_without_confirm_a_release_is_forgotten_at_once(redis: Redis, directory: UserDirectory) -> None:
    keep, now = OfflineKeep(redis), soon()
    await keep.keep(delivery("u1"), {}, now + timedelta(days=1), now=now)
    await keep.keep(delivery("u2"), {}, now + timedelta(hours=1), now=now)
    released, expired = await keep.due_for_release(now + timedelta(hours=1), directory)
    assert [d.user_id for d in released] == ["u1"] and [r.user_id for r in expired] == ["u2"]
    assert await keep.count("u1") == await keep.count("u2") == 0
    assert await keep.due_for_release(now + timedelta(hours=2), directory) == ([], [])
