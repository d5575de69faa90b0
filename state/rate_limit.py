"""Token buckets in Redis, one per provider, shared by every worker: a provider's rate is respected
across the whole deployment, not per process.

One Lua script refills and takes atomically. The bucket is a hash {tokens, ts}; time is Redis `TIME`
(one clock for all workers, so skewed hosts cannot over-grant) unless the caller passes a clock.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

BUCKET_KEY = "sb:rate:{}"

# Returns the wait as a string: Lua numbers returned to Redis are truncated to integers.
_ACQUIRE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
-- A hair of tolerance: refills summed in floating point fall short of whole tokens by ~1e-12.
if tokens + 1e-9 >= want then
  tokens = tokens - want
else
  wait = (want - tokens) / rate
end
-- %.17g keeps every digit: tostring() would round the timestamp to a tenth of a millisecond.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', math.max(tokens, 0)),
  'ts', string.format('%.17g', ts))
-- An idle bucket is full again after burst / rate seconds; keep it no longer than that.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""


class TokenBucket:
    """`acquire` takes tokens from the bucket named `key`, refilled at `rate`/s up to `burst`."""

    def __init__(self, redis: Redis, clock: Callable[[], float] | None = None) -> None:
        self._redis = redis
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, key: str, rate: float, burst: float, tokens: float = 1) -> float:
        """0.0 when the tokens were taken; otherwise the seconds until enough will be there (none taken)."""
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate limit {key!r}: rate and burst must be positive, got {rate} and {burst}")
        if not 0 < tokens <= burst:
            raise ValueError(f"rate limit {key!r}: tokens must be in (0, burst={burst}], got {tokens}")
        now = self._clock() if self._clock is not None else -1.0
        wait = await self._acquire(keys=[BUCKET_KEY.format(key)], args=[rate, burst, tokens, now])
        return float(wait.decode() if isinstance(wait, bytes) else wait)
