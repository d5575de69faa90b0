"""What the alert evaluator reads and keeps in Redis: counts in time buckets, consumer lag as each
worker sees it, and the state of each incident.

Every worker drains its watched counts (metrics.catalog.WATCHED) into the same buckets, so a rule sees
the fleet, whichever worker evaluates it. Buckets are keyed by the worker's own clock and expire by a
duration; nothing here mixes that clock with Redis's.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

BUCKET_SECONDS = 10
KEEP_SECONDS = 2 * 3600
"""How long a bucket lives: the longest alert window (1 h) with room to spare."""
LAG_FRESH_SECONDS = 30.0
"""A worker's lag report older than this is ignored (the worker stopped or lost its partitions)."""

_BUCKETS = "sb:watch:counts:"
_LAG = "sb:watch:lag"
_INCIDENT = "sb:alert:"


class WatchWindow:
    """Watched counts in BUCKET_SECONDS buckets, summed over a window on read."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(self, counts: Mapping[str, int], at: float | None = None) -> None:
        live = {name: n for name, n in counts.items() if n}
        if not live:
            return
        key = f"{_BUCKETS}{_bucket(time.time() if at is None else at)}"
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, n in live.items():
                pipe.hincrby(key, name, n)
            pipe.expire(key, KEEP_SECONDS)
            await pipe.execute()

    async def window(self, seconds: float, at: float | None = None) -> dict[str, int]:
        """The counts of the last `seconds` (whole buckets, the current one included)."""
        last = _bucket(time.time() if at is None else at)
        count = max(1, math.ceil(seconds / BUCKET_SECONDS))
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in range(last - count + 1, last + 1):
                pipe.hgetall(f"{_BUCKETS}{index}")
            buckets = await pipe.execute()
        total: Counter[str] = Counter()
        for bucket in buckets:
            for name, n in bucket.items():
                total[_text(name)] += int(n)
        return dict(total)


class LagBoard:
    """Each worker's consumer lag per stage and topic (its partitions), summed over the fresh reports."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def report(self, worker: str, lags: Mapping[tuple[str, str], int], at: float | None = None) -> None:
        now = time.time() if at is None else at
        if not lags:
            return
        await self._redis.hset(
            _LAG,
            mapping={
                f"{stage}|{topic}|{worker}": json.dumps({"lag": lag, "at": now})
                for (stage, topic), lag in lags.items()
            },
        )

    async def by_stage(self, at: float | None = None) -> dict[str, int]:
        """Lag per stage over every worker that reported within LAG_FRESH_SECONDS; stale reports go."""
        now = time.time() if at is None else at
        lags: Counter[str] = Counter()
        stale: list[str] = []
        for field, raw in (await self._redis.hgetall(_LAG)).items():
            name = _text(field)
            try:
                report = json.loads(raw)
                fresh = now - float(report["at"]) <= LAG_FRESH_SECONDS
                lag = int(report["lag"])
            except (ValueError, KeyError, TypeError):
                fresh, lag = False, 0
            if fresh:
                lags[name.split("|", 1)[0]] += lag
            else:
                stale.append(name)
        if stale:
            await self._redis.hdel(_LAG, *stale)
        return dict(lags)


@dataclass(frozen=True)
class Transition:
    """An incident's state to announce: `firing` or `resolved`, and which incident of its rule."""

    state: str
    incident: int
    since: float


# One key per (rule, subject): a script on it is atomic, so two evaluators cannot both open an incident,
# and a notice not yet confirmed sent (`notified` 0) is handed out again, to be deduplicated downstream
# by its event id, instead of lost.
_MOVE = """
local key, want, now = KEYS[1], ARGV[1], ARGV[2]
local state = redis.call('HGET', key, 'state')
if want == 'firing' and state ~= 'firing' then
  redis.call('HINCRBY', key, 'incident', 1)
  redis.call('HSET', key, 'state', 'firing', 'since', now, 'notified', '0')
elseif want == 'resolved' and state == 'firing' then
  redis.call('HSET', key, 'state', 'resolved', 'since', now, 'notified', '0')
end
local current = redis.call('HMGET', key, 'state', 'incident', 'since', 'notified')
if current[1] == want and current[4] == '0' then
  return {current[1], current[2], current[3]}
end
return false
"""
_NOTIFIED = """
local current = redis.call('HMGET', KEYS[1], 'state', 'incident')
if current[1] == ARGV[1] and current[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'notified', '1')
  return 1
end
return 0
"""


class Incidents:
    """Once per incident: `move` hands out a transition only the first time (until it is `notified`)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._move = redis.register_script(_MOVE)
        self._notified = redis.register_script(_NOTIFIED)

    async def move(self, rule: str, subject: str, firing: bool, at: float | None = None) -> Transition | None:
        """The transition to announce if the incident of (rule, subject) changed or is still unannounced."""
        now = time.time() if at is None else at
        want = "firing" if firing else "resolved"
        moved = await self._move(keys=[_key(rule, subject)], args=[want, repr(now)])
        if not moved:
            return None
        state, incident, since = (_text(part) for part in moved)
        return Transition(state, int(incident), float(since))

    async def notified(self, rule: str, subject: str, transition: Transition) -> None:
        await self._notified(keys=[_key(rule, subject)], args=[transition.state, str(transition.incident)])

    async def firing(self) -> dict[str, str]:
        """(rule|subject) -> incident number, of every incident firing now (for status and tests)."""
        found: dict[str, str] = {}
        async for key in self._redis.scan_iter(match=f"{_INCIDENT}*", count=500):
            name = _text(key)
            state, incident = await self._redis.hmget(name, ["state", "incident"])
            if state is not None and _text(state) == "firing":
                found[name.removeprefix(_INCIDENT)] = _text(incident or "")
        return found


def _key(rule: str, subject: str) -> str:
    return f"{_INCIDENT}{rule}|{subject}"


def _bucket(at: float) -> int:
    return int(at // BUCKET_SECONDS)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
