"""Run the API with real collaborators: Redis from settings, Kafka for events and receipts."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import uvicorn
from redis.asyncio import Redis

from api.access import Access
from api.analytics_reader import LazyReader
from api.app import create_api
from api.approval_service import Approvals
from api.campaign_service import campaign_desk
from api.deps import Analytics, ApiDeps, BodyLimits, LoadedRules, UploadSettings, WatchBoard
from api.person_rights import data_rights_of
from api.publisher import KafkaPublisher, bootstrap_servers
from api.template_service import build_templates
from api.trace import Tracer
from channels.accounts import CallbackProviders
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from processors.dead_letter_shelf import DeadLetterShelf
from rules.watch import RulesWatcher
from settings import Settings
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.auth_failures import AuthFailures, FailureLimits
from state.budgets import BudgetStore
from state.channel_accounts import ChannelAccounts
from state.connection import open_redis
from state.consent import ConsentStore
from state.dedup import EventDedup
from state.flow_counters import FlowCounters
from state.inbox import Inbox
from state.operators import OperatorStore
from state.provider_messages import ProviderMessages
from state.roles import RoleStore
from state.segments import SegmentStore
from state.uploads import UploadStore
from state.user_tokens import UserTokenSigner
from state.users import UserDirectory
from state.watch import Incidents, LagBoard

# Callback URLs carry provider tokens in their query (Aliyun's `?token=`), and link paths carry
# capabilities (an unsubscribe token): neither belongs in an access log.
_CAPABILITY = re.compile(r"^(/t/[oc]/|/u/)[^/?]+")


class RedactedAccessLog(logging.Filter):
    """Drops query strings and link tokens from uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _CAPABILITY.sub(r"\1…", args[2].split("?", 1)[0])
            record.args = (args[0], args[1], path, args[3], args[4])
        return True


def build_deps(
    settings: Settings,
    redis: Redis,
    templates: TemplateCatalog | None = None,
    rules: LoadedRules | None = None,
) -> ApiDeps:
    """The production wiring, shared by `serve` and the integration tests; `rules` (the watcher that
    keeps the templates too) switches on the strategies endpoint and the events' strategy check."""
    from analytics.connection import open_reader

    # Opened by the first report, never at start-up: the API starts while the analytics service does not run.
    reader = LazyReader(lambda: open_reader(settings))
    apps = AppRegistry(redis)
    publisher = KafkaPublisher(
        settings.kafka,
        events_topic=settings.topic("events"),
        receipts_topic=settings.topic("receipts"),
        conversions_topic=settings.topic("conversions"),
        audit_topic=settings.topic("audit"),
        erasures_topic=settings.topic("erasures"),
        counters=FlowCounters(redis),
    )
    catalog = templates if templates is not None else TemplateCatalog(settings.templates)
    return ApiDeps(
        apps=apps,
        inbox=Inbox(redis, max_per_user=settings.inbox_max_per_user),
        publisher=publisher,
        redis=redis,
        # The catalog the worker loads, so an event it could not render is refused here already.
        templates=catalog,
        segments=SegmentStore(redis),  # definitions and saved sets (state.segments)
        limits=BodyLimits.of(settings),
        links=LinkSigner(settings.signing_secret(), settings.public_url),
        consent=ConsentStore(redis, opt_in=settings.consent_opt_in, test_mode=settings.test_mode),
        provider_messages=ProviderMessages(redis),
        analytics=Analytics(reader, Tracer(reader, redis)),
        dead_letters=DeadLetterShelf(
            bootstrap_servers(settings.kafka), settings.topic("events.deadletter"), settings.topic_prefix
        ),
        accepted_events=EventDedup(redis, settings.dedup_ttl_seconds),
        access=build_access(settings, redis, apps),
        data_rights=data_rights_of(settings, redis, publisher, reader),
        channel_accounts=ChannelAccounts(redis, settings.secret_box(), settings.channel_account_quota),
        approvals=Approvals(
            ApprovalStore(redis), PolicyStore(redis), previews=catalog, roles=RoleStore(redis)
        ),
        budgets=BudgetStore(redis),
        template_versions=build_templates(settings, redis, catalog),
        uploads=UploadSettings(UploadStore(redis), settings.upload_errors_shown, settings.upload_errors_kept),
        campaigns=campaign_desk(settings, redis, catalog),
        people=UserDirectory(redis),
        watch=WatchBoard(Incidents(redis), LagBoard(redis)),
        events_signatures_required=settings.events_signatures == "required",
        rules=rules,
    )


def build_access(settings: Settings, redis: Redis, apps: AppRegistry) -> Access:
    """Operators, app keys and end-user tokens, with failed authentication counted in Redis."""
    limits = FailureLimits(
        per_source=settings.access_failures_per_source,
        source_window=settings.access_failure_window_seconds,
        per_operator=settings.access_operator_failures,
        operator_window=settings.access_operator_window_seconds,
        lockout=settings.access_lockout_seconds,
    )
    operators = OperatorStore(
        redis,
        session_idle_seconds=settings.access_session_idle_seconds,
        session_max_seconds=settings.access_session_max_seconds,
    )
    return Access(apps, operators, UserTokenSigner(settings.user_token_key()), AuthFailures(redis, limits))


def build_callback_providers(settings: Settings, redis: Redis, http: httpx.AsyncClient) -> CallbackProviders:
    """Every provider by its name in the providers file, and every enabled channel account by its code,
    to parse their callbacks."""
    from channels.registry import build_callback_directory  # loads the adapters of the providers file

    return build_callback_directory(settings, redis, http)


async def run(settings: Settings) -> None:
    """Serve until cancelled or signalled, then close Redis."""
    logging.getLogger("uvicorn.access").addFilter(RedactedAccessLog())
    redis = open_redis(settings.redis)
    http = httpx.AsyncClient()
    try:
        providers = build_callback_providers(settings, redis, http)
        templates = TemplateCatalog(settings.templates)
        # One watcher keeps the templates and the rules (their strategies) as the worker runs them.
        watcher = RulesWatcher(settings.rules, settings.templates, catalog=templates)
        deps = build_deps(settings, redis, templates, watcher)
        api = create_api(deps, providers, settings.api_metrics_allow)
        config = uvicorn.Config(api, host=settings.api_host, port=settings.api_port)
        watching = asyncio.create_task(follow_templates(watcher))
        following = asyncio.create_task(providers.follow())  # channel accounts' callbacks
        try:
            await uvicorn.Server(config).serve()
        finally:
            watching.cancel()
            following.cancel()
    finally:
        await http.aclose()
        await redis.aclose()


async def follow_templates(watcher: RulesWatcher, every: float = 2.0) -> None:
    """Keep the API's template catalog the one the worker renders with: the same watcher takes changed
    templates only together with rules that accept them, so the API refuses (422) exactly what the
    worker could not render."""
    while True:
        try:
            await asyncio.to_thread(watcher.poll)
        except Exception:  # a bad file is logged by the watcher; nothing here may stop the API
            logging.getLogger(__name__).exception("following the templates failed; keeping the catalog")
        await asyncio.sleep(every)


def serve(settings: Settings) -> None:
    """Blocking entry point for the command line."""
    asyncio.run(run(settings))
