"""Consent: who asked not to be reached (per category and channel), who opted in, who is blacklisted.

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

Opt-in (PIPL and GDPR ask it for marketing): a category in `opt_in` reaches a person only with a
standing opt-in for it, on every channel or the one sent on. `sb:optin:{subject}` hash, field
`{category}|{channel}` -> JSON `{"source", "evidence", "at"}` of the standing opt-ins; every opt-in and
every withdrawal is also appended to `sb:optin-log:{subject}`, so the source and time of each one are
kept after it is withdrawn (exported with the rest of a person's consent). The same check reads the
whitelist and test mode (`state.whitelist`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from records.topics import address_user_id
from records.vocabulary import CATEGORIES, CHANNELS
from state.connection import is_cluster
from state.users import OWNERS_KEY, UNINDEXED
from state.whitelist import (
    TEST_MODE_KEY,
    TEST_MODE_REASON,
    WHITELIST_KEY,
    Whitelist,
    WhitelistEntry,
    whitelist_entry,
)

CONSENT_KEY = "sb:consent:{}"
BLACKLIST_KEY = "sb:blacklist"
OPT_IN_KEY = "sb:optin:{}"
OPT_IN_LOG_KEY = "sb:optin-log:{}"
DEFAULT_OPT_IN: frozenset[str] = frozenset({"marketing"})
"""Categories that reach only people who opted in, unless settings say otherwise."""
ANY = "*"

Clock = Callable[[], datetime]

# KEYS: the blacklist, the whitelist, the apps in test mode. ARGV: the consent, owners and opt-in key
# prefixes, "1" when test mode is on everywhere, then category, channel, user id, address, address id,
# app and "1" when the category needs an opt-in, per item. Each item's subjects are the user, the
# address id and the address's owners; their keys are built here, which a single Redis allows (on a
# Redis Cluster `_refused_by_reads` does the same work). Answers flat quintuples (item number, kind,
# whose, subject or scope field, stored JSON): "w" for a whitelisted item, then at most one refusal per
# item: "t" test mode and not whitelisted, "b" blacklist, "u" the broadest unsubscription, "o" no opt-in.
_REFUSED = """
local consent, owners, optins = ARGV[1], ARGV[2], ARGV[3]
local everywhere = ARGV[4] == '1'
-- Most batches meet an empty whitelist and apps not in test mode: ask once, not per item.
local trusting = redis.call('HLEN', KEYS[2]) > 0
local testing = {}
local out = {}
for i = 1, (#ARGV - 4) / 7 do
  local at = 7 * i - 2
  local category, channel, user = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local address, address_id, app, needs = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
  local subjects = {user}
  if address_id ~= '' then
    if address_id ~= user then subjects[#subjects + 1] = address_id end
    for _, owner in ipairs(redis.call('SMEMBERS', owners .. address_id)) do
      if owner ~= user then subjects[#subjects + 1] = owner end
    end
  end
  local named = {unpack(subjects)}
  if address ~= '' then named[#named + 1] = address end
  local listed = nil
  if trusting then
    for _, subject in ipairs(named) do
      if redis.call('HEXISTS', KEYS[2], subject) == 1 then listed = subject; break end
    end
  end
  if listed then
    out[#out + 1] = i; out[#out + 1] = 'w'; out[#out + 1] = listed; out[#out + 1] = ''; out[#out + 1] = ''
  end
  local who, hit = nil, nil
  if app ~= '' and testing[app] == nil then testing[app] = redis.call('HEXISTS', KEYS[3], app) == 1 end
  if not listed and (everywhere or testing[app]) then
    out[#out + 1] = i; out[#out + 1] = 't'; out[#out + 1] = ''; out[#out + 1] = app; out[#out + 1] = ''
    hit = true
  end
  if not hit then
    for _, subject in ipairs(named) do
      hit = redis.call('HGET', KEYS[1], subject)
      if hit then who = subject; break end
    end
    if hit then
      out[#out + 1] = i; out[#out + 1] = 'b'; out[#out + 1] = who; out[#out + 1] = who
      out[#out + 1] = hit
    end
  end
  if not hit then
    local fields = {'*|*', category .. '|*', '*|' .. channel, category .. '|' .. channel}
    for _, subject in ipairs(subjects) do
      local found = redis.call('HMGET', consent .. subject, unpack(fields))
      for j = 1, 4 do
        if found[j] then
          out[#out + 1] = i; out[#out + 1] = 'u'; out[#out + 1] = subject; out[#out + 1] = fields[j]
          out[#out + 1] = found[j]
          hit = true
          break
        end
      end
      if hit then break end
    end
  end
  if not hit and needs == '1' then
    -- The recipient's own opt-in; a raw address (its id is the recipient) also takes its owners'.
    local holders = {user}
    if address_id == user then holders = subjects end
    local given = false
    for _, holder in ipairs(holders) do
      local found = redis.call('HMGET', optins .. holder, category .. '|*', category .. '|' .. channel)
      if found[1] or found[2] then given = true; break end
    end
    if not given then
      out[#out + 1] = i; out[#out + 1] = 'o'; out[#out + 1] = ''; out[#out + 1] = category
      out[#out + 1] = ''
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
    app: str = ""
    """The sending app, for its test mode; empty: only the global test mode applies."""


RefusalKind = Literal["test_mode", "blacklist", "unsubscribed", "opt_in"]


class ConsentVerdict(NamedTuple):
    """The consent check of one query: why it is refused (None: it may be sent), and whether the
    recipient or the address is whitelisted (a rule's cap may exempt them)."""

    refused: str | None = None
    kind: RefusalKind | None = None
    whitelisted: bool = False

    @property
    def reason(self) -> str:
        """The receipt's reason: test mode speaks for itself, the rest is consent."""
        if self.kind == "test_mode":
            return self.refused or ""
        return f"consent: {self.refused}"


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


class OptIn(BaseModel):
    """A recorded opt-in to a category (on one channel, or every one when None), with its evidence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str
    channel: str | None
    source: str
    """Where it was given: e.g. 'signup form v3', 'portal preference centre', 'operator alice'."""
    evidence: str = ""
    at: datetime
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None


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
    opt_ins: tuple[OptIn, ...] = ()
    """The standing opt-ins."""
    opt_in_history: tuple[OptIn, ...] = ()
    """Every opt-in ever recorded, oldest first, with when it was withdrawn."""
    whitelisted: WhitelistEntry | None = None


class ConsentStore:
    """Unsubscriptions, opt-ins and the blacklist in Redis; the client is passed in.

    `opt_in`: the categories that need a standing opt-in; `test_mode`: test mode for every app."""

    def __init__(
        self,
        redis: Redis,
        clock: Clock | None = None,
        *,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
        test_mode: bool = False,
    ) -> None:
        self._redis = redis
        self._now: Clock = clock or (lambda: datetime.now(UTC))
        self._refused = redis.register_script(_REFUSED)
        self._opt_in = frozenset(opt_in)
        unknown = sorted(self._opt_in - set(CATEGORIES))
        if unknown:
            known = ", ".join(CATEGORIES)
            raise ValueError(f"opt-in categories {unknown} are not categories; known: {known}")
        self._test_mode = test_mode
        self.whitelist = Whitelist(redis, clock)

    @property
    def opt_in_categories(self) -> frozenset[str]:
        return self._opt_in

    @property
    def test_mode_everywhere(self) -> bool:
        return self._test_mode

    async def opt_in(
        self, user_id: str, *, category: str, channel: str | None = None, source: str, evidence: str = ""
    ) -> OptIn:
        """Record that `user_id` agreed to `category` on `channel` (None = all), where and with what proof."""
        field = _field(_need("user_id", user_id), _need("category", category), channel)
        entry = OptIn(
            category=category, channel=channel, source=_need("source", source), evidence=evidence,
            at=self._now(),
        )
        stored = json.dumps({"source": source, "evidence": evidence, "at": entry.at.isoformat()})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(OPT_IN_KEY.format(user_id), field, stored)
            pipe.rpush(OPT_IN_LOG_KEY.format(user_id), entry.model_dump_json())
            await pipe.execute()
        return entry

    async def withdraw(
        self, user_id: str, *, category: str, channel: str | None = None, by: str
    ) -> list[OptIn]:
        """Withdraw the opt-ins this scope covers (the category on every channel, or one channel).

        A broader opt-in still stands: withdrawing marketing on email after "marketing everywhere"
        leaves that one, so marketing email still reaches the person until it is withdrawn too."""
        _field(_need("user_id", user_id), _need("category", category), channel)
        key = OPT_IN_KEY.format(user_id)
        standing = {_text(f): v for f, v in (await self._redis.hgetall(key)).items()}
        covered = {f: v for f, v in standing.items() if _covers(category, channel, f)}
        if not covered:
            return []
        at = self._now()
        withdrawn = [
            _opt_in(f, v).model_copy(update={"withdrawn_at": at, "withdrawn_by": _need("by", by)})
            for f, v in covered.items()
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(key, *covered)
            pipe.rpush(OPT_IN_LOG_KEY.format(user_id), *(w.model_dump_json() for w in withdrawn))
            await pipe.execute()
        return withdrawn

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
        """For each query, why it must not be sent, or None when it may (see `verdicts`)."""
        return [verdict.refused for verdict in await self.verdicts(items)]

    async def verdicts(self, items: Sequence[ConsentQuery]) -> list[ConsentVerdict]:
        """For each query, why it must not be sent (test mode, the blacklist, an unsubscription, a
        missing opt-in, in that order) and whether it is whitelisted.

        One script call per batch that answers only the refused and whitelisted items: most sends are
        allowed, and reading back a reply per scope per item cost more client CPU than Redis spent on
        it (5x).
        """
        if not items:
            return []
        if is_cluster(self._redis):
            reply = await self._refused_by_reads(items)
        else:
            prefixes = [CONSENT_KEY.format(""), OWNERS_KEY.format(""), OPT_IN_KEY.format("")]
            args = [*prefixes, _flag(self._test_mode)]
            for item in items:
                args += [
                    item.category, item.channel, item.user_id, item.address, _address_id(item), item.app,
                    _flag(item.category in self._opt_in),
                ]
            reply = await self._refused(keys=[BLACKLIST_KEY, WHITELIST_KEY, TEST_MODE_KEY], args=args)
        refused: list[tuple[str, RefusalKind] | None] = [None] * len(items)
        listed = [False] * len(items)
        for at in range(0, len(reply), 5):
            index, kind = int(reply[at]) - 1, _text(reply[at + 1])
            who, name, raw = _text(reply[at + 2]), _text(reply[at + 3]), reply[at + 4]
            if kind == "w":
                listed[index] = True
            elif kind == "t":
                refused[index] = (TEST_MODE_REASON, "test_mode")
            elif kind == "b":
                # An address blacklisted by itself reads as before: the blacklist holds it by name.
                whose = "" if who == items[index].address else _whose(items[index], who)
                refused[index] = (f"blacklisted{whose}: {_blacklist_entry(name, raw).reason}", "blacklist")
            elif kind == "o":
                refused[index] = (f"no opt-in for {name}", "opt_in")
            else:
                why = _unsubscription(name, raw).reason() + _whose(items[index], who)
                refused[index] = (why, "unsubscribed")
        return [
            ConsentVerdict(None, None, w) if r is None else ConsentVerdict(r[0], r[1], w)
            for r, w in zip(refused, listed, strict=True)
        ]

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
        apps = sorted({i.app for i in items if i.app})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(BLACKLIST_KEY, names)
            pipe.hmget(WHITELIST_KEY, names)
            pipe.hmget(TEST_MODE_KEY, apps or [""])
            for name in names:
                pipe.hgetall(CONSENT_KEY.format(name))
            for name in names:
                pipe.hgetall(OPT_IN_KEY.format(name))
            listed, trusted, testing, *hashes = await pipe.execute()
        blacklist = {n: raw for n, raw in zip(names, listed, strict=True) if raw is not None}
        whitelist = {n for n, raw in zip(names, trusted, strict=True) if raw is not None}
        in_test = {a for a, raw in zip(apps, testing, strict=False) if raw is not None}
        consent = {n: {_text(f): v for f, v in raw.items()} for n, raw in zip(names, hashes, strict=False)}
        opt_ins = {n: {_text(f) for f in raw} for n, raw in zip(names, hashes[len(names):], strict=True)}
        reply: list[Any] = []
        for number, (item, group) in enumerate(zip(items, subjects, strict=True), start=1):
            named = [*group, item.address] if item.address else group
            trusted_by = next((s for s in named if s in whitelist), None)
            if trusted_by is not None:
                reply += [number, "w", trusted_by, "", ""]
            elif self._test_mode or item.app in in_test:
                reply += [number, "t", "", item.app, ""]
                continue
            who = next((s for s in named if s in blacklist), None)
            if who is not None:
                reply += [number, "b", who, who, blacklist[who]]
                continue
            hit = next(((s, f) for s in group for f in _scopes(item) if f in consent[s]), None)
            if hit is not None:
                reply += [number, "u", hit[0], hit[1], consent[hit[0]][hit[1]]]
                continue
            if item.category in self._opt_in:
                holders = group if _address_id(item) == item.user_id else [item.user_id]
                wanted = {f"{item.category}|{ANY}", f"{item.category}|{item.channel}"}
                if not any(wanted & opt_ins[h] for h in holders):
                    reply += [number, "o", "", item.category, ""]
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
            pipe.hgetall(OPT_IN_KEY.format(user_id))
            pipe.lrange(OPT_IN_LOG_KEY.format(user_id), 0, -1)
            pipe.hget(WHITELIST_KEY, user_id)
            scopes, listed, standing, log, trusted = await pipe.execute()
        entries = sorted(
            (_unsubscription(_text(f), v) for f, v in scopes.items()),
            key=lambda e: (e.category is not None, e.channel is not None, e.category or "", e.channel or ""),
        )
        return Consent(
            user_id=user_id,
            unsubscriptions=tuple(entries),
            blacklisted=None if listed is None else _blacklist_entry(user_id, listed),
            opt_ins=tuple(sorted((_opt_in(_text(f), v) for f, v in standing.items()), key=_scope_order)),
            opt_in_history=_history(log),
            whitelisted=None if trusted is None else whitelist_entry(user_id, trusted),
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


def _opt_in(field: str, raw: bytes | str) -> OptIn:
    category, _, channel = field.partition("|")
    stored = json.loads(raw)
    return OptIn(
        category=category,
        channel=None if channel == ANY else channel,
        source=stored["source"],
        evidence=stored.get("evidence", ""),
        at=datetime.fromisoformat(stored["at"]),
    )


def _history(log: Sequence[bytes | str]) -> tuple[OptIn, ...]:
    """Every opt-in in the order given; a withdrawal record takes the place of the opt-in it ended."""
    given: dict[tuple[str, str | None, datetime], OptIn] = {}
    for raw in log:
        entry = OptIn.model_validate_json(raw)
        given[(entry.category, entry.channel, entry.at)] = entry
    return tuple(given.values())


def _scope_order(entry: OptIn) -> tuple[bool, str, str]:
    return (entry.channel is not None, entry.category, entry.channel or "")


def _flag(on: bool) -> str:
    return "1" if on else ""


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
