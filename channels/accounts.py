"""Channel accounts as provider routes: an enabled account of `state.channel_accounts` becomes a route
of its channel beside the providers file's, built with its opened secrets, usable only by the apps it
authorises.

Workers read the accounts at most every `cache_seconds` (a switch-off, an unauthorisation or a new
secret reaches the sends within that), and build an account's adapter again only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError

from channels.base import (
    CallbackRejected,
    CallbackReply,
    CallbackRequest,
    Channel,
    ChannelDeps,
    PermanentSendError,
    ProviderOptions,
    SendResult,
)
from channels.failover import CircuitBreaker, ProviderChain, Rate, RateLimiter, Route
from channels.kinds import KINDS, KindUnavailable, adapter_for
from channels.templates import RenderedMessage
from records.topics import ChannelName, Dispatch
from settings.errors import SwitchboardError
from state.channel_accounts import ChannelAccount, ChannelAccounts, LiveAccount

log = logging.getLogger(__name__)
CACHE_SECONDS = 2.0


def secret_fields(adapter: type[Channel]) -> frozenset[str]:
    """The options of an adapter that are secrets (typed SecretStr): set write-only, never as settings."""
    return frozenset(name for name, info in adapter.options_model.model_fields.items()
                     if _is_secret(info.annotation))


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return False


def check_account(account_type: str, platform: str, settings: Mapping[str, Any],
                  secret_names: Sequence[str]) -> list[str]:
    """What is wrong with an account's platform, settings and secret names (no value is ever quoted)."""
    try:
        adapter = adapter_for(platform)
    except KindUnavailable as exc:
        return [f"platform: {exc} (known: {', '.join(KINDS)})"]
    if adapter.channel != account_type:
        return [f"platform: {platform!r} is a {adapter.channel} provider, not {account_type}"]
    hidden = secret_fields(adapter)
    known = set(adapter.options_model.model_fields)
    problems = [f"settings.{name}: a secret; set it through the secrets, which are never shown again"
                for name in settings if name in hidden]
    problems += [f"settings.{name}: unknown for {platform} (known: {', '.join(sorted(known - hidden))})"
                 for name in settings if name not in known]
    secrets = ", ".join(sorted(hidden)) or "none"
    problems += [f"secrets.{name}: not a secret of {platform} (secrets: {secrets})"
                 for name in secret_names if name not in hidden]
    return problems


def account_options(account: ChannelAccount, secrets: Mapping[str, SecretStr]) -> ProviderOptions:
    """The adapter options of an account: its settings and opened secrets, validated by the adapter.

    Raises SwitchboardError naming the account and the option, never a value."""
    adapter = adapter_for(account.platform)
    given = {**account.settings, **{name: value.get_secret_value() for name, value in secrets.items()}}
    try:
        return adapter.options_model.model_validate(given)
    except ValidationError as exc:
        wrong = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SwitchboardError(f"channel account {account.code!r} ({account.platform}): {wrong}") from None


@dataclass(frozen=True)
class AccountRoute:
    """An account ready to send through: its route (named by the account's code) and who may use it."""

    route: Route
    apps: frozenset[str]
    revision: int


class AccountRoutes:
    """The enabled accounts as routes, read from Redis at most every `cache_seconds`."""

    def __init__(self, accounts: ChannelAccounts, deps: ChannelDeps, cache_seconds: float = CACHE_SECONDS,
                 reserved: frozenset[str] = frozenset()) -> None:
        """`reserved`: the providers file's names, which an account's code may not shadow."""
        self._accounts = accounts
        self._deps = deps
        self._cache_seconds = cache_seconds
        self._reserved = reserved
        self._fresh_until = 0.0
        self._routes: dict[str, AccountRoute] = {}
        self._warned: set[tuple[str, int]] = set()

    @property
    def latest(self) -> Mapping[str, AccountRoute]:
        """The routes as last read (no round trip), by code."""
        return self._routes

    def channels(self) -> frozenset[str]:
        """The channel types that have an enabled account, as last read."""
        return frozenset(entry.route.adapter.channel for entry in self._routes.values())

    async def refresh(self) -> Mapping[str, AccountRoute]:
        """The routes, read again from Redis when older than `cache_seconds`."""
        if time.monotonic() < self._fresh_until:
            return self._routes
        routes: dict[str, AccountRoute] = {}
        for live in await self._accounts.live():
            built = self._route(live)
            if built is not None:
                routes[live.account.code] = built
        stale = [entry.route.adapter for code, entry in self._routes.items()
                 if routes.get(code) is not entry]
        if stale or routes.keys() != self._routes.keys():
            log.info("channel accounts in use: %s", ", ".join(
                f"{code} ({entry.route.adapter.channel}, apps {','.join(sorted(entry.apps)) or 'none'})"
                for code, entry in sorted(routes.items())) or "none")
        self._routes = routes
        self._fresh_until = time.monotonic() + self._cache_seconds
        for adapter in stale:
            await adapter.close()
        return routes

    def _route(self, live: LiveAccount) -> AccountRoute | None:
        account = live.account
        current = self._routes.get(account.code)
        if current is not None and current.revision == account.revision:
            return current
        try:
            if account.code in self._reserved:
                raise SwitchboardError(f"channel account {account.code!r} has the name of a provider in the "
                                       "providers file; rename one of them")
            options = account_options(account, live.secrets())
            adapter = adapter_for(account.platform).from_options(options, self._deps)
        except (SwitchboardError, KindUnavailable, ValueError) as exc:
            # One broken account must not stop the others; said once per revision, never with a secret.
            if (account.code, account.revision) not in self._warned:
                self._warned.add((account.code, account.revision))
                log.error("channel account %s left out: %s", account.code, exc)
            return None
        rate = Rate(account.rate.per_second, account.rate.burst) if account.rate else None
        route = Route(account.code, adapter, account.priority, rate, account.cost_per_message)
        return AccountRoute(route, account.apps, account.revision)

class AccountAwareChain(Channel):
    """One channel over the providers file's routes and the accounts' routes the sending app may use."""

    provider = "failover"

    def __init__(self, channel: ChannelName, fixed: Sequence[Route], accounts: AccountRoutes,
                 limiter: RateLimiter) -> None:
        self.channel = channel  # type: ignore[misc]  # a chain serves whichever channel it is given
        self._fixed = tuple(fixed)
        self._accounts = accounts
        self._limiter = limiter
        self._breaker = CircuitBreaker()  # one per channel, kept across the chains built per send
        self._built: dict[str, Channel] = {}

    def _account_routes(self, app: str | None) -> list[AccountRoute]:
        return [entry for entry in self._accounts.latest.values()
                if entry.route.adapter.channel == self.channel and (app is None or app in entry.apps)]

    @property
    def routes(self) -> list[Route]:
        """Every route as last loaded: the providers file's first, then the enabled accounts'."""
        return [*self._fixed, *(entry.route for entry in self._account_routes(None))]

    def routes_for(self, app: str) -> list[Route]:
        """The routes `app` may send through: the providers file's, and the accounts authorising it."""
        accounts = [entry.route for entry in self._account_routes(app)]
        for route in accounts:
            if self._built.get(route.name) is not route.adapter:
                # A changed account (a new secret, say) deserves a fresh try, whatever its old self did.
                self._breaker.succeeded(route.name)
                self._built[route.name] = route.adapter
        return [*self._fixed, *accounts]

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        await self._accounts.refresh()
        app = dispatch.event.app
        routes = self.routes_for(app)
        if not routes:
            others = [entry.route.name for entry in self._account_routes(None)]
            why = (f"{', '.join(others)} not authorised for app {app!r}" if others
                   else "no enabled account")
            raise PermanentSendError(f"no {self.channel} provider that app {app!r} may send through ({why})")
        chain = ProviderChain(self.channel, routes, self._limiter, breaker=self._breaker)
        return await chain.send(message, address, dispatch)

    def accepts(self, address: str) -> bool:
        routes = self.routes
        # No route yet: let send say why (the receipt names the missing authorisation).
        return not routes or any(route.adapter.accepts(address) for route in routes)

    def provider_named(self, name: str) -> Channel:
        for route in [*self._fixed, *(entry.route for entry in self._account_routes(None))]:
            if route.name == name:
                return route.adapter
        raise LookupError(f"channel {self.channel} has no provider named {name!r}")

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        raise CallbackRejected(
            f"a callback names its provider: use provider_named() on the {self.channel} chain"
        )

    @property
    def has_fixed_routes(self) -> bool:
        return bool(self._fixed)

    async def close(self) -> None:
        for route in self._fixed:
            await route.adapter.close()


class ChannelBook(Mapping[str, Channel]):
    """The worker's channels by name: the fixed ones, and a chain for each channel type the providers
    file or an enabled account serves, as last read (so `in` and `available` follow the accounts)."""

    def __init__(self, fixed: Mapping[str, Channel], chains: Iterable[AccountAwareChain],
                 accounts: AccountRoutes) -> None:
        self._fixed = dict(fixed)
        self._chains: dict[str, AccountAwareChain] = {chain.channel: chain for chain in chains}
        self._accounts = accounts
        self._served = {name for name, chain in self._chains.items() if chain.has_fixed_routes}

    def _live(self) -> set[str]:
        return set(self._fixed) | self._served | (set(self._chains) & self._accounts.channels())

    def __getitem__(self, name: str) -> Channel:
        if name in self._fixed:
            return self._fixed[name]
        if name in self._live():
            return self._chains[name]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._live()))

    def __len__(self) -> int:
        return len(self._live())

    async def refresh(self) -> None:
        await self._accounts.refresh()


class CallbackProviders(Mapping[str, Channel]):
    """Providers by name for the API's delivery callbacks: the providers file's, and each enabled
    account's under its code, as last read (`follow` keeps them fresh)."""

    def __init__(self, fixed: Mapping[str, Channel], accounts: AccountRoutes) -> None:
        self._fixed = dict(fixed)
        self._accounts = accounts

    def _all(self) -> dict[str, Channel]:
        return {**{code: entry.route.adapter for code, entry in self._accounts.latest.items()}, **self._fixed}

    def __getitem__(self, name: str) -> Channel:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    async def follow(self, every: float = 1.0) -> None:
        """Read the accounts again every `every` seconds, until cancelled; Redis trouble is only logged."""
        while True:
            try:
                await self._accounts.refresh()
            except Exception:  # nothing here may stop the API; the last accounts read stay in use
                log.exception("reading the channel accounts failed; keeping the last ones read")
            await asyncio.sleep(every)
