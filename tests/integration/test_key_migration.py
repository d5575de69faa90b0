"""`switchboard redis migrate` moves state written under the old key names to the hash-tagged layout,
on a single Redis and on a Redis Cluster: afterwards the new code finds every inbox, cap count,
pacing slot, offline delivery, fallback chain, scheduled item and app, with its time to live."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from app import cli, require_redis
from localparts import LocalParts
from records.plan import CapLimit, DeliveryPlan, FallbackStep, FrequencyCap
from records.topics import Delivery, Dispatch, EventCore, message_id_for
from settings import SwitchboardError
from state.apps import AppRegistry
from state.caps import FrequencyCaps, cap_key, send_key
from state.fallback import FallbackSchedule, chain_shard
from state.inbox import Inbox, InboxMessage, inbox_keys
from state.key_migration import migrate_keys
from state.offline import OfflineKeep, deadline_key, kept_key, users_key
from state.pacing import pace_keys
from state.schedule import DeliverySchedule, ParkedDispatches, Shard

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

EVENT = EventCore(event_id="e1", app="campus", type="notice", template="campus_notice", category="notice")
DAILY = FrequencyCap(id="daily", limits=(CapLimit(count=1, window=timedelta(days=1)),))


def dispatch(user_id: str, *, caps: tuple[FrequencyCap, ...] = (), fallback: bool = False) -> Dispatch:
    steps = (FallbackStep(step=1, after=timedelta(seconds=30), condition="not_read", channels=("sms",)),)
    return Dispatch.model_validate(
        {
            "message_id": message_id_for("campus", "e1", user_id),
            "user_id": user_id,
            "channel": "email",
            "address": f"{user_id}@uni.example.edu",
            "event": EVENT,
            "rule_id": "notice",
            "rule_version": "v1",
            "plan": DeliveryPlan(caps=caps, fallback=steps if fallback else ()),
        }
    )


async def to_old(redis: Redis, new: str, old: str) -> None:
    """Put a key back under the name the previous version gave it."""
    dumped = await redis.dump(new)
    assert dumped is not None, new
    ttl = int(await redis.pttl(new))
    await redis.restore(old, max(ttl, 0), dumped, replace=True)
    await redis.delete(new)


async def shards_to_old(redis: Redis, shards: tuple[Shard, ...], name: str) -> None:
    for shard in shards:
        bodies: dict[Any, Any] = await redis.hgetall(shard.bodies)
        if bodies:
            await redis.hset(f"{name}:body", mapping=bodies)
        for key, old in ((shard.due, name), (shard.inflight, f"{name}:inflight")):
            entries: list[Any] = await redis.zrange(key, 0, -1, withscores=True)
            if entries:
                await redis.zadd(old, dict(entries))
        await redis.delete(shard.bodies, shard.due, shard.inflight)


async def test_the_old_layout_is_found_under_the_new_names(redis: Redis) -> None:
    now = datetime.now(UTC)
    # Written as the previous version wrote them.
    inbox_message = InboxMessage(
        message_id="m1", title="t", body="b", app="campus", event_id="e1", template="campus_notice",
        category="notice", created_at=now,
    )  # fmt: skip
    await redis.zadd("sb:inbox:u1", {"m1": now.timestamp()})
    await redis.hset("sb:inbox:u1:m", "m1", inbox_message.model_dump_json())
    await redis.sadd("sb:inbox:u1:unread", "m1")
    counted = dispatch("u1", caps=(DAILY,))
    await redis.zadd("sb:cap:daily:user=u1", {send_key(counted): int(now.timestamp() * 1000)})
    await redis.pexpire("sb:cap:daily:user=u1", 86_400_000)
    await redis.set("sb:pace:campaign-7", "123", px=60_000)
    await redis.zadd("sb:pace:campaign-7:given", {"m9": 123})
    # Written by the new code, then put back under the old names (same contents, old places).
    keep = OfflineKeep(redis)
    kept = Delivery(message_id="m-off", user_id="u2", event=EVENT)
    await keep.keep(kept, {}, now + timedelta(days=1), now=now)
    await to_old(redis, kept_key("u2"), "sb:offline:u2")
    await to_old(redis, deadline_key("u2", "m-off"), "sb:offline:deadline:m-off")
    await redis.delete(users_key("u2"))
    await redis.sadd("sb:offline:users", "u2")
    chains = FallbackSchedule(redis)
    chained = dispatch("u3", fallback=True)
    assert await chains.arm(chained, None, now - timedelta(minutes=1))
    shard = chain_shard(chained.message_id)
    await to_old(redis, shard.message(chained.message_id), f"sb:fb:{chained.message_id}")
    due = await redis.zscore(shard.due, chained.message_id)
    assert due is not None
    await redis.zadd("sb:fallback", {chained.message_id: due})
    await redis.zrem(shard.due, chained.message_id)
    schedule = DeliverySchedule(redis)
    await schedule.add(Delivery(message_id="m-later", user_id="u4", event=EVENT), now - timedelta(seconds=1))
    await shards_to_old(redis, schedule.shards, "sb:schedule")
    parked = ParkedDispatches(redis)
    await parked.add(dispatch("u5"), now - timedelta(seconds=1))
    await shards_to_old(redis, parked.shards, "sb:parked")
    registry = AppRegistry(redis)
    key = await registry.register("lms", ["inbox"])
    await to_old(redis, "sb:{apps}:app:lms", "sb:app:lms")
    [digest_key] = [k async for k in redis.scan_iter(match="sb:{apps}:key:*")]
    await to_old(redis, digest_key, "sb:appkey:" + digest_key.decode().rsplit(":", 1)[1])
    await redis.sadd("sb:apps", "lms")
    await redis.delete("sb:{apps}:names")
    assert await registry.authenticate(key) is None  # the new code cannot see the old layout

    moved = await migrate_keys(redis)

    assert moved == {
        "inbox": 3, "caps": 1, "pacing": 2, "offline": 1, "fallback": 1, "schedule": 1, "parked": 1,
        "apps": 3,
    }  # fmt: skip
    assert [m.message_id for m in await Inbox(redis).list("u1")] == ["m1"]
    assert await Inbox(redis).unread_count("u1") == 1
    again = dispatch("u1", caps=(DAILY,)).model_copy(update={"message_id": "another"})
    assert (await FrequencyCaps(redis).check(again, now)).outcome == "drop"  # the old count still counts
    assert 0 < await redis.pttl(cap_key(DAILY, again)) <= 86_400_000
    assert await redis.get(pace_keys("campaign-7")[0]) == b"123"
    assert await redis.zscore(pace_keys("campaign-7")[1], "m9") == 123
    assert await keep.count("u2") == 1 and await redis.sismember(users_key("u2"), "u2")
    assert 0 < await redis.pttl(deadline_key("u2", "m-off")) <= 86_400_000
    [fired] = await chains.fire_due(now + timedelta(minutes=1))
    assert fired.message_id == chained.message_id
    assert [d.message_id for d in await schedule.claim_due(now=now.timestamp())] == ["m-later"]
    assert [d.user_id for d in await parked.claim_due(now=now.timestamp())] == ["u5"]
    app = await registry.authenticate(key)
    assert app is not None and app.name == "lms"
    assert [a.name for a in await registry.list()] == ["lms"]
    # Nothing old is left, and a second run has nothing to move.
    assert [k async for k in redis.scan_iter(match="sb:*") if b"{" not in k] == []
    assert set((await migrate_keys(redis)).values()) == {0}


async def test_the_command_moves_once_then_has_nothing_to_move(
    redis: Redis, redis_url: str, local_parts: LocalParts
) -> None:
    await redis.sadd("sb:inbox:u9:unread", "m1")
    await redis.sadd("sb:apps", "lms")
    with pytest.raises(SwitchboardError, match=r"old key names; .* run `switchboard redis migrate`"):
        await asyncio.to_thread(require_redis, redis_url)  # a worker or the API refuses to start
    # The broker takes the command's audit record: without it the command would refuse to act.
    env = {
        "SWITCHBOARD_REDIS": redis_url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_ENV": "test",
    }
    # The command runs its own event loop: off this test's loop, in a thread.
    first = await asyncio.to_thread(CliRunner().invoke, cli, ["redis", "migrate"], env=env)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("moved to the hash-tagged layout: inbox 1, caps 0,")
    assert await redis.smembers(inbox_keys("u9")[2]) == {b"m1"}
    second = await asyncio.to_thread(CliRunner().invoke, cli, ["redis", "migrate"], env=env)
    assert (second.exit_code, second.output) == (0, "nothing to move\n")
    await asyncio.to_thread(require_redis, redis_url)
