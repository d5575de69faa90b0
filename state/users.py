"""The user directory: a unified user id bound to channel addresses, with attributes.

Redis layout (prefix `sb:`): `sb:user:{id}` hash holding the profile as JSON under `p`;
`sb:users` set of every id; `sb:tag:{tag}` set of ids per tag; `sb:segment:{name}` saved segments;
beside each of these sets, a sorted set of the same ids at score 0 (`sb:ix:users`, `sb:ix:tag:{tag}`,
`sb:ix:segment:{name}`), walked in pages by id with ZRANGE BYLEX (`AudienceIndex`);
`sb:owners:{address id}` set of the ids of the people an address is bound to, where the address id
is `records.topics.address_user_id(channel, address)` (the id a raw address is known by), so consent
finds the person behind a raw address. Every address of a person is indexed, not only the chosen one.

A person may hold several addresses per channel (`User.addresses`: two emails, a push token per
device), each with a label, a `primary` flag and when it was last active; `address_choice` says which
is used: `latest` active (the default for push), `primary` (the default elsewhere) or `all`.
`User.bindings` stays the one address per channel the rest of the code reads: the chosen one (for
`all`, the primary; decide then sends to every address, see processors/decide.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records.topics import ChannelName, Name, address_user_id
from records.vocabulary import CHANNELS
from state.bulk import Command, run_all, write_all
from state.coalesced import CoalescedPipeline, plain_pipeline

USER_KEY = "sb:user:{}"
ALL_USERS = "sb:users"
TAG_KEY = "sb:tag:{}"
SEGMENT_KEY = "sb:segment:{}"
OWNERS_KEY = "sb:owners:{}"
# The paging indexes: sorted sets walked by id (lexicographically), see `page`.
USERS_INDEX = "sb:ix:users"
TAG_INDEX = "sb:ix:tag:{}"
SEGMENT_INDEX = "sb:ix:segment:{}"
# The inbox address is the user id itself: nobody else can hold it, so it is not indexed.
UNINDEXED = frozenset({"inbox"})
Held = tuple[ChannelName, str]
"""(channel, address): one address a person holds."""


AddressChoice = Literal["latest", "primary", "all"]
"""Which of a channel's addresses a message goes to: the latest active, the primary, or every one."""
ADDRESS_CHOICES: tuple[AddressChoice, ...] = ("latest", "primary", "all")
# Push follows the device the person uses now; an email or a phone is the one they named.
DEFAULT_CHOICE: dict[str, AddressChoice] = {"push": "latest"}
MAX_ADDRESSES = 20
"""Per channel: a person's devices and mailboxes, not a mailing list."""

Attribute = str | int | float | bool
AttributeName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]


class Address(BaseModel):
    """One address of a person on one channel: a mailbox, a phone, a device's push token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    label: Annotated[str, StringConstraints(max_length=64)] = ""
    primary: bool = False
    last_active: datetime | None = None


class User(BaseModel):
    """A person Switchboard can reach, with the addresses bound to each channel.

    `bindings` is derived: the chosen address of each channel (`addresses` and `address_choice`).
    A profile given with `bindings` only (files, older stored profiles) has one primary address each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Name
    name: str = ""
    timezone: str = "Asia/Shanghai"
    locale: str = "zh-CN"
    tags: tuple[Name, ...] = ()
    channel_pref: ChannelName | None = None
    attributes: dict[AttributeName, Attribute] = Field(default_factory=dict)
    addresses: dict[ChannelName, tuple[Address, ...]] = Field(default_factory=dict)
    address_choice: dict[ChannelName, AddressChoice] = Field(default_factory=dict)
    """Per channel; a channel not named takes DEFAULT_CHOICE (latest for push, primary otherwise)."""
    bindings: dict[ChannelName, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _addresses_from_bindings(cls, data: Any) -> Any:
        # A channel given only in `bindings` becomes one primary address; `bindings` is then made
        # again from `addresses` in `_chosen`, so the two can never disagree.
        if not isinstance(data, dict) or not data.get("bindings"):
            return data
        bindings, addresses = data["bindings"], dict(data.get("addresses") or {})
        if not isinstance(bindings, dict):
            return data
        for channel, address in bindings.items():
            # An unknown channel is left to `bindings`' own check, which names it there.
            if channel in CHANNELS and channel not in addresses and isinstance(address, str) and address:
                addresses[channel] = ({"address": address, "primary": True},)
        return {**data, "addresses": addresses}

    @model_validator(mode="after")
    def _chosen(self) -> User:
        chosen: dict[str, str] = {}
        for channel, held in self.addresses.items():
            if len(held) == 1:  # most people: nothing to choose (a million are imported at a time)
                chosen[channel] = held[0].address
                continue
            if len(held) > MAX_ADDRESSES:
                raise ValueError(f"addresses.{channel}: at most {MAX_ADDRESSES} addresses, got {len(held)}")
            seen: set[str] = set()
            for index, item in enumerate(held):
                if item.address in seen:
                    raise ValueError(f"addresses.{channel}[{index}]: {item.address!r} is listed twice")
                seen.add(item.address)
            if sum(item.primary for item in held) > 1:
                raise ValueError(f"addresses.{channel}: more than one address is primary")
            if (address := self.chosen_address(channel)) is not None:
                chosen[channel] = address.address
        object.__setattr__(self, "bindings", chosen)  # frozen: derived once, here
        return self

    def choice(self, channel: str) -> AddressChoice:
        """How this person's messages on `channel` pick among its addresses."""
        chosen: dict[str, AddressChoice] = self.address_choice  # type: ignore[assignment]  # str keys
        return chosen.get(channel, DEFAULT_CHOICE.get(channel, "primary"))

    def chosen_address(self, channel: str) -> Address | None:
        """The address `choice` picks (for `all`, the primary: the one rules and consent look at)."""
        held = self._held(channel)
        if not held:
            return None
        primary = next((a for a in held if a.primary), held[0])
        if self.choice(channel) != "latest":
            return primary
        active = [a for a in held if a.last_active is not None]
        # The primary wins a tie and stands in when no address has been seen active.
        return max(active, key=lambda a: (a.last_active, a is primary), default=primary)

    def recipients(self, channel: str) -> tuple[str, ...]:
        """Every address a message on `channel` goes to: the chosen one, or all of them under `all`."""
        if self.choice(channel) == "all":
            return tuple(a.address for a in self._held(channel))
        chosen = self.chosen_address(channel)
        return () if chosen is None else (chosen.address,)

    def _held(self, channel: str) -> tuple[Address, ...]:
        addresses: dict[str, tuple[Address, ...]] = self.addresses  # type: ignore[assignment]  # str keys
        return addresses.get(channel, ())

    def every_address(self) -> list[tuple[ChannelName, str]]:
        """(channel, address) for each address the person holds, chosen or not."""
        return [(channel, a.address) for channel, held in self.addresses.items() for a in held]

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Asia/Shanghai)") from exc
        return value


class UserDirectory:
    """Reads and writes users in Redis; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # Ingest looks up each event's users on its own, concurrently: lookups share a round trip.
        self._round_trips = CoalescedPipeline(plain_pipeline(redis))
        self.walk = AudienceWalk(redis)

    async def upsert(self, users: Sequence[User]) -> None:
        """Write profiles and keep tag sets and the address index in step (what a changed user no
        longer has is removed)."""
        if not users:
            return
        previous = await self._indexed(users)
        tagged: dict[str, list[str]] = {}
        commands: list[Command] = []
        write = commands.append
        for user in users:
            user_id = user.user_id
            old = previous.get(user_id)
            held = _indexed_addresses(user.every_address())
            if old is not None:
                old_tags, old_held = old
                for tag in old_tags - set(user.tags):
                    write(("SREM", TAG_KEY.format(tag), user_id))
                    write(("ZREM", TAG_INDEX.format(tag), user_id))
                for channel, address in old_held - held:
                    write(("SREM", OWNERS_KEY.format(address_user_id(channel, address)), user_id))
                held -= old_held  # indexed already: a re-import hashes and sends only what changed
            for channel, address in held:
                write(("SADD", OWNERS_KEY.format(address_user_id(channel, address)), user_id))
            write(("HSET", USER_KEY.format(user_id), "p", user.model_dump_json()))
            for tag in user.tags:
                tagged.setdefault(tag, []).append(user_id)
        # One command per set for the whole batch: a million users load in seconds, not minutes.
        ids = [user.user_id for user in users]
        write(("SADD", ALL_USERS, *ids))
        write(("ZADD", USERS_INDEX, *_scored(ids)))
        for tag, members in tagged.items():
            write(("SADD", TAG_KEY.format(tag), *members))
            write(("ZADD", TAG_INDEX.format(tag), *_scored(members)))
        await write_all(self._redis, commands)

    async def _indexed(self, users: Sequence[User]) -> dict[str, tuple[set[str], set[Held]]]:
        """The tags and (channel, address) pairs the stored profiles of `users` are indexed under, for
        those that have one. One SMISMEMBER finds who is stored at all (a first import reads no profile), and
        the stored ones are decoded only as far as tags and addresses (a re-import's main cost was
        validating every previous profile in full)."""
        ids = [user.user_id for user in users]
        known = await self._redis.smismember(ALL_USERS, ids)
        stored = [user_id for user_id, held in zip(ids, known, strict=True) if held]
        if not stored:
            return {}

        profiles = await run_all(self._redis, [("HGET", USER_KEY.format(user_id), "p") for user_id in stored])
        found: dict[str, tuple[set[str], set[Held]]] = {}
        for user_id, raw in zip(stored, profiles, strict=True):
            if raw is not None:
                entries = _INDEX_ENTRIES.decode(raw)
                found[user_id] = (set(entries.tags), entries.held())
        return found

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}

        def fill(pipe: Pipeline) -> int:
            for user_id in ids:
                pipe.hget(USER_KEY.format(user_id), "p")
            return len(ids)

        raw = await self._round_trips.run(fill)
        return {
            user_id: User.model_validate(json.loads(value))
            for user_id, value in zip(ids, raw, strict=True)
            if value is not None
        }

    async def get(self, user_id: str) -> User | None:
        return (await self.get_many([user_id])).get(user_id)

    async def remove(self, user_id: str) -> User | None:
        """Delete the person from the directory: profile, tags, indexes and address owners. Returns the
        profile removed (None if there was none). Their consent, inbox and history stay (erase clears
        those, api/person_rights.py)."""
        user = await self.get(user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(USER_KEY.format(user_id))
            pipe.srem(ALL_USERS, user_id)
            pipe.zrem(USERS_INDEX, user_id)
            for tag in user.tags if user is not None else ():
                pipe.srem(TAG_KEY.format(tag), user_id)
                pipe.zrem(TAG_INDEX.format(tag), user_id)
            for address_id in address_ids(user) if user is not None else ():
                pipe.srem(OWNERS_KEY.format(address_id), user_id)
            await pipe.execute()
        return user

    async def listing(
        self, after: str = "", limit: int = 100, tag: str | None = None, prefix: str = ""
    ) -> list[str]:
        """Up to `limit` ids in id order after the cursor `after`, of one tag (or everyone), starting
        with `prefix`: one ZRANGE BYLEX on the paging index, however many people there are."""
        index = TAG_INDEX.format(tag) if tag is not None else USERS_INDEX
        await self.walk.prepare(AudienceIndex((TAG_KEY.format(tag) if tag else ALL_USERS,), (index,)))
        low = f"({after}" if after and after >= prefix else (f"[{prefix}" if prefix else "-")
        # Every id starting with `prefix` sorts below prefix + U+10FFFF's UTF-8 bytes.
        high = f"[{prefix}\U0010ffff" if prefix else "+"
        members = await self._redis.zrangebylex(index, low, high, 0, limit)
        return [_text(m) for m in members]

    async def owners(self, channel: ChannelName, address: str) -> list[str]:
        """The people `address` is bound to on `channel` (usually one; a shared mailbox, several)."""
        members = await self._redis.smembers(OWNERS_KEY.format(address_user_id(channel, address)))
        return sorted(_text(m) for m in members)

    async def index_addresses(self, batch: int = 1000) -> int:
        """Rebuild the address index from the stored profiles (for users written before it existed);
        returns how many users were indexed."""
        ids = await self.all_ids()
        for start in range(0, len(ids), batch):
            users = await self.get_many(ids[start : start + batch])
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in users.values():
                    for address_id in address_ids(user):
                        pipe.sadd(OWNERS_KEY.format(address_id), user.user_id)
                await pipe.execute()
        return len(ids)

    async def ids_with_tags(self, tags: Sequence[str]) -> list[str]:
        """Every user holding any of the tags, in a stable order."""
        # One SMEMBERS per tag, united here: SUNION needs every set in one Redis Cluster slot.
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.smembers(TAG_KEY.format(tag))
            answers: list[set[bytes | str]] = await pipe.execute()
        return sorted({_text(m) for members in answers for m in members})

    async def segment_members(self, segment: str) -> list[str] | None:
        """Members of a saved segment (a set operators maintain), or None if it does not exist."""
        key = SEGMENT_KEY.format(segment)
        if not await self._redis.exists(key):
            return None
        return sorted(_text(m) for m in await self._redis.smembers(key))

    async def has_segment(self, segment: str) -> bool:
        """Whether the saved segment exists, without reading its members (the API checks events with it)."""
        return bool(await self._redis.exists(SEGMENT_KEY.format(segment)))

    async def save_segment(self, segment: str, user_ids: Sequence[str]) -> None:
        key, index = SEGMENT_KEY.format(segment), SEGMENT_INDEX.format(segment)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, index)
            if user_ids:
                pipe.sadd(key, *user_ids)
                pipe.zadd(index, dict.fromkeys(user_ids, 0))
            await pipe.execute()

    async def all_ids(self) -> list[str]:
        return sorted(_text(m) for m in await self._redis.smembers(ALL_USERS))

    async def count(self) -> int:
        return int(await self._redis.scard(ALL_USERS))


@dataclass(frozen=True)
class AudienceIndex:
    """The id sets an audience selects from (their union), each with its sorted-set index."""

    sets: tuple[str, ...]
    indexes: tuple[str, ...]

    @classmethod
    def everyone(cls) -> AudienceIndex:
        return cls((ALL_USERS,), (USERS_INDEX,))

    @classmethod
    def of_tags(cls, tags: Sequence[str]) -> AudienceIndex:
        unique = sorted(set(tags))
        return cls(tuple(TAG_KEY.format(t) for t in unique), tuple(TAG_INDEX.format(t) for t in unique))

    @classmethod
    def of_segment(cls, segment: str) -> AudienceIndex:
        return cls((SEGMENT_KEY.format(segment),), (SEGMENT_INDEX.format(segment),))


class AudienceWalk:
    """Pages through an audience by user id, a bounded batch at a time, from a cursor.

    Why sorted sets walked by id rather than SSCAN: a page starts strictly after the last id handed
    out, so a walk never repeats anyone (SSCAN may, across a rehash), a union of tags is merged
    without remembering who was seen, and the cursor is a plain id that survives a restart. Someone
    added during the walk is included if their id sorts after the cursor (not yet reached), and
    left out otherwise, as if they had joined after the broadcast passed them.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def prepare(self, audience: AudienceIndex, chunk: int = 5000) -> int:
        """Build any index that lags its set (users written before the indexes existed), then return
        the audience size estimate: the sum of the sets' sizes (exact for one set)."""
        total = 0
        for set_key, index_key in zip(audience.sets, audience.indexes, strict=True):
            size = int(await self._redis.scard(set_key))
            if size != int(await self._redis.zcard(index_key)):
                await self._backfill(set_key, index_key, chunk)
            total += size
        return total

    async def _backfill(self, set_key: str, index_key: str, chunk: int) -> None:
        # Members are added, never removed here: the index is a superset until the next upsert, and
        # ZADD of an existing member changes nothing, so two workers backfilling at once is harmless.
        cursor = 0
        while True:
            cursor, members = await self._redis.sscan(set_key, cursor, count=chunk)
            if members:
                await self._redis.zadd(index_key, dict.fromkeys((_text(m) for m in members), 0))
            if cursor == 0:
                return

    async def page(self, audience: AudienceIndex, after: str, limit: int) -> list[str]:
        """Up to `limit` ids of the audience sorting after `after` ("" for the start), ascending."""
        low = f"({after}" if after else "-"
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in audience.indexes:
                pipe.zrangebylex(index, low, "+", 0, limit)
            pages = await pipe.execute()
        # Byte order in Redis is code point order for UTF-8, the order Python sorts str in.
        merged = sorted({_text(member) for page in pages for member in page})
        return merged[:limit]


def _indexed_addresses(held: Iterable[tuple[ChannelName, str]]) -> set[tuple[ChannelName, str]]:
    return {(channel, address) for channel, address in held if channel not in UNINDEXED and address.strip()}


def address_ids(user: User) -> set[str]:
    """The ids of every address bound to `user` (chosen or not), as the owners index keys them."""
    return {
        address_user_id(channel, address)
        for channel, address in user.every_address()
        if channel not in UNINDEXED and address.strip()
    }


class _IndexEntries(msgspec.Struct):
    """What a stored profile is indexed under; every other field is skipped while decoding."""

    tags: list[str] = []
    addresses: dict[ChannelName, list[_StoredAddress]] = {}
    bindings: dict[ChannelName, str] = {}

    def held(self) -> set[tuple[ChannelName, str]]:
        held = [(c, a.address) for c, items in self.addresses.items() for a in items]
        # A profile stored before addresses existed has bindings only.
        held += [(c, a) for c, a in self.bindings.items() if c not in self.addresses]
        return _indexed_addresses(held)


class _StoredAddress(msgspec.Struct):
    address: str


_INDEX_ENTRIES = msgspec.json.Decoder(_IndexEntries)


def _scored(members: Sequence[str]) -> list[str | int]:
    """ZADD's arguments for members at score 0: 0 m1 0 m2 ..."""
    return [part for member in members for part in (0, member)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
