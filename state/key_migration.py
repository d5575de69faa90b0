"""One-off move of the state written before the hash-tagged key layout (`state.keyspace`) to its new
names: inboxes, caps, pacing, offline keep, fallback chains, both schedules and the app registry.

Run it once, with every worker and the API stopped, before the new version starts
(`switchboard redis migrate`); it is idempotent (a second run finds nothing to move) and works on a
single Redis and on a Redis Cluster (keys are copied with DUMP/RESTORE, keeping their time to live,
never RENAMEd, which a cluster refuses across slots). Old keys never hold a `{`: that is how they are
told apart from new ones.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from state import apps, fallback, inbox, offline, pacing
from state.keyspace import shard_of, tag
from state.schedule import schedule_shards

# Keys only the old layout has; any of them left means `switchboard redis migrate` has not run.
OLD_INDEXES = ("sb:apps", "sb:fallback", "sb:schedule:body", "sb:parked:body", "sb:offline:users")
_CAP = re.compile(r"^sb:cap:(?P<id>.+?):(?P<scope>global|(?:user|channel|category|app|campaign)=.*)$")
_SCOPE_USER = re.compile(r"(?:^|\|)user=(?P<user>[^|]*)")


async def migrate_keys(redis: Redis) -> dict[str, int]:
    """Move every old-layout key; returns how many keys (or items of an index) moved, by kind."""
    moved: Counter[str] = Counter()
    moved["inbox"] = await _inboxes(redis)
    moved["caps"] = await _caps(redis)
    moved["pacing"] = await _pacing(redis)
    moved["offline"] = await _offline(redis)
    moved["fallback"] = await _fallback(redis)
    moved["schedule"] = await _schedule(redis, "sb:schedule", shard_by_body=False)
    moved["parked"] = await _schedule(redis, "sb:parked", shard_by_body=True)
    moved["apps"] = await _apps(redis)
    return dict(moved)


async def _old_keys(redis: Redis, pattern: str) -> AsyncIterator[str]:
    async for key in redis.scan_iter(match=pattern, count=1000):
        name = _text(key)
        if "{" not in name:
            yield name


async def _move(redis: Redis, old: str, new: str) -> bool:
    """Copy `old` to `new` with its time to live, then delete `old`; False when `old` is gone."""
    dumped = await redis.dump(old)
    if dumped is None:
        return False
    ttl = int(await redis.pttl(old))
    await redis.restore(new, max(ttl, 0), dumped, replace=True)
    await redis.delete(old)
    return True


async def _kind(redis: Redis, key: str) -> str:
    return _text(await redis.type(key))


async def _inboxes(redis: Redis) -> int:
    # A user id may hold `:`, so a key is told by its type: index zset, messages hash, unread set.
    moved = 0
    async for key in _old_keys(redis, "sb:inbox:*"):
        rest = key.removeprefix("sb:inbox:")
        kind = await _kind(redis, key)
        if kind == "zset":
            new = inbox.inbox_keys(rest)[0]
        elif kind == "hash" and rest.endswith(":m"):
            new = inbox.inbox_keys(rest.removesuffix(":m"))[1]
        elif kind == "set" and rest.endswith(":unread"):
            new = inbox.inbox_keys(rest.removesuffix(":unread"))[2]
        else:
            continue
        moved += await _move(redis, key, new)
    return moved


async def _caps(redis: Redis) -> int:
    moved = 0
    async for key in _old_keys(redis, "sb:cap:*"):
        found = _CAP.match(key)
        if found is None:
            continue
        cap_id, scope = found["id"], found["scope"]
        user = _SCOPE_USER.search(scope)
        new = f"sb:cap:{tag(user['user'])}:{cap_id}:{scope}" if user else f"sb:cap:{tag(f'{cap_id}:{scope}')}"
        moved += await _move(redis, key, new)
    return moved


async def _pacing(redis: Redis) -> int:
    moved = 0
    async for key in _old_keys(redis, "sb:pace:*"):
        rest = key.removeprefix("sb:pace:")
        kind = await _kind(redis, key)
        if kind == "zset" and rest.endswith(":given"):
            new = pacing.pace_keys(rest.removesuffix(":given"))[1]
        elif kind == "string":
            new = pacing.pace_keys(rest)[0]
        else:
            continue
        moved += await _move(redis, key, new)
    return moved


async def _offline(redis: Redis) -> int:
    old_index = "sb:offline:users"
    users = sorted(_text(u) for u in await redis.smembers(old_index))
    for user in users:
        kept = f"sb:offline:{user}"
        for message in [_text(m) for m in await redis.hkeys(kept)]:
            await _move(redis, f"sb:offline:deadline:{message}", offline.deadline_key(user, message))
        await _move(redis, kept, offline.kept_key(user))
        await _move(redis, f"sb:offline:lease:{user}", offline.lease_key(user))
        await redis.sadd(offline.users_key(user), user)
        await redis.srem(old_index, user)
    # Deadlines of deliveries no longer kept have no user to shard them by; they lapse on their own.
    return len(users)


async def _fallback(redis: Redis) -> int:
    old_due, old_inflight = "sb:fallback", "sb:fallback:inflight"
    moved = 0
    async for key in _old_keys(redis, "sb:fb:*"):
        message = key.removeprefix("sb:fb:")
        shard = fallback.chain_shard(message)
        if await _move(redis, key, shard.message(message)):
            moved += 1
        due = await redis.zscore(old_due, message)
        if due is not None:
            await redis.zadd(shard.due, {message: due})
            await redis.zrem(old_due, message)
    claims: list[Any] = await redis.zrange(old_inflight, 0, -1, withscores=True)
    for member, score in claims:
        claim = _text(member)
        await redis.zadd(fallback.chain_shard(claim.partition("|")[0]).inflight, {claim: score})
        await redis.zrem(old_inflight, claim)
    # Due entries whose chain hash is gone would fire nothing: the scripts skip them; drop them.
    await redis.delete(old_due)
    return moved


async def _schedule(redis: Redis, name: str, *, shard_by_body: bool) -> int:
    old_due, old_inflight, old_bodies = name, f"{name}:inflight", f"{name}:body"
    shards = schedule_shards(name)
    moved = 0
    async for field, body in redis.hscan_iter(old_bodies, count=1000):
        ident, text = _text(field), _text(body)
        # Parked dispatches are sharded by their message id, deliveries by their ident (the message id).
        shard = shards[shard_of(json.loads(text)["message_id"] if shard_by_body else ident)]
        due, claimed = await redis.zscore(old_due, ident), await redis.zscore(old_inflight, ident)
        await redis.hset(shard.bodies, ident, text)
        if due is not None:
            await redis.zadd(shard.due, {ident: due})
        if claimed is not None:
            await redis.zadd(shard.inflight, {ident: claimed})
        await redis.zrem(old_due, ident)
        await redis.zrem(old_inflight, ident)
        await redis.hdel(old_bodies, ident)
        moved += 1
    return moved


async def _apps(redis: Redis) -> int:
    moved = 0
    async for key in _old_keys(redis, "sb:app:*"):
        moved += await _move(redis, key, apps._APP.format(key.removeprefix("sb:app:")))
    async for key in _old_keys(redis, "sb:appkey:*"):
        moved += await _move(redis, key, apps._KEY.format(key.removeprefix("sb:appkey:")))
    names = [_text(n) for n in await redis.smembers("sb:apps")]
    if names:
        await redis.sadd(apps._APPS, *names)
        await redis.delete("sb:apps")
        moved += 1
    return moved


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
