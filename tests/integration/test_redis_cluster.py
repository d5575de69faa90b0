"""What only a Redis Cluster does differently, on the local three-node cluster: it refuses keys of
two slots in one script, bursts wait for a connection, scripts survive a flushed script cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.exceptions import RedisClusterException, ResponseError

from localparts.redis_cluster import LocalRedisCluster
from records.plan import CapLimit, DeliveryPlan, FrequencyCap
from records.topics import Dispatch, EventCore
from state.caps import FrequencyCaps
from state.connection import open_cluster, open_redis
from state.dedup import EventDedup

EVENT = EventCore(event_id="e1", app="shop", type="promo", template="promo", category="marketing")


async def test_the_local_cluster_is_a_real_one(redis_cluster: LocalRedisCluster) -> None:
    redis = open_cluster(redis_cluster.url)
    try:
        info = await redis.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == 3
        with pytest.raises((ResponseError, RedisClusterException), match=r"(?i)slot"):
            await redis.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, "a", "b")
    finally:
        await redis.aclose()


async def test_a_burst_waits_for_connections_instead_of_failing(redis_cluster: LocalRedisCluster) -> None:
    # redis-py's cluster client alone raises MaxConnectionsError past its connections per node.
    redis = open_redis(redis_cluster.url, max_connections=4)
    try:
        await redis.flushdb()
        dedup = EventDedup(redis, 60)
        firsts = await asyncio.gather(*(dedup.first_seen("app", f"e{i % 500}", f"r{i}") for i in range(2000)))
        assert sum(firsts) == 500  # one first per event id, every call answered
    finally:
        await redis.aclose()


async def test_scripts_in_pipelines_survive_a_flushed_script_cache(redis_cluster: LocalRedisCluster) -> None:
    redis = open_redis(redis_cluster.url)
    try:
        await redis.flushdb()
        caps = FrequencyCaps(redis)
        cap = FrequencyCap(id="daily", limits=(CapLimit(count=1, window=timedelta(days=1)),))
        now = datetime.now(UTC)

        def dispatch(message_id: str, user_id: str) -> Dispatch:
            return Dispatch(
                message_id=message_id, user_id=user_id, channel="sms", address="+8613800000000",
                event=EVENT, rule_id="r", rule_version="v1", plan=DeliveryPlan(caps=(cap,)),
            )  # fmt: skip

        first = await caps.check_many([dispatch(f"m{u}", f"u{u}") for u in range(50)], now)
        await redis.script_flush()  # what a restart or a failover to a fresh replica does
        again = await caps.check_many([dispatch(f"n{u}", f"u{u}") for u in range(50)], now)
        assert {v.outcome for v in first} == {"passed"} and {v.outcome for v in again} == {"drop"}
    finally:
        await redis.aclose()


async def test_a_fresh_client_can_start_with_a_burst(redis_cluster: LocalRedisCluster) -> None:
    # A fresh redis-py cluster client started with a burst fails some commands (a closed writer);
    # ours runs its first command alone.
    for _ in range(10):
        redis = open_redis(redis_cluster.url)
        try:
            answers = await asyncio.gather(*(redis.set(f"k{i % 7}", i) for i in range(40)))
            assert answers == [True] * 40
        finally:
            await redis.aclose()
