"""Frequency caps, checked and counted atomically in Redis at send time.

Each cap keeps one sorted set per scope value, a sliding-window log of the sends it counted, scored
by send time in milliseconds: `sb:cap:{user}:id:scope` for a cap counted per user (hash-tagged by the
user, so all of a person's caps share a slot), `sb:cap:{id:scope}` for one counted across people (per
app, campaign, channel or global). The member is the send's key (message id, channel, step), so a
redelivered dispatch finds itself already counted and passes without counting again. One Lua script
checks every window of every cap of a dispatch that shares a slot: all pass and the send is counted
in each, or none is counted; Redis runs scripts one at a time, so two workers cannot both take the
last slot. A dispatch whose caps span slots (a per-user cap beside a global one) runs one script per
slot, and when one refuses, the counts the others made are taken back: for that moment a cap may
count a send that does not go out (refusing too much, never too little).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from redis.asyncio import Redis

from records.plan import CapLimit, FrequencyCap
from records.topics import Dispatch
from state.keyspace import slot, tag

# KEYS: one sorted set per cap. ARGV: now (ms), member, then per cap: its number of limits, its
# longest window (ms), and (count, window ms) per limit. Returns {} when the send passed and was
# counted, else one {cap, limit, allowed_at ms} per exceeded window (1-based indices).
_CHECK = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local at = 3
local fresh = {}
local over = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  local longest = tonumber(ARGV[at + 1])
  at = at + 2
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest)
  local counted = redis.call('ZSCORE', key, member)
  for j = 1, n do
    local limit = tonumber(ARGV[at])
    local window = tonumber(ARGV[at + 1])
    at = at + 2
    if not counted then
      local since = '(' .. (now - window)
      local used = redis.call('ZCOUNT', key, since, '+inf')
      if used >= limit then
        -- Allowed again once enough of the oldest sends in the window have aged out of it.
        local oldest = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
        table.insert(over, {i, j, tonumber(oldest[2]) + window})
      end
    end
  end
  if not counted then table.insert(fresh, {key, longest}) end
end
if #over > 0 then return over end
for _, entry in ipairs(fresh) do
  redis.call('ZADD', entry[1], now, member)
  redis.call('PEXPIRE', entry[1], entry[2])
end
return {}
"""

_FORGET = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 0
"""


@dataclass(frozen=True)
class CapExceeded:
    """One window of one cap that a send would exceed, and when that window allows it again."""

    cap: FrequencyCap
    limit: CapLimit
    allowed_at: datetime


@dataclass(frozen=True)
class CapVerdict:
    """The outcome of a cap check: `passed` (and counted), or `delay` to `until`, or `drop`."""

    outcome: Literal["passed", "delay", "drop"]
    exceeded: tuple[CapExceeded, ...] = ()
    until: datetime | None = None
    """For `delay`: the earliest time every exceeded window allows the send."""

    @property
    def reason(self) -> str:
        """Which caps and windows were exceeded, and what happens now, for the `capped` receipt."""
        if self.outcome == "passed":
            return ""
        named = "; ".join(
            f"cap {e.cap.id}: {e.limit.count} per {_duration(e.limit.window)} reached" for e in self.exceeded
        )
        if self.outcome == "drop":
            return f"{named}; dropped"
        assert self.until is not None  # noqa: S101 - a delay always carries its time
        return f"{named}; delayed until {self.until.isoformat()}"


PASSED = CapVerdict("passed")


def scope_value(cap: FrequencyCap, dispatch: Dispatch) -> str:
    """What the cap counts per for this dispatch, e.g. `user=s1|channel=sms`; `global` when unscoped."""
    values = {
        "user": dispatch.user_id,
        "channel": dispatch.channel,
        "category": dispatch.event.category,
        "app": dispatch.event.app,
        "campaign": dispatch.event.campaign,
    }
    return "|".join(f"{scope}={values[scope]}" for scope in cap.scope) or "global"


def send_key(dispatch: Dispatch) -> str:
    """The member a send is counted under: the same as its idempotency key, so redelivery counts once."""
    return f"{dispatch.message_id}:{dispatch.channel}:{dispatch.step}"


class FrequencyCaps:
    """Checks a dispatch against its plan's caps and counts it when every window allows it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._check = redis.register_script(_CHECK)
        self._forget = redis.register_script(_FORGET)

    async def check_many(
        self, dispatches: Sequence[Dispatch], now: datetime | None = None
    ) -> list[CapVerdict]:
        """One verdict per dispatch, checked in order in one round trip; uncapped or bypassing ones pass."""
        at = now or datetime.now(UTC)
        capped = [d for d in dispatches if _capped(d)]
        if not capped:
            return [PASSED] * len(dispatches)
        calls = [(n, call) for n, d in enumerate(capped) for call in script_calls(d, at)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, call in calls:
                await self._check(keys=call.keys, args=call.args, client=pipe)
            answers = await pipe.execute()
        exceeded: list[list[tuple[int, int, int]]] = [[] for _ in capped]
        for (n, call), answer in zip(calls, answers, strict=True):
            exceeded[n] += [(call.caps[i - 1], j, ms) for i, j, ms in answer]
        # A send refused in one slot must not stay counted in another.
        counted = [
            (capped[n], call)
            for (n, call), answer in zip(calls, answers, strict=True)
            if not answer and exceeded[n]
        ]
        if counted:
            async with self._redis.pipeline(transaction=False) as pipe:
                for dispatch, call in counted:
                    await self._forget(keys=call.keys, args=[send_key(dispatch)], client=pipe)
                await pipe.execute()
        verdicts = iter(_verdict(d, found) for d, found in zip(capped, exceeded, strict=True))
        return [next(verdicts) if _capped(d) else PASSED for d in dispatches]

    async def check(self, dispatch: Dispatch, now: datetime | None = None) -> CapVerdict:
        [verdict] = await self.check_many([dispatch], now)
        return verdict

    async def forget(self, dispatch: Dispatch) -> None:
        """Uncount a send that did not go out (it failed), so it does not use up anyone's cap."""
        if _capped(dispatch):
            for keys in _by_slot([cap_key(cap, dispatch) for cap in dispatch.plan.caps]).values():
                await self._forget(keys=[k for _, k in keys], args=[send_key(dispatch)])


def _capped(dispatch: Dispatch) -> bool:
    # Exemptions were resolved by the rules; a `caps` bypass still wins over caps the plan carries.
    return bool(dispatch.plan.caps) and "caps" not in dispatch.plan.bypass


def cap_key(cap: FrequencyCap, dispatch: Dispatch) -> str:
    """The sorted set counting `cap` for this dispatch's scope value, hash-tagged (module docstring)."""
    scope = scope_value(cap, dispatch)
    if "user" in cap.scope:
        return f"sb:cap:{tag(dispatch.user_id)}:{cap.id}:{scope}"
    return f"sb:cap:{tag(f'{cap.id}:{scope}')}"


@dataclass(frozen=True)
class CapCall:
    """One script call: the caps of a dispatch whose keys share a slot (1-based indices into the plan)."""

    caps: tuple[int, ...]
    keys: list[str]
    args: list[str | int]


def script_calls(dispatch: Dispatch, now: datetime) -> list[CapCall]:
    """The script calls checking a dispatch's caps: one per slot their keys fall in."""
    caps = dispatch.plan.caps
    calls: list[CapCall] = []
    for group in _by_slot([cap_key(cap, dispatch) for cap in caps]).values():
        args: list[str | int] = [_ms(now), send_key(dispatch)]
        for index, _ in group:
            windows = [_window_ms(limit.window) for limit in caps[index - 1].limits]
            args += [len(windows), max(windows)]
            for limit, window in zip(caps[index - 1].limits, windows, strict=True):
                args += [limit.count, window]
        calls.append(CapCall(tuple(i for i, _ in group), [k for _, k in group], args))
    return calls


def _by_slot(keys: Sequence[str]) -> dict[int, list[tuple[int, str]]]:
    groups: dict[int, list[tuple[int, str]]] = {}
    for index, key in enumerate(keys, start=1):
        groups.setdefault(slot(key), []).append((index, key))
    return groups


def _verdict(dispatch: Dispatch, answer: Sequence[tuple[int, int, int]]) -> CapVerdict:
    if not answer:
        return PASSED
    caps = dispatch.plan.caps
    exceeded = tuple(
        CapExceeded(caps[i - 1], caps[i - 1].limits[j - 1], datetime.fromtimestamp(ms / 1000, UTC))
        for i, j, ms in sorted(answer)
    )
    if any(e.cap.on_exceed == "drop" for e in exceeded):
        return CapVerdict("drop", tuple(e for e in exceeded if e.cap.on_exceed == "drop"))
    return CapVerdict("delay", exceeded, max(e.allowed_at for e in exceeded))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _window_ms(window: timedelta) -> int:
    ms = int(window.total_seconds() * 1000)
    if ms < 1:
        raise ValueError(f"a cap window must be at least 1 ms, got {window}")
    return ms


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
