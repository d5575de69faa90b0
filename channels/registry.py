"""Builds the configured channels from the settings, with the clients passed in.

Email, inbox and webhook come from the settings; every other channel is a chain over the providers of
the providers file and the enabled channel accounts (`channels.accounts`), rate limited through Redis
token buckets shared by all workers.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import httpx
from redis.asyncio import Redis

from channels.accounts import AccountAwareChain, AccountRoutes, CallbackProviders, ChannelBook
from channels.base import Channel, ChannelDeps
from channels.email_smtp import SmtpEmail
from channels.failover import ProviderChain, Route
from channels.inbox import InboxChannel
from channels.links import LinkSigner
from channels.providers import ProviderSpec, load_providers
from channels.webhook import Webhook
from records.topics import ChannelName
from settings import Settings
from state.channel_accounts import ACCOUNT_TYPES, ChannelAccounts
from state.inbox import Inbox
from state.rate_limit import TokenBucket

log = logging.getLogger(__name__)


def build_channels(settings: Settings, redis: Redis, http_client: httpx.AsyncClient) -> ChannelBook:
    """Email and inbox always; webhook only with a signing secret (unsigned webhooks are not sent);
    a chain per channel type over the providers file's providers and the enabled channel accounts.

    Raises `channels.providers.ProvidersFileError` for a bad providers file, SwitchboardError without a
    usable master key: better not to start.
    """
    channels: dict[str, Channel] = {
        "email": SmtpEmail(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            connections=settings.smtp_connections,
            links=LinkSigner(settings.signing_secret(), settings.public_url),
        ),
        "inbox": InboxChannel(Inbox(
            redis, max_per_user=settings.inbox_max_per_user, recall_seconds=settings.inbox_recall_seconds
        )),
    }
    if settings.webhook_secret.get_secret_value():
        channels["webhook"] = Webhook(http_client, settings.webhook_secret, settings.webhook_allow)
    else:
        log.warning("webhook channel disabled: SWITCHBOARD_WEBHOOK_SECRET is not set")
    fixed = build_chains(settings, redis, http_client)
    routes = _account_routes(settings, redis, http_client, fixed)
    limiter = TokenBucket(redis)
    chains = [AccountAwareChain(kind, fixed[kind].routes if kind in fixed else (), routes, limiter)
              for kind in ACCOUNT_TYPES]
    return ChannelBook(channels, chains, routes)


def build_callback_directory(
    settings: Settings, redis: Redis, http_client: httpx.AsyncClient
) -> CallbackProviders:
    """Every provider of the providers file by its name and every enabled channel account by its code,
    for the API to parse their delivery callbacks."""
    fixed = build_chains(settings, redis, http_client)
    providers = {route.name: route.adapter for chain in fixed.values() for route in chain.routes}
    return CallbackProviders(providers, _account_routes(settings, redis, http_client, fixed))


def _account_routes(settings: Settings, redis: Redis, http_client: httpx.AsyncClient,
                    fixed: dict[str, ProviderChain]) -> AccountRoutes:
    accounts = ChannelAccounts(redis, settings.secret_box(), settings.channel_account_quota)
    reserved = frozenset(route.name for chain in fixed.values() for route in chain.routes)
    return AccountRoutes(accounts, ChannelDeps(http=http_client, redis=redis), reserved=reserved)


def configured_channels(settings: Settings) -> frozenset[str]:
    """The channels `build_channels` would build, read from the settings without building adapters
    (no clients, no secrets needed): what rule simulation takes as available."""
    built = {"email", "inbox"} | ({"webhook"} if settings.webhook_secret.get_secret_value() else set())
    if not settings.providers.is_file():
        return frozenset(built)
    specs = load_providers(settings.providers, skip_unavailable=log.warning, require_env=False)
    return frozenset(built | {spec.channel for spec in specs})


def build_chains(
    settings: Settings, redis: Redis, http_client: httpx.AsyncClient
) -> dict[str, ProviderChain]:
    """A ProviderChain per channel with providers in `settings.providers`; none if the file is absent."""
    if not settings.providers.is_file():
        log.info("no providers file at %s: only the built-in channels (email, inbox, webhook)",
                 settings.providers)
        return {}
    specs = load_providers(settings.providers, skip_unavailable=log.warning)
    if not specs:
        log.info("providers file %s enables no provider: only the built-in channels", settings.providers)
    by_channel: dict[ChannelName, list[ProviderSpec]] = defaultdict(list)
    for spec in specs:
        by_channel[spec.channel].append(spec)
    deps = ChannelDeps(http=http_client, redis=redis)
    limiter = TokenBucket(redis)
    chains: dict[str, ProviderChain] = {}
    for channel, group in by_channel.items():
        routes = [
            Route(spec.name, spec.build(deps), spec.priority, spec.rate, spec.cost_per_message)
            for spec in group
        ]
        chain = chains[channel] = ProviderChain(channel, routes, limiter)
        log.info("channel %s: providers %s", channel, ", ".join(route.name for route in chain.routes))
    return chains
