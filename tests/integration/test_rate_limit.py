"""The Redis token bucket, shared by workers: tokens handed out at the configured rate, across clients."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from state.connection import open_redis
from state.rate_limit import BUCKET_KEY, TokenBucket

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("rate", "burst", "seconds"),
                         [(50.0, 10.0, 2.0), (3.0, 2.0, 5.0), (200.0, 400.0, 1.0)])
async def test_two_workers_share_one_rate(redis_url: str, redis: Redis, rate: float, burst: float,
                                          seconds: float) -> None:
    """Two clients (two workers) taking as fast as they can get exactly burst + rate * seconds."""
    # A small epoch: at 1.7e9 a double holds time to ~0.2 µs, enough in use but not for exact counts.
    clock = Clock(1000.0)
    other = open_redis(redis_url)
    try:
        workers = [TokenBucket(redis, clock=clock), TokenBucket(other, clock=clock)]
        granted = [0, 0]
        step = 0.005
        for tick in range(round(seconds / step) + 1):
            clock.now = 1000.0 + tick * step
            took = True
            while took:  # the workers take in turn until the bucket says wait
                took = False
                for index in (tick % 2, 1 - tick % 2):  # who asks first changes every tick
                    if await workers[index].acquire("sms-main", rate, burst) == 0.0:
                        granted[index] += 1
                        took = True
        assert sum(granted) == int(burst + rate * seconds)
        assert min(granted) > 0  # both workers got tokens from the one bucket
    finally:
        await other.aclose()


async def test_the_wait_says_when_enough_tokens_are_back(redis: Redis) -> None:
    clock = Clock()
    bucket = TokenBucket(redis, clock=clock)
    for _ in range(4):
        assert await bucket.acquire("p", rate=2.0, burst=4.0) == 0.0
    assert await bucket.acquire("p", rate=2.0, burst=4.0) == pytest.approx(0.5)
    assert await bucket.acquire("p", rate=2.0, burst=4.0, tokens=3) == pytest.approx(1.5)
    clock.now += 0.5
    assert await bucket.acquire("p", rate=2.0, burst=4.0) == 0.0  # a refused request took nothing
    clock.now += 100
    for _ in range(4):  # a long quiet spell refills only up to the burst
        assert await bucket.acquire("p", rate=2.0, burst=4.0) == 0.0
    assert await bucket.acquire("p", rate=2.0, burst=4.0) > 0


async def test_buckets_are_per_key_and_expire_when_idle(redis: Redis) -> None:
    bucket = TokenBucket(redis)  # Redis TIME
    assert await bucket.acquire("aliyun-main", rate=1.0, burst=1.0) == 0.0
    wait = await bucket.acquire("aliyun-main", rate=1.0, burst=1.0)
    assert 0.0 < wait <= 1.0
    assert await bucket.acquire("tencent-backup", rate=1.0, burst=1.0) == 0.0
    ttl = await redis.pttl(BUCKET_KEY.format("aliyun-main"))
    assert 0 < ttl <= 2000  # burst / rate seconds to refill, plus a second


@pytest.mark.parametrize(("rate", "burst", "tokens", "message"), [
    (0.0, 1.0, 1, "rate and burst must be positive"),
    (1.0, 0.0, 1, "rate and burst must be positive"),
    (1.0, 2.0, 3, r"tokens must be in \(0, burst=2.0\]"),
    (1.0, 2.0, 0, r"tokens must be in \(0, burst=2.0\]"),
])
async def test_bad_limits_are_refused(redis: Redis, rate: float, burst: float, tokens: float,
                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await TokenBucket(redis).acquire("p", rate, burst, tokens)
