"""Tests that produce to the `events` topic directly sign their records as an app would: with the app's
events signing key (`records.signing`), read from the registry the test registered the app in."""

from __future__ import annotations

import json
from collections.abc import Sequence

from records.signing import signed_headers
from settings import Settings
from state.apps import AppRegistry
from state.connection import open_redis

Headers = list[tuple[str, bytes]] | None


async def signatures(settings: Settings, values: Sequence[bytes]) -> list[Headers]:
    """The headers signing each value with its app's key; None for a value naming no registered app
    (sent unsigned, as a stranger would: ingest dead-letters it)."""
    redis = open_redis(settings.redis)
    keys: dict[str, str | None] = {}
    try:
        registry = AppRegistry(redis)
        found: list[Headers] = []
        for value in values:
            app = _app_of(value)
            if app is not None and app not in keys:
                keys[app] = await registry.signing_key(app)
            key = keys.get(app) if app is not None else None
            found.append(signed_headers(value, key) if key else None)
        return found
    finally:
        await redis.aclose()


def _app_of(value: bytes) -> str | None:
    try:
        app = json.loads(value).get("app")
    except (ValueError, AttributeError):
        return None
    return app if isinstance(app, str) else None
