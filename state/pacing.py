"""定速 (steady-rate sending): at most N sends per second per key, across every worker.

A Lua script hands out send slots `max(now, last + 1/N)` per key (`sb:pace:{key}`), so slots are
evenly spaced whoever asks. A message keeps the slot it was given (`sb:pace:{key}:given`), so a
delivery decided again at its slot, or redelivered, does not take a second one. The braces are
literal: the pacing key is the hash tag of both keys, so the script's keys share a Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from state.keyspace import tag

# How long a message's slot is remembered after it passed: longer than any redelivery delay.
REMEMBER_US = 3_600_000_000

def pace_keys(key: str) -> tuple[str, str]:
    """The last slot handed out under `key` and the slots given per message: one hash tag."""
    base = "sb:pace:" + tag(key)
    return base, base + ":given"


# KEYS: last slot, given slots. ARGV: now (us), interval (us), message id, remember (us). Times are
# microseconds so 1/N stays exact enough for thousands per second.
_SLOT = """
local now = tonumber(ARGV[1])
local given = redis.call('ZSCORE', KEYS[2], ARGV[3])
if given then return given end
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
-- Rounded up, so rounding never lets more than N a second through.
local slot = math.ceil(math.max(now, last + tonumber(ARGV[2])))
local keep = math.floor(slot - now + tonumber(ARGV[4]))
redis.call('SET', KEYS[1], string.format('%.0f', slot), 'PX', math.max(1, math.floor(keep / 1000)))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], string.format('%.0f', slot), ARGV[3])
redis.call('PEXPIRE', KEYS[2], math.max(1, math.floor(keep / 1000)))
return string.format('%.0f', slot)
"""


@dataclass(frozen=True)
class SlotRequest:
    """A message asking for a send slot under a pacing key at `per_second`."""

    key: str
    per_second: float
    message_id: str


class Pacer:
    """Hands out evenly spaced send slots per key; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._slot = redis.register_script(_SLOT)

    async def slots(self, requests: Sequence[SlotRequest], now: datetime | None = None) -> list[datetime]:
        """One slot per request, in order, in one round trip; a slot at `now` means send now."""
        if not requests:
            return []
        at = _us(now or datetime.now(UTC))
        async with self._redis.pipeline(transaction=False) as pipe:
            for request in requests:
                if request.per_second <= 0:
                    raise ValueError(
                        f"pacing {request.key!r}: per_second must be > 0, got {request.per_second}"
                    )
                interval = 1_000_000 / request.per_second
                await self._slot(
                    keys=list(pace_keys(request.key)),
                    args=[at, repr(interval), request.message_id, REMEMBER_US],
                    client=pipe,
                )
            answers = await pipe.execute()
        return [datetime.fromtimestamp(float(_text(a)) / 1_000_000, UTC) for a in answers]


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
