"""The whitelist (白名单) and test mode.

The whitelist names people (user ids) and addresses (in their cleaned form, as the blacklist holds
them) who are trusted receivers: a rule's cap may exempt them (`exempt: {whitelist: true}`), and an app
in test mode reaches only them. Test mode is per app (switched through the API or CLI) or everywhere
(`SWITCHBOARD_TEST_MODE`). Both are read by the consent check (`state.consent`), in the same script
call as the rest of consent, so they cost no extra round trip.

Redis layout: `sb:whitelist` hash, subject -> JSON `{"reason", "at"}`; `sb:test-mode` hash, app ->
JSON `{"by", "at"}` for every app in test mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

WHITELIST_KEY = "sb:whitelist"
TEST_MODE_KEY = "sb:test-mode"
TEST_MODE_REASON = "test mode: not whitelisted"

Clock = Callable[[], datetime]


class WhitelistEntry(BaseModel):
    """One whitelisted user id or address, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    reason: str
    at: datetime


class TestMode(BaseModel):
    """An app in test mode: only whitelisted people receive its messages."""

    __test__ = False  # not a pytest class, whatever its name
    model_config = ConfigDict(extra="forbid", frozen=True)

    app: str
    by: str
    """Who switched it on (e.g. `operator alice`)."""
    at: datetime


class Whitelist:
    """The whitelist and the apps in test mode, in Redis; the client is passed in."""

    def __init__(self, redis: Redis, clock: Clock | None = None) -> None:
        self._redis = redis
        self._now: Clock = clock or (lambda: datetime.now(UTC))

    async def add(self, subject: str, reason: str) -> WhitelistEntry:
        """Whitelist `subject` (a user id or a cleaned address) for `reason`; replaces an earlier entry."""
        entry = WhitelistEntry(
            subject=_need("subject", subject), reason=_need("reason", reason), at=self._now()
        )
        stored = json.dumps({"reason": reason, "at": entry.at.isoformat()})
        await self._redis.hset(WHITELIST_KEY, subject, stored)
        return entry

    async def remove(self, subject: str) -> bool:
        """True when the subject was whitelisted."""
        return bool(await self._redis.hdel(WHITELIST_KEY, _need("subject", subject)))

    async def get(self, subject: str) -> WhitelistEntry | None:
        raw = await self._redis.hget(WHITELIST_KEY, _need("subject", subject))
        return None if raw is None else whitelist_entry(subject, raw)

    async def entries(self) -> list[WhitelistEntry]:
        """Every entry, by subject (a whitelist is a short list of testers and VIPs, read at once)."""
        found = await self._redis.hgetall(WHITELIST_KEY)
        return sorted((whitelist_entry(_text(s), raw) for s, raw in found.items()), key=lambda e: e.subject)

    async def set_test_mode(self, app: str, on: bool, *, by: str) -> TestMode | None:
        """Switch `app`'s test mode on (returns its state) or off (returns None)."""
        if not on:
            await self._redis.hdel(TEST_MODE_KEY, _need("app", app))
            return None
        mode = TestMode(app=_need("app", app), by=_need("by", by), at=self._now())
        await self._redis.hset(TEST_MODE_KEY, app, json.dumps({"by": by, "at": mode.at.isoformat()}))
        return mode

    async def test_mode(self, app: str) -> TestMode | None:
        raw = await self._redis.hget(TEST_MODE_KEY, _need("app", app))
        return None if raw is None else _mode(app, raw)

    async def test_mode_apps(self) -> list[TestMode]:
        found = await self._redis.hgetall(TEST_MODE_KEY)
        return sorted((_mode(_text(a), raw) for a, raw in found.items()), key=lambda m: m.app)


def whitelist_entry(subject: str, raw: bytes | str) -> WhitelistEntry:
    """An entry as `sb:whitelist` stores it."""
    stored = json.loads(raw)
    return WhitelistEntry(subject=subject, reason=stored["reason"], at=datetime.fromisoformat(stored["at"]))


def _mode(app: str, raw: bytes | str) -> TestMode:
    stored = json.loads(raw)
    return TestMode(app=app, by=stored["by"], at=datetime.fromisoformat(stored["at"]))


def _need(name: str, value: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
