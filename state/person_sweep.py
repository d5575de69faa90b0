"""Finding what Redis holds about one person under keys that do not name them.

Most per-person state is keyed by the user id (profile, inbox, engagement, caps, offline keep,
consent), so it is found directly. Some is keyed by message or provider message id, with the person
inside the value: the delivery schedule and parked dispatches (bodies in each shard's hash), fallback
chains (`sb:fb:{shard}:message_id`), the provider message map and its early reports
(`sb:pmsg:*`, `sb:pmsg-early:*`), the send ledger (`sb:sent:*`, whose stored reason
may quote an address), and the membership of tag and segment sets. These are found with one SCAN
of the keyspace and one HSCAN per schedule shard: O(keys) work, done only for a data-rights request,
never by the flow. A key whose name holds the user id as a whole segment but belongs to no family
known here is reported (`unknown`), so a store added later shows up instead of being missed silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from state.connection import is_cluster
from state.keyspace import tag
from state.schedule import Shard, schedule_shards

SCHEDULES = {"scheduled": "sb:schedule", "parked": "sb:parked"}
# KEYS: values to look at. ARGV: how to read each ("string", "list" or a hash field as "hash:<field>"),
# then the needles. Answers the keys whose value contains a needle, plainly (no pattern): on a single
# Redis the values of other people never cross the wire, which is most of the sweep's cost (redis-py
# spends ~10 us of client CPU per reply). A batch is a few hundred keys, so the script stays short.
_FILTER = """
local how = ARGV[1]
local out = {}
for _, key in ipairs(KEYS) do
  local values
  if how == 'string' then
    values = {redis.call('GET', key)}
  elseif how == 'list' then
    values = redis.call('LRANGE', key, 0, -1)
  else
    values = {redis.call('HGET', key, string.sub(how, 6))}
  end
  local hit = false
  for _, value in ipairs(values) do
    if value then
      for i = 2, #ARGV do
        if string.find(value, ARGV[i], 1, true) then hit = true; break end
      end
    end
    if hit then break end
  end
  if hit then out[#out + 1] = key end
end
return out
"""
SCAN_COUNT = 1000
_SEGMENTS = re.compile(r"[:{}]")


@dataclass
class HeldItem:
    """A schedule body of the person's: where it lies, its ident and the item as stored."""

    shard: Shard
    ident: str
    body: dict[str, Any]


@dataclass
class Located:
    """The person's state found by sweeping; each list holds keys (or items) to read or erase."""

    held: dict[str, list[HeldItem]] = field(default_factory=lambda: {name: [] for name in SCHEDULES})
    chains: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(chain key, its first dispatch)."""
    provider_messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    early_reports: list[str] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    """Send-ledger keys whose stored record quotes the person (an address in a failure reason)."""
    sets: list[str] = field(default_factory=list)
    """Tag and segment sets holding the user id."""
    indexes: list[str] = field(default_factory=list)
    """Their sorted-set twins holding it."""
    caps: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


async def locate(
    redis: Redis,
    user_id: str,
    identifiers: Sequence[str],
    direct: Collection[str] = (),
    *,
    ledger: bool = True,
) -> Located:
    """Everything keyed by something else that holds `user_id` or one of `identifiers` (addresses);
    `direct` are the keys named by the user that the caller handles itself (not `unknown`). The send
    ledger is read only with `ledger` (an erasure blanks addresses in it; an export has nothing to show
    from it)."""
    found = Located()
    needles = [n for n in dict.fromkeys([user_id, *identifiers]) if n]
    cap_prefix = f"sb:cap:{tag(user_id)}:"
    chains: list[str] = []
    pmsg: list[str] = []
    early: list[str] = []
    ledger_keys: list[str] = []
    sets: list[str] = []
    indexes: list[str] = []
    async for raw in redis.scan_iter(match="sb:*", count=SCAN_COUNT):
        key = _text(raw)
        if key.startswith(cap_prefix):
            found.caps.append(key)
        elif key.startswith("sb:fb:"):
            chains.append(key)
        elif key.startswith("sb:pmsg:"):
            pmsg.append(key)
        elif key.startswith("sb:pmsg-early:"):
            early.append(key)
        elif key.startswith("sb:sent:"):
            if ledger:
                ledger_keys.append(key)
        elif key.startswith(("sb:tag:", "sb:segment:")):
            sets.append(key)
        elif key.startswith(("sb:ix:tag:", "sb:ix:segment:")):
            indexes.append(key)
        elif user_id in _SEGMENTS.split(key) and key not in direct:
            found.unknown.append(key)
    found.chains = await _chains(redis, chains, user_id)
    found.provider_messages = await _json_values(redis, pmsg, user_id)
    found.early_reports = await _quoting(redis, early, needles, kind="list")
    found.ledger = await _quoting(redis, ledger_keys, needles, kind="string")
    found.sets = await _members(redis, sets, user_id, sorted_set=False)
    found.indexes = await _members(redis, indexes, user_id, sorted_set=True)
    for name, prefix in SCHEDULES.items():
        found.held[name] = await _held(redis, schedule_shards(prefix), user_id)
    return found


async def _held(redis: Redis, shards: Sequence[Shard], user_id: str) -> list[HeldItem]:
    held: list[HeldItem] = []
    for shard in shards:
        async for ident, body in redis.hscan_iter(shard.bodies, count=SCAN_COUNT):
            item = _loads(body, user_id)
            if item is not None and item.get("user_id") == user_id:
                held.append(HeldItem(shard, _text(ident), item))
    return held


async def _chains(redis: Redis, keys: list[str], user_id: str) -> list[tuple[str, dict[str, Any]]]:
    # Only the chain hashes themselves: `sb:fb:{t}:<message>`, not the due or in-flight sets.
    keys = await _containing(redis, [k for k in keys if k.count(":") >= 3], "hash:d", [user_id])
    firsts = await _pipelined(redis, keys, lambda pipe, key: pipe.hget(key, "d"))
    found = []
    for key, raw in zip(keys, firsts, strict=True):
        first = _loads(raw, user_id)
        if first is not None and first.get("user_id") == user_id:
            found.append((key, first))
    return found


async def _json_values(redis: Redis, keys: list[str], user_id: str) -> list[tuple[str, dict[str, Any]]]:
    keys = await _containing(redis, keys, "string", [user_id])
    values = await _pipelined(redis, keys, lambda pipe, key: pipe.get(key))
    found = []
    for key, raw in zip(keys, values, strict=True):
        value = _loads(raw, user_id)
        if value is not None and value.get("user_id") == user_id:
            found.append((key, value))
    return found


async def _quoting(redis: Redis, keys: list[str], needles: Sequence[str], kind: str) -> list[str]:
    """The keys whose value (a string, or a list's items) contains one of `needles` as a JSON string
    or a word: an address quoted in a reason."""
    keys = await _containing(redis, keys, kind, needles)
    if kind == "list":
        values = await _pipelined(redis, keys, lambda pipe, key: pipe.lrange(key, 0, -1))
    else:
        values = await _pipelined(redis, keys, lambda pipe, key: pipe.get(key))
    found = []
    for key, value in zip(keys, values, strict=True):
        texts = [_text(v) for v in value] if isinstance(value, list) else [_text(value or b"")]
        if any(quotes(text, needles) for text in texts):
            found.append(key)
    return found


async def _members(redis: Redis, keys: list[str], user_id: str, *, sorted_set: bool) -> list[str]:
    if sorted_set:
        answers = await _pipelined(redis, keys, lambda pipe, key: pipe.zscore(key, user_id))
        return [key for key, score in zip(keys, answers, strict=True) if score is not None]
    answers = await _pipelined(redis, keys, lambda pipe, key: pipe.sismember(key, user_id))
    return [key for key, member in zip(keys, answers, strict=True) if member]


async def _containing(
    redis: Redis, keys: list[str], how: str, needles: Sequence[str], batch: int = 500
) -> list[str]:
    """The keys whose value may hold a needle (a plain substring test, done by Redis on a single
    Redis); the caller reads and checks those exactly. On a Redis Cluster a batch's keys lie in many
    slots, so every key is kept and the caller reads them all."""
    wanted = [n for n in needles if n]
    if not keys or not wanted or is_cluster(redis):
        return keys
    script = redis.register_script(_FILTER)
    found: list[str] = []
    for start in range(0, len(keys), batch):
        answer = await script(keys=keys[start : start + batch], args=[how, *wanted])
        found += [_text(key) for key in answer]
    return found


async def _pipelined(redis: Redis, keys: list[str], command: Any, batch: int = 500) -> list[Any]:
    answers: list[Any] = []
    for start in range(0, len(keys), batch):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + batch]:
                command(pipe, key)
            answers += await pipe.execute()
    return answers


def quotes(text: str, needles: Sequence[str]) -> bool:
    """Whether `text` names one of `needles` as a whole word (so `u1` is not found in `u10`)."""
    # The plain substring test first: almost every value holds none of them, and it is 20x cheaper.
    return any(needle in text and _word(needle).search(text) for needle in needles if needle)


def scrub(text: str, needles: Sequence[str], replacement: str = "[erased]") -> str:
    for needle in needles:
        if needle:
            text = _word(needle).sub(lambda match: match.group(1) + replacement, text)
    return text


def _word(needle: str) -> re.Pattern[str]:
    # Word characters of ids and addresses; a needle is whole when none of them touches it.
    return re.compile(r"(^|[^\w.@+\-])" + re.escape(needle) + r"(?![\w.@+\-])")


def _loads(raw: bytes | str | None, containing: str = "") -> dict[str, Any] | None:
    """The JSON object in `raw`; None when it is not one, or does not contain `containing` at all
    (checked on the raw bytes first: most values are other people's, not worth parsing)."""
    if raw is None:
        return None
    if containing and containing.encode() not in (raw if isinstance(raw, bytes) else raw.encode()):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
