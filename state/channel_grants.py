"""The channels an app may send on: those registered with the app (`App.channels`), and the type of
every enabled channel account that authorises it (下发通道). Read by ingest, decide and fallbacks in
place of the bare registry; which account carries a message is the send stage's business."""

from __future__ import annotations

import time

from state.apps import App, AppRegistry
from state.channel_accounts import ChannelAccounts

CACHE_SECONDS = 2.0


class AppChannelGrants:
    """`AppRegistry.get`, with the app's channels widened by the accounts that authorise it."""

    def __init__(self, apps: AppRegistry, accounts: ChannelAccounts,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self._apps = apps
        self._accounts = accounts
        self._cache_seconds = cache_seconds
        self._fresh_until = 0.0
        self._granted: dict[str, frozenset[str]] = {}

    async def get(self, name: str) -> App | None:
        app = await self._apps.get(name)
        if app is None:
            return None
        extra = (await self._grants()).get(name, frozenset()) - app.channels
        return app.model_copy(update={"channels": app.channels | extra}) if extra else app

    async def signing_key(self, name: str) -> str | None:
        """The app's events signing key, as the registry keeps it (ingest checks signatures with it)."""
        return await self._apps.signing_key(name)

    async def _grants(self) -> dict[str, frozenset[str]]:
        if time.monotonic() < self._fresh_until:
            return self._granted
        granted: dict[str, set[str]] = {}
        for account in await self._accounts.list():
            if account.enabled:
                for app in account.apps:
                    granted.setdefault(app, set()).add(account.type)
        self._granted = {app: frozenset(types) for app, types in granted.items()}
        self._fresh_until = time.monotonic() + self._cache_seconds
        return self._granted
