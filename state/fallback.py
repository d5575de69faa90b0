"""The durable fallback schedule (补发) in Redis: each message's next step, fired iff its condition holds.

What a message "reached" is the furthest level any of its sends reported (receipts from every channel
and every step count; levels never go down):

| level | from receipts |
| --- | --- |
| 1 sent | `sent` on a channel that may report delivery later (sms, wechat, push) |
| 2 delivered | `delivered` (the inbox's and webhook's are immediate); `sent` on email and robot |
| 3 read | `read` (inbox), `opened` (email) |
| 4 clicked | `clicked`, `converted` |

An email accepted by the mail server is all SMTP tells (a later bounce arrives as `failed`); a
robot's post to its group chat is as delivered as it gets. Push providers (FCM, APNs) report no
more than `sent`: a `not_delivered` step after a push fires unless the app reports `delivered` (or
`opened`) as a receipt of its own.

A step's condition holds while: `not_delivered` level < 2, `not_read` level < 3, `not_clicked` level < 4;
`failed` when every send seen so far (per channel and step) has failed, at least one has, and no
later success replaced it. A `sent` followed by `failed` on the same send (an SMS delivery report) is a
failure; a failure never lowers the level, so a bounced email stays delivered.

Each message has at most one step pending, in the due set of its shard (`sb:fallback:{shard}`)
scored by its due time (the first send plus the step's `after`). A receipt that makes the pending
step's condition impossible moves the message on to the next step that can still hold, inside one
script: no race with firing. Firing claims due steps in one script that re-checks the condition,
marks `f:<n>` so a step is resolved at most once, schedules the next step (relative to the first
send, even when this one was skipped) and puts the fired step in its shard's
`sb:fallback:{shard}:inflight`. A step claimed by a worker that died before emitting it is handed
out again after the lease, re-checked (so a read in between still cancels it). The send
ledger keys sends by (message, channel, step), so a re-emitted step that had got out is not sent twice.

Layout: hash `sb:fb:{shard}:message_id` holds `d` (the first dispatch, JSON with its plan), `a` (raw
addresses, JSON or empty), `t0` (first send, unix seconds), `n` (steps), `c:<i>`/`o:<i>` (condition
code and offset seconds of step i), `next` (pending step index, 0 = none), `lvl`, `ns`/`nf` (sends
seen / failed), `s:<channel>:<step>` (each send's state), `busy` (steps in flight) and `sent0` (when
the first send's first outcome came: that moment, if later, replaces `t0`, so a send held back by a
cap's delay moves the chain with it). It expires
`retention` after the last step's due time (a time-to-live counted from the arming `at`, the caller's
now), so a redelivered delivery cannot re-arm it before then.

The scripts reach each message's hash by name, so a message's hash and its shard's due and in-flight
sets share the shard's hash tag (`state.keyspace`): `keyspace.SHARDS` shards spread the chains over a
Redis Cluster, every script call runs in one shard, and a batch of receipts is one call per shard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from redis.asyncio import Redis

from records.plan import FallbackCondition, FallbackStep
from records.topics import Dispatch, Receipt
from state.keyspace import SHARD_TAGS, shard_of, share


@dataclass(frozen=True)
class ChainShard:
    """One shard of the fallback chains: its due set, in-flight set and message-hash prefix."""

    due: str
    inflight: str
    prefix: str

    def message(self, message_id: str) -> str:
        return self.prefix + message_id


SHARDS: Final = tuple(
    ChainShard(f"sb:fallback:{t}", f"sb:fallback:{t}:inflight", f"sb:fb:{t}:") for t in SHARD_TAGS
)


def chain_shard(message_id: str) -> ChainShard:
    return SHARDS[shard_of(message_id)]

CONDITION_CODES: Final[dict[FallbackCondition, str]] = {
    "not_delivered": "D",
    "not_read": "R",
    "not_clicked": "C",
    "failed": "F",
}
FAILED: Final = -1
LEVELS: Final[dict[str, int]] = {
    "sent": 1,
    "delivered": 2,
    "read": 3,
    "opened": 3,
    "clicked": 4,
    "converted": 4,
    "failed": FAILED,
}
OBSERVED_STATUSES: Final = frozenset(LEVELS)
_SEPARATORS: Final = frozenset("\t\n")
# Channels whose providers never report delivery: an accepted send is as delivered as it gets.
SENT_IS_DELIVERED: Final = frozenset({"email", "robot"})

_COMMON = """
local function holds(h, i)
  local c = redis.call('HGET', h, 'c:' .. i)
  local lvl = tonumber(redis.call('HGET', h, 'lvl'))
  if c == 'D' then return lvl < 2 end
  if c == 'R' then return lvl < 3 end
  if c == 'C' then return lvl < 4 end
  local ns = tonumber(redis.call('HGET', h, 'ns'))
  return ns > 0 and ns == tonumber(redis.call('HGET', h, 'nf'))
end
local function possible(h, i)
  local c = redis.call('HGET', h, 'c:' .. i)
  local lvl = tonumber(redis.call('HGET', h, 'lvl'))
  if c == 'R' then return lvl < 3 end
  if c == 'C' then return lvl < 4 end
  return lvl < 2
end
local function tidy(h)
  if redis.call('HGET', h, 'next') == '0' and tonumber(redis.call('HGET', h, 'busy')) <= 0 then
    redis.call('HDEL', h, 'd', 'a')
  end
end
-- Schedule the first step from `from` on that can still hold, relative to the first send.
local function advance(due, h, mid, from)
  local n = tonumber(redis.call('HGET', h, 'n'))
  for i = from, n do
    if possible(h, i) then
      local at = tonumber(redis.call('HGET', h, 't0')) + tonumber(redis.call('HGET', h, 'o:' .. i))
      redis.call('ZADD', due, at, mid)
      redis.call('HSET', h, 'next', i)
      return
    end
  end
  redis.call('ZREM', due, mid)
  redis.call('HSET', h, 'next', 0)
  tidy(h)
end
"""

_ARM = (
    _COMMON
    + """
local h, due = KEYS[1], KEYS[2]
if redis.call('EXISTS', h) == 1 then return 0 end
redis.call('HSET', h, 'd', ARGV[2], 'a', ARGV[3], 't0', ARGV[4], 'n', ARGV[6],
  'lvl', 0, 'ns', 0, 'nf', 0, 'busy', 0, 'next', 0)
for i = 1, tonumber(ARGV[6]) do
  redis.call('HSET', h, 'c:' .. i, ARGV[5 + 2 * i], 'o:' .. i, ARGV[6 + 2 * i])
end
redis.call('EXPIRE', h, ARGV[5])
advance(due, h, ARGV[1], 1)
return 1
"""
)

# ARGV[1]: the hash prefix; ARGV[2]: one line per receipt,
# "message id TAB level TAB channel:step TAB unix time of the receipt".
# One blob rather than three arguments per receipt: encoding thousands of arguments costs the
# worker more than the script itself, and most receipts are for messages without a chain.
_OBSERVE = (
    _COMMON
    + """
local due, prefix = KEYS[1], ARGV[1]
local cancelled = 0
local pattern = '([^\\t\\n]+)\\t([^\\t\\n]+)\\t([^\\t\\n]+)\\t([^\\t\\n]+)\\n'
for mid, level, send, at in string.gmatch(ARGV[2], pattern) do
  local h = prefix .. mid
  if redis.call('HEXISTS', h, 'n') == 1 then
    local v, key = tonumber(level), 's:' .. send
    -- The first outcome of the first send fixes when it went out: a send held back (a cap's delay)
    -- moves the chain's clock with it.
    if v <= 2 and string.sub(send, -2) == ':0' and redis.call('HSETNX', h, 'sent0', at) == 1 then
      if tonumber(at) > tonumber(redis.call('HGET', h, 't0')) then
        redis.call('HSET', h, 't0', at)
        local pending = tonumber(redis.call('HGET', h, 'next'))
        if pending > 0 and redis.call('ZSCORE', due, mid) then
          redis.call('ZADD', due, tonumber(at) + tonumber(redis.call('HGET', h, 'o:' .. pending)), mid)
        end
      end
    end
    local old = tonumber(redis.call('HGET', h, key))
    if v == -1 then
      if old == nil then
        redis.call('HSET', h, key, -1)
        redis.call('HINCRBY', h, 'ns', 1)
        redis.call('HINCRBY', h, 'nf', 1)
      elseif old == 1 then
        redis.call('HSET', h, key, -1)
        redis.call('HINCRBY', h, 'nf', 1)
      end
    else
      if old == nil then
        redis.call('HSET', h, key, v)
        redis.call('HINCRBY', h, 'ns', 1)
      elseif old == -1 then
        redis.call('HSET', h, key, v)
        redis.call('HINCRBY', h, 'nf', -1)
      elseif v > old then
        redis.call('HSET', h, key, v)
      end
      if v > tonumber(redis.call('HGET', h, 'lvl')) then redis.call('HSET', h, 'lvl', v) end
    end
    local pending = tonumber(redis.call('HGET', h, 'next'))
    if pending > 0 and not possible(h, pending) then
      advance(due, h, mid, pending + 1)
      cancelled = cancelled + 1
    end
  end
end
return cancelled
"""
)

_FIRE = (
    _COMMON
    + """
local due, inflight, prefix = KEYS[1], KEYS[2], ARGV[4]
local now, limit = ARGV[1], tonumber(ARGV[2])
local out = {}
local function emit(h, mid, i)
  local fields = redis.call('HMGET', h, 'd', 'a', 't0')
  table.insert(out, {mid, tostring(i), fields[1], fields[2], fields[3]})
end
-- Steps whose emitter died: handed out again if their condition still holds.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', ARGV[3], 'LIMIT', 0, limit)) do
  local sep = string.find(member, '|', 1, true)
  local mid, i = string.sub(member, 1, sep - 1), tonumber(string.sub(member, sep + 1))
  local h = prefix .. mid
  if redis.call('HEXISTS', h, 'd') == 1 and holds(h, i) then
    redis.call('ZADD', inflight, now, member)
    emit(h, mid, i)
  else
    redis.call('ZREM', inflight, member)
    if redis.call('EXISTS', h) == 1 then
      redis.call('HINCRBY', h, 'busy', -1)
      tidy(h)
    end
  end
end
local room = limit - #out
if room <= 0 then return out end
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, room)) do
  redis.call('ZREM', due, mid)
  local h = prefix .. mid
  local i = tonumber(redis.call('HGET', h, 'next') or '0')
  if i > 0 then
    -- The claim key of (message, step): a step is resolved, fired or not, at most once.
    if redis.call('HSETNX', h, 'f:' .. i, now) == 1 and holds(h, i) then
      redis.call('ZADD', inflight, now, mid .. '|' .. i)
      redis.call('HINCRBY', h, 'busy', 1)
      emit(h, mid, i)
    end
    advance(due, h, mid, i + 1)
  end
end
return out
"""
)

_DONE = (
    _COMMON
    + """
local inflight, prefix = KEYS[1], ARGV[1]
local finished = 0
for k = 2, #ARGV do
  local member = ARGV[k]
  if redis.call('ZREM', inflight, member) == 1 then
    finished = finished + 1
    local h = prefix .. string.sub(member, 1, string.find(member, '|', 1, true) - 1)
    if redis.call('EXISTS', h) == 1 then
      redis.call('HINCRBY', h, 'busy', -1)
      tidy(h)
    end
  end
end
return finished
"""
)


@dataclass(frozen=True)
class FiredStep:
    """A fallback step whose time came with its condition holding: to be turned into a dispatch."""

    message_id: str
    step: FallbackStep
    first: Dispatch
    """The message's first dispatch, with its event, rule and plan."""
    addresses: dict[str, str] | None
    """Raw addresses of a recipient without a profile; None for a user in the directory."""
    first_sent_at: datetime

    @property
    def claim(self) -> str:
        return f"{self.message_id}|{_index(self.first, self.step)}"


class FallbackSchedule:
    """Arms, advances and fires fallback chains; every transition is one Lua script."""

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = 60.0,
        retention: timedelta = timedelta(days=1),
        sent_is_delivered: frozenset[str] = SENT_IS_DELIVERED,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"FallbackSchedule lease_seconds must be positive, got {lease_seconds}")
        self._redis = redis
        self._lease = lease_seconds
        self._retention = retention
        self._sent_is_delivered = sent_is_delivered
        self._arm = redis.register_script(_ARM)
        self._observe = redis.register_script(_OBSERVE)
        self._fire = redis.register_script(_FIRE)
        self._done = redis.register_script(_DONE)

    async def arm(self, first: Dispatch, addresses: dict[str, str] | None, at: datetime) -> bool:
        """Schedule the chain of `first.plan.fallback` from `at` (the first send: the caller's now, on
        whatever clock it keeps); False if this message was armed before."""
        return (await self.arm_many([(first, addresses, at)]))[0]

    async def arm_many(self, items: Sequence[tuple[Dispatch, dict[str, str] | None, datetime]]) -> list[bool]:
        """`arm` for a batch of (first dispatch, raw addresses, first send) in one round trip."""
        calls = [(first, self._arm_args(first, addresses, at)) for first, addresses, at in items]
        answers: list[bool] = [False] * len(calls)
        live = [(i, first, args) for i, (first, args) in enumerate(calls) if args is not None]
        if not live:
            return answers
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, first, args in live:
                shard = chain_shard(first.message_id)
                keys = [shard.message(first.message_id), shard.due]
                await self._arm(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        for (i, _, _), result in zip(live, results, strict=True):
            answers[i] = bool(result)
        return answers

    def _arm_args(
        self, first: Dispatch, addresses: dict[str, str] | None, at: datetime
    ) -> list[str | int | float] | None:
        steps = _ordered(first.plan.fallback)
        if not steps:
            return None
        if at.tzinfo is None:
            raise ValueError(f"arm {first.message_id}: `at` must carry a timezone, got {at.isoformat()}")
        t0 = at.timestamp()
        # How long from `at` (the caller's now) the chain is kept, not a moment on Redis's own clock:
        # an absolute EXPIREAT from an injected `at` in the past would drop the chain at once.
        keep = max(s.after.total_seconds() for s in steps) + self._retention.total_seconds()
        args: list[str | int | float] = [
            first.message_id,
            first.model_dump_json(),
            json.dumps(addresses) if addresses is not None else "",
            t0,
            int(keep) + 1,
            len(steps),
        ]
        for step in steps:
            args += [CONDITION_CODES[step.condition], step.after.total_seconds()]
        return args

    async def observe(
        self, message_id: str, status: str, channel: str, step: int, at: datetime | None = None
    ) -> int:
        """Record one receipt (made `at`, default now); how many pending steps it cancelled."""
        return await self.observe_many([(message_id, status, channel, step, at)])

    async def observe_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Record a batch of receipts (others than sends' outcomes and engagement are ignored)."""
        return await self.observe_many(
            (r.message_id, r.status, r.channel, r.step, r.event_time) for r in receipts
        )

    async def observe_many(self, items: Iterable[tuple[str, str, str, int, datetime | None]]) -> int:
        """Record (message id, status, channel, step, when) tuples in one script call."""
        lines: dict[ChainShard, list[str]] = {}
        now = time.time()
        for message_id, status, channel, step, at in items:
            level = self.level(status, channel)
            # Ids with a tab or newline are not Switchboard's (ours are hex digests): no chain to move.
            if level is None or not message_id or _SEPARATORS & set(message_id) or _SEPARATORS & set(channel):
                continue
            moment = now if at is None else _aware(at).timestamp()
            line = f"{message_id}\t{level}\t{channel}:{step}\t{moment}\n"
            lines.setdefault(chain_shard(message_id), []).append(line)
        if not lines:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, shard_lines in lines.items():
                await self._observe(keys=[shard.due], args=[shard.prefix, "".join(shard_lines)], client=pipe)
            return sum(int(n) for n in await pipe.execute())

    def level(self, status: str, channel: str) -> int | None:
        """How far a receipt says the message got (-1 failed), or None if it says nothing about that."""
        level = LEVELS.get(status)
        if level == LEVELS["sent"] and channel in self._sent_is_delivered:
            return LEVELS["delivered"]
        return level

    async def fire_due(self, now: datetime | None = None, limit: int = 500) -> list[FiredStep]:
        """Claim steps due by `now` whose condition holds (and lapsed claims); call `done` once emitted."""
        at = time.time() if now is None else now.timestamp()
        lapsed = at - self._lease
        # Counted first, so `limit` is shared among the shards that have something to fire.
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in SHARDS:
                pipe.zcount(shard.due, "-inf", at)
                pipe.zcount(shard.inflight, "-inf", lapsed)
            counts = [int(c) for c in await pipe.execute()]
        takes = share(limit, [due + stale for due, stale in zip(counts[::2], counts[1::2], strict=True)])
        if not any(takes):
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, take in zip(SHARDS, takes, strict=True):
                if take:
                    keys = [shard.due, shard.inflight]
                    await self._fire(keys=keys, args=[at, take, lapsed, shard.prefix], client=pipe)
            answers = await pipe.execute()
        return [_fired(row) for rows in answers for row in rows]

    async def done(self, fired: Sequence[FiredStep]) -> int:
        """Forget fired steps whose dispatch the broker has; how many were still in flight."""
        if not fired:
            return 0
        claims: dict[ChainShard, list[str]] = {}
        for step in fired:
            claims.setdefault(chain_shard(step.message_id), []).append(step.claim)
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard, members in claims.items():
                await self._done(keys=[shard.inflight], args=[shard.prefix, *members], client=pipe)
            return sum(int(n) for n in await pipe.execute())

    async def pending(self) -> int:
        """Messages with a step still to come."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in SHARDS:
                pipe.zcard(shard.due)
            return sum(int(n) for n in await pipe.execute())

    async def armed(self, message_id: str) -> ArmedChain | None:
        """What the chain of one message holds now, read-only (for `why`); None if none is kept."""
        shard = chain_shard(message_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(shard.message(message_id))
            pipe.zscore(shard.due, message_id)
            raw, score = await pipe.execute()
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        codes = {code: condition for condition, code in CONDITION_CODES.items()}
        count = int(fields.get("n", "0"))
        t0 = float(fields.get("t0", "0"))
        steps = tuple(
            ArmedStep(
                index=i,
                condition=codes.get(fields.get(f"c:{i}", ""), "not_delivered"),
                due=datetime.fromtimestamp(t0 + float(fields.get(f"o:{i}", "0")), UTC),
                resolved="f:" + str(i) in fields,
            )
            for i in range(1, count + 1)
        )
        level = int(fields.get("lvl", "0"))
        return ArmedChain(
            message_id=message_id,
            steps=steps,
            next_step=int(fields.get("next", "0")),
            next_due=None if score is None else datetime.fromtimestamp(float(score), UTC),
            reached=next((name for name, value in LEVELS.items() if value == level and level > 0), "nothing"),
            in_flight=int(fields.get("busy", "0")),
            app=Dispatch.model_validate_json(fields["d"]).event.app if "d" in fields else "",
        )


@dataclass(frozen=True)
class ArmedStep:
    """One step of an armed chain: its condition, when it falls due, whether it was resolved already."""

    index: int
    condition: FallbackCondition
    due: datetime
    resolved: bool
    """Its time came and it was fired or, its condition no longer holding, skipped."""


@dataclass(frozen=True)
class ArmedChain:
    """A message's fallback chain as Redis holds it: the steps, the pending one (0 = none), how far the
    message got (sent, delivered, read, clicked or nothing) and the steps claimed and not yet emitted."""

    message_id: str
    steps: tuple[ArmedStep, ...]
    next_step: int
    next_due: datetime | None
    reached: str
    in_flight: int
    app: str
    """The app of its first dispatch; "" once the chain is finished and the dispatch no longer kept."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _aware(moment: datetime) -> datetime:
    # Receipt does not insist on an offset; a naive time is UTC, as the sink reads it.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _ordered(steps: Sequence[FallbackStep]) -> list[FallbackStep]:
    return sorted(steps, key=lambda s: s.step)


def _index(first: Dispatch, step: FallbackStep) -> int:
    return _ordered(first.plan.fallback).index(step) + 1


def _fired(row: list[bytes | str]) -> FiredStep:
    message_id, index, dispatch, addresses, t0 = (v.decode() if isinstance(v, bytes) else v for v in row)
    first = Dispatch.model_validate_json(dispatch)
    return FiredStep(
        message_id=message_id,
        step=_ordered(first.plan.fallback)[int(index) - 1],
        first=first,
        addresses=json.loads(addresses) if addresses else None,
        first_sent_at=datetime.fromtimestamp(float(t0), UTC),
    )
