"""Finding what Redis holds about one person under keys that do not name them.

Most per-person state is keyed by the user id (profile, inbox, engagement, caps, offline keep,
consent), so it is found directly. Some is keyed by message or provider message id, with the person
inside the value: the delivery schedule and parked dispatches (bodies in each shard's hash), fallback
chains (`sb:fb:{shard}:message_id`), the provider message map and its early reports
(`sb:pmsg:*`, `sb:pmsg-early:*`), the send ledger (`sb:sent:*`, `sb:giveup:*`, whose stored reason
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

from state.keyspace import tag
from state.schedule import Shard, schedule_shards

SCHEDULES = {"scheduled": "sb:schedule", "parked": "sb:parked"}
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
    redis: Redis, user_id: str, identifiers: Sequence[str], direct: Collection[str] = ()
) -> Located:
    """Everything keyed by something else that holds `user_id` or one of `identifiers` (addresses);
    `direct` are the keys named by the user that the caller handles itself (not `unknown`)."""
    found = Located()
    needles = [n for n in dict.fromkeys([user_id, *identifiers]) if n]
    cap_prefix = f"sb:cap:{tag(user_id)}:"
    chains: list[str] = []
    pmsg: list[str] = []
    early: list[str] = []
    ledger: list[str] = []
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
        elif key.startswith(("sb:sent:", "sb:giveup:")):
            ledger.append(key)
        elif key.startswith(("sb:tag:", "sb:segment:")):
            sets.append(key)
        elif key.startswith(("sb:ix:tag:", "sb:ix:segment:")):
            indexes.append(key)
        elif user_id in _SEGMENTS.split(key) and key not in direct:
            found.unknown.append(key)
    found.chains = await _chains(redis, chains, user_id)
    found.provider_messages = await _json_values(redis, pmsg, user_id)
    found.early_reports = await _quoting(redis, early, needles, kind="list")
    found.ledger = await _quoting(redis, ledger, needles, kind="string")
    found.sets = await _members(redis, sets, user_id, sorted_set=False)
    found.indexes = await _members(redis, indexes, user_id, sorted_set=True)
    for name, prefix in SCHEDULES.items():
        found.held[name] = await _held(redis, schedule_shards(prefix), user_id)
    return found


async def _held(redis: Redis, shards: Sequence[Shard], user_id: str) -> list[HeldItem]:
    held: list[HeldItem] = []
    for shard in shards:
        async for ident, body in redis.hscan_iter(shard.bodies, count=SCAN_COUNT):
            item = _loads(body)
            if item is not None and item.get("user_id") == user_id:
                held.append(HeldItem(shard, _text(ident), item))
    return held


async def _chains(redis: Redis, keys: list[str], user_id: str) -> list[tuple[str, dict[str, Any]]]:
    # Only the chain hashes themselves: `sb:fb:{t}:<message>`, not the due or in-flight sets.
    keys = [k for k in keys if k.count(":") >= 3]
    firsts = await _pipelined(redis, keys, lambda pipe, key: pipe.hget(key, "d"))
    found = []
    for key, raw in zip(keys, firsts, strict=True):
        first = _loads(raw)
        if first is not None and first.get("user_id") == user_id:
            found.append((key, first))
    return found


async def _json_values(redis: Redis, keys: list[str], user_id: str) -> list[tuple[str, dict[str, Any]]]:
    values = await _pipelined(redis, keys, lambda pipe, key: pipe.get(key))
    found = []
    for key, raw in zip(keys, values, strict=True):
        value = _loads(raw)
        if value is not None and value.get("user_id") == user_id:
            found.append((key, value))
    return found


async def _quoting(redis: Redis, keys: list[str], needles: Sequence[str], kind: str) -> list[str]:
    """The keys whose value (a string, or a list's items) contains one of `needles` as a JSON string
    or a word: an address quoted in a reason."""
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
    return any(_word(needle).search(text) for needle in needles if needle)


def scrub(text: str, needles: Sequence[str], replacement: str = "[erased]") -> str:
    for needle in needles:
        if needle:
            text = _word(needle).sub(lambda match: match.group(1) + replacement, text)
    return text


def _word(needle: str) -> re.Pattern[str]:
    # Word characters of ids and addresses; a needle is whole when none of them touches it.
    return re.compile(r"(^|[^\w.@+\-])" + re.escape(needle) + r"(?![\w.@+\-])")


def _loads(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
