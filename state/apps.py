"""The registry of upstream apps (business systems) allowed to emit events, and their API keys.

Redis layout: `sb:app:{name}` JSON of the app with the SHA-256 of its key; `sb:appkey:{sha256}` the
app name, so a key is found by its hash alone; `sb:apps` set of every name. Keys are never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, TypeAdapter
from redis.asyncio import Redis

from records.topics import ChannelName, Name

_APP = "sb:app:{}"
_KEY = "sb:appkey:{}"
_APPS = "sb:apps"
KEY_PREFIX = "sbk_"

_NAME: TypeAdapter[str] = TypeAdapter(Name)


class App(BaseModel):
    """An upstream business system and the channels it may send on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    channels: frozenset[ChannelName]
    description: str = ""


class AppExistsError(ValueError):
    """`register` was asked for a name already taken."""


class UnknownAppError(LookupError):
    """The app named is not registered."""


class AppRegistry:
    """Registers apps, issues their API keys and authenticates requests by key."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def register(self, name: str, channels: Iterable[ChannelName], description: str = "") -> str:
        """Register a new app and return its API key; the key is shown this once and never stored."""
        app = App(name=_NAME.validate_python(name), channels=frozenset(channels), description=description)
        key = _new_key()
        record = json.dumps({**app.model_dump(mode="json"), "key_sha256": _digest(key)})
        if not await self._redis.set(_APP.format(name), record, nx=True):
            raise AppExistsError(f"app {name!r} is already registered; rotate its key instead")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_KEY.format(_digest(key)), name)
            pipe.sadd(_APPS, name)
            await pipe.execute()
        return key

    async def authenticate(self, key: str) -> App | None:
        """The app holding this key, or None. Looked up by hash, so the key itself is never compared."""
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
        return _app(record)

    async def get(self, name: str) -> App | None:
        record = await self._record(name)
        return None if record is None else _app(record)

    async def list(self) -> list[App]:
        names = sorted(_text(n) for n in await self._redis.smembers(_APPS))
        apps = [await self.get(name) for name in names]
        return [app for app in apps if app is not None]

    async def rotate_key(self, name: str) -> str:
        """Issue a new key for the app; the old key stops working at once."""
        record = await self._record(name)
        if record is None:
            raise UnknownAppError(f"no app named {name!r} is registered")
        key = _new_key()
        old_digest = str(record["key_sha256"])
        record["key_sha256"] = _digest(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_KEY.format(old_digest))
            pipe.set(_KEY.format(record["key_sha256"]), name)
            pipe.set(_APP.format(name), json.dumps(record))
            await pipe.execute()
        return key

    async def _record(self, name: str) -> dict[str, object] | None:
        raw = await self._redis.get(_APP.format(name))
        if raw is None:
            return None
        record: dict[str, object] = json.loads(raw)
        return record


def _app(record: dict[str, object]) -> App:
    return App.model_validate({k: v for k, v in record.items() if k != "key_sha256"})


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
