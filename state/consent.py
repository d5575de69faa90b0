"""Consent: who asked not to be reached (per category and channel) and who is blacklisted.

Consent follows the address as well as the person: a send to an address is refused when the
recipient, the address itself, or any person the address is bound to (the user directory's owners
index) refused it, so a raw address cannot reach someone who unsubscribed from everything.

Redis layout: `sb:consent:{subject}` hash, field `{category}|{channel}` (`*` = every one) -> JSON
`{"source", "at"}`, where the subject is a user id or an address id (`address_user_id(channel,
address)`, the id a raw address is known by, so an address is unsubscribed on its own); `sb:blacklist`
hash, subject (a user id or a normalised address) -> JSON `{"reason", "at"}`. `refusals` answers a
whole batch with one script call on a single Redis. The subjects of one query are different people
and addresses, so their keys lie in different Redis Cluster slots: there, the same answer is read in
two pipelined round trips (the owners of the addresses, then the blacklist and consent hashes) and
worked out here. The check only reads, so it needs no atomicity across keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from records.topics import address_user_id
from records.vocabulary import CATEGORIES, CHANNELS
from state.connection import is_cluster
from state.users import OWNERS_KEY, UNINDEXED

CONSENT_KEY = "sb:consent:{}"
BLACKLIST_KEY = "sb:blacklist"
ANY = "*"

Clock = Callable[[], datetime]

# KEYS: the blacklist. ARGV: the consent and owners key prefixes, then category, channel, user id,
# address and address id per item. Each item's subjects are the user, the address id and the
# address's owners; their consent and owners keys are built here, which a single Redis allows (on a
# Redis Cluster `_refused_by_reads` does the same work). Answers flat quintuples (item number,
# "b" or "u", whose refusal, subject or scope field, stored JSON) for the refused items only, the
# blacklist first, then the broadest scope.
_REFUSED = """
local consent, owners = ARGV[1], ARGV[2]
local out = {}
for i = 1, (#ARGV - 2) / 5 do
  local at = 5 * i - 2
  local category, channel, user = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local address, address_id = ARGV[at + 3], ARGV[at + 4]
  local subjects = {user}
  if address_id ~= '' then
    if address_id ~= user then subjects[#subjects + 1] = address_id end
    for _, owner in ipairs(redis.call('SMEMBERS', owners .. address_id)) do
      if owner ~= user then subjects[#subjects + 1] = owner end
    end
  end
  local who, hit = nil, nil
  for _, subject in ipairs(subjects) do
    hit = redis.call('HGET', KEYS[1], subject)
    if hit then who = subject; break end
  end
  if not hit and address ~= '' then who, hit = address, redis.call('HGET', KEYS[1], address) end
  if hit then
    out[#out + 1] = i; out[#out + 1] = 'b'; out[#out + 1] = who; out[#out + 1] = who
    out[#out + 1] = hit
  else
    local fields = {'*|*', category .. '|*', '*|' .. channel, category .. '|' .. channel}
    local done = false
    for _, subject in ipairs(subjects) do
      local found = redis.call('HMGET', consent .. subject, unpack(fields))
      for j = 1, 4 do
        if found[j] then
          out[#out + 1] = i; out[#out + 1] = 'u'; out[#out + 1] = subject; out[#out + 1] = fields[j]
          out[#out + 1] = found[j]
          done = true
          break
        end
      end
      if done then break end
    end
  end
end
return out
"""


class ConsentQuery(NamedTuple):
    """One intended send to check: `address` may be empty when the recipient has none yet."""

    user_id: str
    channel: str
    category: str
    address: str = ""


class Unsubscription(BaseModel):
    """One standing refusal; None means every category or every channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str | None
    channel: str | None
    source: str
    at: datetime

    def reason(self) -> str:
        category = self.category or "every category"
        channel = f"on {self.channel}" if self.channel else "on every channel"
        return f"unsubscribed from {category} {channel} ({self.source}, {self.at.date().isoformat()})"


class BlacklistEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    reason: str
    at: datetime


class Consent(BaseModel):
    """Everything the store holds about one user, for operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    unsubscriptions: tuple[Unsubscription, ...]
    blacklisted: BlacklistEntry | None


class ConsentStore:
    """Unsubscriptions and the blacklist in Redis; the client is passed in."""

    def __init__(self, redis: Redis, clock: Clock | None = None) -> None:
        self._redis = redis
        self._now: Clock = clock or (lambda: datetime.now(UTC))
        self._refused = redis.register_script(_REFUSED)

    async def unsubscribe(
        self, user_id: str, *, category: str | None = None, channel: str | None = None, source: str
    ) -> Unsubscription:
        """Record that `user_id` refuses `category` on `channel` (None = all); returns the entry."""
        field = _field(_need("user_id", user_id), category, channel)
        entry = Unsubscription(
            category=category, channel=channel, source=_need("source", source), at=self._now()
        )
        await self._redis.hset(CONSENT_KEY.format(user_id), field, _dump(entry.source, entry.at, "source"))
        return entry

    async def resubscribe(
        self, user_id: str, *, category: str | None = None, channel: str | None = None
    ) -> int:
        """Drop the refusals this scope covers (itself and narrower ones); returns how many.

        A broader refusal still stands: resubscribing to marketing on email after "every category"
        leaves that one in place, so the user stays unsubscribed until it is dropped too.
        """
        _field(_need("user_id", user_id), category, channel)
        key = CONSENT_KEY.format(user_id)
        fields = [_text(f) for f in await self._redis.hkeys(key)]
        covered = [f for f in fields if _covers(category, channel, f)]
        if not covered:
            return 0
        return int(await self._redis.hdel(key, *covered))

    async def blacklist(self, subject: str, reason: str) -> BlacklistEntry:
        """Never send to `subject` (a user id or a normalised address) again, for `reason`."""
        entry = BlacklistEntry(
            subject=_need("subject", subject), reason=_need("reason", reason), at=self._now()
        )
        await self._redis.hset(BLACKLIST_KEY, subject, _dump(entry.reason, entry.at, "reason"))
        return entry

    async def unblacklist(self, subject: str) -> bool:
        """True when the subject was blacklisted."""
        return bool(await self._redis.hdel(BLACKLIST_KEY, _need("subject", subject)))

    async def refusals(self, items: Sequence[ConsentQuery]) -> list[str | None]:
        """For each query, why it must not be sent (blacklist first), or None when it may.

        One script call per batch that answers only the refused items: most sends are allowed, and
        reading back a reply per scope per item cost more client CPU than Redis spent on it (5x).
        """
        if not items:
            return []
        if is_cluster(self._redis):
            reply = await self._refused_by_reads(items)
        else:
            args = [CONSENT_KEY.format(""), OWNERS_KEY.format("")]
            for item in items:
                args += [item.category, item.channel, item.user_id, item.address, _address_id(item)]
            reply = await self._refused(keys=[BLACKLIST_KEY], args=args)
        answers: list[str | None] = [None] * len(items)
        for at in range(0, len(reply), 5):
            index, kind = int(reply[at]) - 1, _text(reply[at + 1])
            who, name, raw = _text(reply[at + 2]), _text(reply[at + 3]), reply[at + 4]
            # An address blacklisted by itself reads as before: the blacklist holds it by name.
            whose = "" if kind == "b" and who == items[index].address else _whose(items[index], who)
            if kind == "b":
                answers[index] = f"blacklisted{whose}: {_blacklist_entry(name, raw).reason}"
            else:
                answers[index] = _unsubscription(name, raw).reason() + whose
        return answers

    async def _refused_by_reads(self, items: Sequence[ConsentQuery]) -> list[Any]:
        """What the `_REFUSED` script answers, read with pipelined commands that each touch one key."""
        address_ids = sorted({_address_id(item) for item in items} - {""})
        async with self._redis.pipeline(transaction=False) as pipe:
            for address_id in address_ids:
                pipe.smembers(OWNERS_KEY.format(address_id))
            found: list[set[bytes | str]] = await pipe.execute()
        owners = {a: sorted(_text(o) for o in members) for a, members in zip(address_ids, found, strict=True)}
        subjects = [_subjects(item, owners) for item in items]
        names = sorted({s for group in subjects for s in group} | {i.address for i in items if i.address})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(BLACKLIST_KEY, names)
            for name in names:
                pipe.hgetall(CONSENT_KEY.format(name))
            listed, *scopes = await pipe.execute()
        blacklist = {n: raw for n, raw in zip(names, listed, strict=True) if raw is not None}
        consent = {n: {_text(f): v for f, v in raw.items()} for n, raw in zip(names, scopes, strict=True)}
        reply: list[Any] = []
        for number, (item, group) in enumerate(zip(items, subjects, strict=True), start=1):
            who = next((s for s in group if s in blacklist), None)
            if who is None and item.address and item.address in blacklist:
                who = item.address
            if who is not None:
                reply += [number, "b", who, who, blacklist[who]]
                continue
            hit = next(((s, f) for s in group for f in _scopes(item) if f in consent[s]), None)
            if hit is not None:
                reply += [number, "u", hit[0], hit[1], consent[hit[0]][hit[1]]]
        return reply

    async def unsubscribe_address(
        self, channel: str, address: str, *, category: str | None = None, source: str
    ) -> Unsubscription:
        """Record that `address` refuses `category` (None = all) whoever it is sent for."""
        if channel not in CHANNELS:
            known = ", ".join(CHANNELS)
            raise ValueError(f"unknown channel {channel!r} for address {address!r}; known: {known}")
        subject = address_user_id(channel, _need("address", address))
        return await self.unsubscribe(subject, category=category, source=source)

    async def consent(self, user_id: str) -> Consent:
        """The user's standing refusals (broadest first) and blacklist entry."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(CONSENT_KEY.format(_need("user_id", user_id)))
            pipe.hget(BLACKLIST_KEY, user_id)
            scopes, listed = await pipe.execute()
        entries = sorted(
            (_unsubscription(_text(f), v) for f, v in scopes.items()),
            key=lambda e: (e.category is not None, e.channel is not None, e.category or "", e.channel or ""),
        )
        return Consent(
            user_id=user_id,
            unsubscriptions=tuple(entries),
            blacklisted=None if listed is None else _blacklist_entry(user_id, listed),
        )

    async def blacklisted(self, subject: str) -> BlacklistEntry | None:
        raw = await self._redis.hget(BLACKLIST_KEY, _need("subject", subject))
        return None if raw is None else _blacklist_entry(subject, raw)


def _address_id(item: ConsentQuery) -> str:
    """The id the item's address is known by, or "" when it has none worth looking up."""
    if not item.address.strip() or item.channel in UNINDEXED or item.channel not in CHANNELS:
        return ""
    return address_user_id(item.channel, item.address)


def _subjects(item: ConsentQuery, owners: dict[str, list[str]]) -> list[str]:
    """Whose refusals stop the query, in the script's order: the user, the address, its owners."""
    subjects = [item.user_id]
    address_id = _address_id(item)
    if address_id:
        if address_id != item.user_id:
            subjects.append(address_id)
        subjects += [owner for owner in owners.get(address_id, []) if owner != item.user_id]
    return subjects


def _whose(item: ConsentQuery, subject: str) -> str:
    """Where a refusal came from when it is not the recipient's own, for the receipt's reason."""
    if subject == item.user_id:
        return ""
    if subject == item.address or subject == _address_id(item):
        return " (this address)"
    return f" (the address belongs to {subject})"


def _scopes(item: ConsentQuery) -> list[str]:
    """The refusal fields that would cover the query, broadest first."""
    return [
        f"{ANY}|{ANY}",
        f"{item.category}|{ANY}",
        f"{ANY}|{item.channel}",
        f"{item.category}|{item.channel}",
    ]


def _field(user_id: str, category: str | None, channel: str | None) -> str:
    # Checked here so a typo cannot record a refusal that no query will ever match.
    if category is not None and category not in CATEGORIES:
        known = ", ".join(CATEGORIES)
        raise ValueError(f"unknown category {category!r} for user {user_id!r}; known: {known}")
    if channel is not None and channel not in CHANNELS:
        known = ", ".join(CHANNELS)
        raise ValueError(f"unknown channel {channel!r} for user {user_id!r}; known: {known}")
    return f"{category or ANY}|{channel or ANY}"


def _covers(category: str | None, channel: str | None, field: str) -> bool:
    field_category, _, field_channel = field.partition("|")
    return (category is None or category == field_category) and (channel is None or channel == field_channel)


def _unsubscription(field: str, raw: bytes | str) -> Unsubscription:
    category, _, channel = field.partition("|")
    stored = json.loads(raw)
    return Unsubscription(
        category=None if category == ANY else category,
        channel=None if channel == ANY else channel,
        source=stored["source"],
        at=datetime.fromisoformat(stored["at"]),
    )


def _blacklist_entry(subject: str, raw: bytes | str) -> BlacklistEntry:
    stored = json.loads(raw)
    return BlacklistEntry(subject=subject, reason=stored["reason"], at=datetime.fromisoformat(stored["at"]))


def _dump(text: str, at: datetime, name: str) -> str:
    return json.dumps({name: text, "at": at.isoformat()})


def _need(name: str, value: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
