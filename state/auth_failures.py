"""Failed authentication, counted in Redis: per source address (any credential: operator password or
token, app key, end-user token) and per operator name (passwords only, for the lockout).

Each counter is a key INCRemented per failure whose expiry is set by the first failure of its window
(`EXPIRE ... NX`), so the window and the wait a refusal quotes are Redis's own clock; nothing here reads
the local clock. Redis layout: `sb:auth:fail:{source}` and `sb:{ops}:fail:{name}` counters,
`sb:{ops}:lock:{name}` present while an operator is locked out (its TTL the time left).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

_SOURCE = "sb:auth:fail:{}"
_OPERATOR = "sb:{{ops}}:fail:{}"
_LOCK = "sb:{{ops}}:lock:{}"


@dataclass(frozen=True)
class FailureLimits:
    """`per_source` failures within `source_window` seconds refuse that source until the window ends;
    `per_operator` failed passwords within `operator_window` lock the operator for `lockout` seconds."""

    per_source: int = 20
    source_window: int = 300
    per_operator: int = 5
    operator_window: int = 900
    lockout: int = 900

    def __post_init__(self) -> None:
        for name in ("per_source", "source_window", "per_operator", "operator_window", "lockout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class AuthFailures:
    """Counts failures and answers how long a source or an operator must wait (0: not refused)."""

    def __init__(self, redis: Redis, limits: FailureLimits = FailureLimits()) -> None:
        self._redis = redis
        self.limits = limits

    async def source_wait(self, source: str) -> int:
        """Seconds until `source` may try again; 0 while under the limit."""
        key = _SOURCE.format(source)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = await pipe.execute()
        return _wait(count, ttl, self.limits.per_source)

    async def source_failed(self, source: str) -> int:
        """Count a failure from `source`; the seconds it must now wait (0: it may still try)."""
        count, ttl = await self._count(_SOURCE.format(source), self.limits.source_window)
        return _wait(count, ttl, self.limits.per_source)

    async def operator_wait(self, name: str) -> int:
        """Seconds left of the operator's lockout; 0 when not locked out."""
        ttl = int(await self._redis.ttl(_LOCK.format(name)))
        return max(ttl, 0)

    async def operator_failed(self, name: str) -> int:
        """Count a failed password; locks the operator out when this failure reaches the limit.
        Returns the seconds of lockout now in force (0: none)."""
        count, _ = await self._count(_OPERATOR.format(name), self.limits.operator_window)
        if count >= self.limits.per_operator:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_LOCK.format(name), 1, ex=self.limits.lockout)
                pipe.delete(_OPERATOR.format(name))
                await pipe.execute()
            return self.limits.lockout
        return await self.operator_wait(name)

    async def operator_succeeded(self, name: str) -> None:
        """A correct password clears the operator's count of failures."""
        await self._redis.delete(_OPERATOR.format(name))

    async def unlock(self, name: str) -> None:
        """End a lockout and its count (an administrator's unlock)."""
        await self._redis.delete(_LOCK.format(name), _OPERATOR.format(name))

    async def _count(self, key: str, window: int) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        return int(count), int(ttl)


def _wait(count: bytes | str | int | None, ttl: int, limit: int) -> int:
    if count is None or int(count) < limit:
        return 0
    return max(int(ttl), 1)
