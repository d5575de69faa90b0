"""A person's Redis state for data-rights requests (PIPL, GDPR): export all of it, erase all of it.

What is kept after an erasure, and why: a refusal (an unsubscription or a blacklist entry) must go on
being honoured after the person is forgotten, or erasing someone would start messaging them again the
next time an upstream system sends their address. So each refusal of the person's own, and each of
their addresses', is kept under the address's id (`addr:<hash>`, `records.topics.address_user_id`),
the form the consent check already looks up for every send to that address: the kept entry holds no
user id and no address, only the hash, a scope and a time (GDPR art. 17(3)(b) and 21, PIPL art. 47:
keeping what is needed to honour an objection). A blacklist entry held under the plain address is
moved to its hash. Everything else named by the person, or holding their id or an address, is deleted
(inventory: docs/operators/data-rights.md).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from records.topics import ChannelName, address_user_id
from records.vocabulary import CATEGORIES, CHANNELS
from state.consent import ANY, BLACKLIST_KEY, CONSENT_KEY, OPT_IN_KEY, OPT_IN_LOG_KEY, ConsentStore
from state.engagement import ACTIVE_KEY, HISTORY_KEY
from state.fallback import chain_shard
from state.inbox import Inbox, inbox_keys
from state.offline import KeptDelivery, deadline_key, kept_key, lease_key, users_key
from state.person_sweep import Located, locate, scrub
from state.users import ALL_USERS, OWNERS_KEY, UNINDEXED, USER_KEY, USERS_INDEX, User, UserDirectory
from state.whitelist import WHITELIST_KEY

KEPT_REASON = "refusal kept after the person's data was erased"
# Opt-ins (standing and their log) and whitelist entries are deleted with the person and with their
# addresses, never kept, since an opt-in or a whitelist entry is a permission, not a refusal to honour.
OPT_IN_KEYS = (OPT_IN_KEY, OPT_IN_LOG_KEY)


def direct_keys(user_id: str) -> set[str]:
    """The keys named by the user id that hold only their state."""
    return {
        USER_KEY.format(user_id),
        *inbox_keys(user_id),
        HISTORY_KEY.format(user_id),
        CONSENT_KEY.format(user_id),
        *(key.format(user_id) for key in OPT_IN_KEYS),
        kept_key(user_id),
        lease_key(user_id),
    }


def addresses_of(user: User | None) -> list[tuple[ChannelName, str]]:
    """(channel, address) bound to the person; the inbox's address is the user id itself."""
    if user is None:
        return []
    # Every address, not only each channel's chosen one (a person may hold several per channel).
    return [(c, a) for c, a in sorted(user.every_address()) if c not in UNINDEXED and a.strip()]


class PersonState:
    """Reads and erases one person's state in Redis; the client is passed in."""

    def __init__(self, redis: Redis, inbox_bound: int = 200) -> None:
        self._redis = redis
        self._users = UserDirectory(redis)
        self._consent = ConsentStore(redis)
        self._inbox = Inbox(redis, inbox_bound)

    async def profile(self, user_id: str) -> User | None:
        return (await self._users.get_many([user_id])).get(user_id)

    async def export(self, user_id: str) -> dict[str, Any]:
        """Every part Redis holds about the person, JSON-ready, one section per store."""
        user = await self.profile(user_id)
        addresses = addresses_of(user)
        found = await locate(
            self._redis, user_id, [a for _, a in addresses], direct_keys(user_id), ledger=False
        )
        total = await self._inbox.total(user_id)
        inbox = await self._inbox.list(user_id, limit=max(total, 1))
        consent = await self._consent.consent(user_id)
        return {
            "profile": None if user is None else user.model_dump(mode="json"),
            "tags": sorted(_tail(k, "sb:tag:") for k in found.sets if k.startswith("sb:tag:")),
            "segments": sorted(_tail(k, "sb:segment:") for k in found.sets if k.startswith("sb:segment:")),
            "bindings": [{"channel": c, "address": a} for c, a in addresses],
            "consent": {
                "own": consent.model_dump(mode="json"),
                "addresses": [await self._address_consent(c, a) for c, a in addresses],
            },
            "inbox": {
                "total": total,
                "unread": await self._inbox.unread_count(user_id),
                "messages": [m.model_dump(mode="json") for m in inbox],
            },
            "engagement": await self._engagement(user_id),
            "caps": await self._caps(found),
            "scheduled": [_held(item.body, item.ident) for item in found.held["scheduled"]],
            "parked": [_held(item.body, item.ident) for item in found.held["parked"]],
            "fallback_chains": [
                {"message_id": first.get("message_id"), "first_dispatch": first} for _, first in found.chains
            ],
            "offline": await self._offline(user_id),
            "provider_messages": [value for _, value in found.provider_messages],
        }

    async def erase(self, user_id: str) -> dict[str, Any]:
        """Delete the person's state, keeping their refusals under their addresses' hashes; returns what
        was removed (counts by store), kept, and any key named by them that no eraser here knows."""
        user = await self.profile(user_id)
        addresses = addresses_of(user)
        needles = [a for _, a in addresses]
        found = await locate(self._redis, user_id, needles, direct_keys(user_id))
        removed: Counter[str] = Counter()
        kept = await self._keep_refusals(user_id, addresses)
        kept_messages = list((await self._redis.hkeys(kept_key(user_id))) or [])
        existing = await self._redis.exists(*direct_keys(user_id))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(*direct_keys(user_id))
            for message in kept_messages:
                pipe.delete(deadline_key(user_id, _text(message)))
            pipe.srem(users_key(user_id), user_id)
            pipe.srem(ALL_USERS, user_id)
            pipe.zrem(USERS_INDEX, user_id)
            pipe.zrem(ACTIVE_KEY, user_id)
            pipe.hdel(BLACKLIST_KEY, user_id, *needles)
            pipe.hdel(WHITELIST_KEY, user_id, *needles)
            for channel, address in addresses:
                pipe.srem(OWNERS_KEY.format(address_user_id(channel, address)), user_id)
                pipe.delete(*(key.format(address_user_id(channel, address)) for key in OPT_IN_KEYS))
            for key in found.sets:
                pipe.srem(key, user_id)
            for key in found.indexes:
                pipe.zrem(key, user_id)
            if found.caps:
                pipe.delete(*found.caps)
            await pipe.execute()
        removed["keys"] += int(existing) + len(found.caps)
        removed["memberships"] += len(found.sets) + len(found.indexes)
        removed.update(await self._erase_swept(found, [user_id, *needles]))
        return {"removed": dict(+removed), "kept": kept, "unknown": found.unknown}

    async def _keep_refusals(self, user_id: str, addresses: list[tuple[ChannelName, str]]) -> int:
        """Copy the person's refusals (theirs and their plain addresses' blacklist entries) onto each
        address's hash, where the consent check finds them; never overwrite one already there."""
        if not addresses:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(CONSENT_KEY.format(user_id))
            pipe.hget(BLACKLIST_KEY, user_id)
            for _, address in addresses:
                pipe.hget(BLACKLIST_KEY, address)
            scopes, own, *listed = await pipe.execute()
        kept = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for (channel, address), plain in zip(addresses, listed, strict=True):
                subject = address_user_id(channel, address)
                entry = plain or own
                if entry is not None:
                    at = json.loads(entry).get("at") or datetime.now(UTC).isoformat()
                    pipe.hsetnx(BLACKLIST_KEY, subject, json.dumps({"reason": KEPT_REASON, "at": at}))
                    kept += 1
                for scope, value in scopes.items():
                    if _is_refusal(_text(scope)):
                        pipe.hsetnx(CONSENT_KEY.format(subject), _text(scope), value)
                        kept += 1
            await pipe.execute()
        return kept

    async def _erase_swept(self, found: Located, needles: list[str]) -> Counter[str]:
        removed: Counter[str] = Counter()
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, items in found.held.items():
                for item in items:
                    pipe.hdel(item.shard.bodies, item.ident)
                    pipe.zrem(item.shard.due, item.ident)
                    pipe.zrem(item.shard.inflight, item.ident)
                removed[name] += len(items)
            for key, first in found.chains:
                message_id = str(first.get("message_id", ""))
                shard = chain_shard(message_id)
                pipe.delete(key)
                pipe.zrem(shard.due, message_id)
                pipe.zrem(shard.inflight, message_id)
            removed["fallback_chains"] += len(found.chains)
            doomed = [key for key, _ in found.provider_messages] + found.early_reports
            if doomed:
                pipe.delete(*doomed)
            removed["provider_messages"] += len(doomed)
            await pipe.execute()
        # The send ledger stays (it stops a redelivered dispatch from going out twice); an address
        # quoted in a stored failure reason is blanked, the key's time to live kept.
        for key in found.ledger:
            value = await self._redis.get(key)
            if value is not None:
                await self._redis.set(key, scrub(_text(value), needles), keepttl=True)
                removed["ledger_reasons"] += 1
        return +removed

    async def _address_consent(self, channel: ChannelName, address: str) -> dict[str, Any]:
        subject = address_user_id(channel, address)
        standing = await self._consent.consent(subject)
        listed = await self._consent.blacklisted(address) or standing.blacklisted
        return {
            "channel": channel,
            "address": address,
            "unsubscriptions": [u.model_dump(mode="json") for u in standing.unsubscriptions],
            "blacklisted": None if listed is None else listed.model_dump(mode="json"),
        }

    async def _engagement(self, user_id: str) -> dict[str, Any]:
        history = cast(
            list[tuple[bytes, float]],
            await self._redis.zrange(HISTORY_KEY.format(user_id), 0, -1, withscores=True),
        )
        active = await self._redis.zscore(ACTIVE_KEY, user_id)
        return {
            "history": [
                {"at": _iso(score), "status": _text(member).split(":", 1)[1]} for member, score in history
            ],
            "last_active": None if active is None else _iso(active),
        }

    async def _caps(self, found: Located) -> list[dict[str, Any]]:
        caps = []
        for key in sorted(found.caps):
            counted = cast(list[tuple[bytes, float]], await self._redis.zrange(key, 0, -1, withscores=True))
            caps.append(
                {
                    "cap": key.split("}:", 1)[1],
                    "counted_sends": len(counted),
                    "latest": _iso(max(score for _, score in counted)) if counted else None,
                }
            )
        return caps

    async def _offline(self, user_id: str) -> list[dict[str, Any]]:
        kept = await self._redis.hgetall(kept_key(user_id))
        return [
            KeptDelivery.model_validate_json(body).model_dump(mode="json") | {"message_id": _text(message)}
            for message, body in sorted(kept.items())
        ]


def _is_refusal(field: str) -> bool:
    """A `category|channel` refusal field; anything else a later version keeps beside them (an opt-in,
    say) is a permission of the person's, not a refusal to honour, and goes with them."""
    category, bar, channel = field.partition("|")
    return bool(bar) and category in (ANY, *CATEGORIES) and channel in (ANY, *CHANNELS)


def _held(body: dict[str, Any], ident: str) -> dict[str, Any]:
    return {"ident": ident, "item": body}


def _tail(key: str, prefix: str) -> str:
    return key.removeprefix(prefix)


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
