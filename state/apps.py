"""The registry of upstream apps (business systems) allowed to emit events, and their API keys.

Redis layout: `sb:{apps}:app:{name}` JSON of the app with the SHA-256 of its key and its events signing
key (`records.signing`: derived from the key, so the app can derive it too; ingest checks each record of
the `events` topic with it);
`sb:{apps}:key:{sha256}` the app name, so a key is found by its hash alone; `sb:{apps}:names` set of
every name. Keys are never stored. The registry is a handful of records changed together in
transactions, so all of it shares one hash tag, `{apps}`: one Redis Cluster slot.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from redis.asyncio import Redis

from records.signing import events_signing_key
from records.topics import CHANNELS, ChannelName, Name
from settings.errors import SwitchboardError

_APP = "sb:{{apps}}:app:{}"
_KEY = "sb:{{apps}}:key:{}"
_APPS = "sb:{apps}:names"
KEY_PREFIX = "sbk_"
# How long a worker trusts an app it read: ingest asked Redis once per event. A disable or a change of
# channels reaches the stages within this; keys are never cached (`authenticate` reads Redis each time,
# so a rotated or disabled key is refused by the API at once), nor are unknown names.
WORKER_CACHE_SECONDS = 2.0

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_SECRETS = frozenset({"key_sha256", "signing_key"})


class App(BaseModel):
    """An upstream business system and the channels it may send on; a disabled app's key is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    channels: frozenset[ChannelName]
    description: str = ""
    enabled: bool = True


class AppExistsError(SwitchboardError, ValueError):
    """`register` was asked for a name already taken."""


class UnknownAppError(SwitchboardError, LookupError):
    """The app named is not registered."""


class AppSpecError(SwitchboardError, ValueError):
    """An app name or channel list that cannot be registered."""


class AppRegistry:
    """Registers apps, issues their API keys and authenticates requests by key."""

    def __init__(self, redis: Redis, cache_seconds: float = 0.0) -> None:
        """`cache_seconds` > 0 keeps what `get` found for that long (the stages' hot path)."""
        if cache_seconds < 0:
            raise ValueError(f"cache_seconds must not be negative, got {cache_seconds}")
        self._redis = redis
        self._cache_seconds = cache_seconds
        self._cached: dict[str, tuple[float, dict[str, object]]] = {}

    async def register(self, name: str, channels: Iterable[str], description: str = "") -> str:
        """Register a new app and return its API key; the key is shown this once and never stored."""
        app = App(name=app_name(name), channels=channel_names(channels), description=description)
        key = _new_key()
        secrets_ = {"key_sha256": _digest(key), "signing_key": events_signing_key(key)}
        record = json.dumps({**app.model_dump(mode="json"), **secrets_})
        if not await self._redis.set(_APP.format(name), record, nx=True):
            raise AppExistsError(
                f"app {name!r} is already registered; to issue a new key run `switchboard apps rotate {name}`"
            )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_KEY.format(_digest(key)), name)
            pipe.sadd(_APPS, name)
            await pipe.execute()
        return key

    async def authenticate(self, key: str) -> App | None:
        """The enabled app holding this key, or None. Looked up by hash: the key itself is never compared."""
        if not key.startswith(KEY_PREFIX):
            return None
        digest = _digest(key)
        name = await self._redis.get(_KEY.format(digest))
        if name is None:
            return None
        record = await self._record(_text(name))
        # A rotation between the two reads leaves the old hash pointing at a record that no longer holds it.
        if record is None or not hmac.compare_digest(str(record["key_sha256"]), digest):
            return None
        app = _app(record)
        return app if app.enabled else None

    async def get(self, name: str) -> App | None:
        """The app named, enabled or not, or None; with a cache, as read at most `cache_seconds` ago."""
        record = await self._cached_record(name)
        return _app(record) if record is not None else None

    async def signing_key(self, name: str) -> str | None:
        """The key the app signs its `events` records with (None: unknown app, or registered before
        records were signed: rotate its key); cached like `get`."""
        record = await self._cached_record(name)
        key = record.get("signing_key") if record is not None else None
        return str(key) if key else None

    async def _cached_record(self, name: str) -> dict[str, object] | None:
        if self._cache_seconds:
            cached = self._cached.get(name)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        record = await self._record(name)
        if record is None:
            self._cached.pop(name, None)
            return None
        if self._cache_seconds:
            self._cached[name] = (time.monotonic() + self._cache_seconds, record)
        return record

    async def list(self) -> list[App]:
        """Every registered app, by name."""
        names = sorted(_text(n) for n in await self._redis.smembers(_APPS))
        apps = [await self.get(name) for name in names]
        return [app for app in apps if app is not None]

    async def rotate_key(self, name: str) -> str:
        """Issue a new key for the app; the old key stops working at once."""
        record = await self._required(name)
        key = _new_key()
        old_digest = str(record["key_sha256"])
        record["key_sha256"] = _digest(key)
        record["signing_key"] = events_signing_key(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_KEY.format(old_digest))
            pipe.set(_KEY.format(record["key_sha256"]), name)
            pipe.set(_APP.format(name), json.dumps(record))
            await pipe.execute()
        self._cached.pop(name, None)
        return key

    async def set_channels(self, name: str, channels: Iterable[str]) -> tuple[App, App]:
        """Change the channels the app may send on; returns (before, after)."""
        record = await self._required(name)
        before = _app(record)
        record["channels"] = sorted(channel_names(channels))
        await self._redis.set(_APP.format(name), json.dumps(record), xx=True)
        self._cached.pop(name, None)
        return before, _app(record)

    async def set_enabled(self, name: str, enabled: bool) -> App:
        """Disable (its key is refused, its events dead-lettered) or enable again, keeping the key."""
        record = await self._required(name)
        record["enabled"] = enabled
        await self._redis.set(_APP.format(name), json.dumps(record), xx=True)
        self._cached.pop(name, None)
        return _app(record)

    async def remove(self, name: str) -> None:
        """Forget the app and its key; its name can be registered again."""
        record = await self._required(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_KEY.format(record["key_sha256"]), _APP.format(name))
            pipe.srem(_APPS, name)
            await pipe.execute()
        self._cached.pop(name, None)

    async def _required(self, name: str) -> dict[str, object]:
        record = await self._record(name)
        if record is None:
            known = sorted(_text(n) for n in await self._redis.smembers(_APPS))
            raise UnknownAppError(f"no app named {name!r} is registered{_suggestion(name, known)}")
        return record

    async def _record(self, name: str) -> dict[str, object] | None:
        raw = await self._redis.get(_APP.format(name))
        if raw is None:
            return None
        record: dict[str, object] = json.loads(raw)
        return record


def app_name(name: str) -> str:
    """The name checked: 1-128 of letters, digits and `_.:-`."""
    try:
        return _NAME.validate_python(name)
    except ValidationError:
        raise AppSpecError(f"app name {name!r} must be 1-128 letters, digits or _ . : -") from None


def channel_names(channels: Iterable[str]) -> frozenset[ChannelName]:
    """Channel names checked against the known channels, the first unknown one named with a suggestion."""
    wanted = {channel.strip() for channel in channels if channel.strip()}
    if not wanted:
        raise AppSpecError(f"name at least one channel: {', '.join(CHANNELS)}")
    for channel in sorted(wanted):
        if channel not in CHANNELS:
            hint = _suggestion(channel, CHANNELS)
            raise AppSpecError(f"unknown channel {channel!r}{hint}; channels: {', '.join(CHANNELS)}")
    return frozenset(wanted)  # type: ignore[arg-type]  # each checked against CHANNELS above


def _suggestion(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _app(record: dict[str, object]) -> App:
    return App.model_validate({k: v for k, v in record.items() if k not in _SECRETS})


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
