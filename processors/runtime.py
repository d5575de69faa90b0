"""Builds the running flow from settings: real clients, the stages, the Faust app and its worker."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import faust
import httpx

from channels.base import RetryPolicy
from channels.costs import estimated_costs
from channels.links import LinkSigner
from channels.registry import build_channels
from channels.sensitive import SensitiveWords
from channels.template_versions import StoredTemplateFeed
from channels.templates import TemplateCatalog
from metrics.exposition import serve_metrics
from processors.alert_rules import AlertFile, AlertFileError, load_alerts
from processors.approvals import ApprovalDesk, ApprovalGate, OperatorApprovers
from processors.broadcast import BroadcastExpander
from processors.content import ContentGuard
from processors.decide import Decide
from processors.fallback import FallbackDispatcher
from processors.ingest import Ingest
from processors.send import Send
from processors.topology import FlowStages, FlowTopics, create_app, register_agents
from processors.track import Track
from processors.tuning import freeze_startup_heap, quiet_debug_logging, tune_collection
from processors.watch import Watch, register_watch
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from rules.watch import RulesWatcher
from settings import Settings, SwitchboardError
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.apps import WORKER_CACHE_SECONDS, AppRegistry
from state.broadcasts import BroadcastJobs
from state.budgets import BudgetStore
from state.campaigns import CancelledCampaigns
from state.caps import FrequencyCaps
from state.channel_accounts import ChannelAccounts
from state.channel_grants import AppChannelGrants
from state.connection import open_redis, outage_of
from state.consent import ConsentStore
from state.dedup import EventDedup
from state.engagement import EngagementHistory
from state.fallback import FallbackSchedule
from state.flow_counters import FlowCounters
from state.idempotency import SendLedger
from state.offline import OfflineKeep
from state.operators import OperatorStore
from state.pacing import Pacer
from state.provider_messages import ProviderMessages
from state.schedule import DeliverySchedule, ParkedDispatches
from state.segments import SegmentStore
from state.template_store import TemplateStore
from state.uploads import UploadStore
from state.users import UserDirectory
from state.watch import Incidents, LagBoard, WatchWindow

log = logging.getLogger("switchboard.runtime")

TOPIC_NAMES = {
    "events": "events",
    "dead_letter": "events.deadletter",
    "accepted": "events.accepted",
    "deliveries": "deliveries",
    "dispatch": "dispatch",
    "receipts": "receipts",
    "events_urgent": "events.urgent",
    "deliveries_urgent": "deliveries.urgent",
    "dispatch_urgent": "dispatch.urgent",
}


def topic_names(settings: Settings) -> dict[str, str]:
    return {key: settings.topic(name) for key, name in TOPIC_NAMES.items()}


@dataclass
class Flow:
    app: faust.App
    topics: FlowTopics
    stages: FlowStages


def build_flow(settings: Settings) -> Flow:
    """Everything is checked here, before the worker joins the group: rules and templates. The worker
    never opens ClickHouse (the analytics service writes it), so any number of workers can run."""
    # One catalog, checked against the rules and shared by every stage: the rules watcher reloads
    # both together, so a rule never names a template the worker cannot render.
    templates = TemplateCatalog(settings.templates)
    ruleset = load_ruleset(settings.rules, templates.parts())
    alerts = _alerts(settings)
    # Patient: while Redis is away every stage waits where it is and resumes with its batch in hand.
    redis = open_redis(settings.redis, patient=True)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
    channels = build_channels(settings, redis, http)
    directory = UserDirectory(redis)
    # Channel accounts widen the channels an app may use (state.channel_grants) and add routes.
    apps = AppChannelGrants(AppRegistry(redis, cache_seconds=WORKER_CACHE_SECONDS),
                            ChannelAccounts(redis, settings.secret_box(), settings.channel_account_quota))
    schedule = DeliverySchedule(redis)
    engine = AsyncRuleEngine(ruleset)
    fallback = FallbackSchedule(redis)
    consent = ConsentStore(redis, opt_in=settings.consent_opt_in, test_mode=settings.test_mode)
    engagement = EngagementHistory(redis)
    offline = OfflineKeep(redis)
    available = channels.keys()  # live: a channel served only by accounts comes and goes with them
    jobs = BroadcastJobs(redis)
    budgets = BudgetStore(
        redis, cache_seconds=WORKER_CACHE_SECONDS, counted_ttl_seconds=settings.dedup_ttl_seconds
    )
    costs = estimated_costs(channels)
    counters = FlowCounters(redis)
    approvals = ApprovalStore(redis)
    segments = SegmentStore(redis)
    cancelled = CancelledCampaigns(redis)  # checked by broadcast, decide and send
    stages = FlowStages(
        ingest=Ingest(
            directory,
            apps,
            templates,
            EventDedup(redis, settings.dedup_ttl_seconds),
            max_event_bytes=settings.max_event_bytes,
            jobs=jobs,
            page=settings.broadcast_page,
            approvals=ApprovalGate(
                PolicyStore(redis), approvals, directory, segments=segments, uploads=UploadStore(redis)
            ),
            signatures=settings.events_signatures == "required",
            segments=segments,
            uploads=UploadStore(redis),
        ),
        decide=Decide(
            directory,
            apps,
            engine,
            schedule,
            available,
            consent=consent,
            engagement=engagement,
            pacer=Pacer(redis),
            offline=offline,
            fallback=fallback,
            budgets=budgets,
            costs=costs,
            cancelled=cancelled,
        ),
        send=Send(
            channels,
            templates,
            directory,
            SendLedger(redis, settings.dedup_ttl_seconds, settings.send_claim_seconds),
            RetryPolicy(),
            consent=consent,
            caps=FrequencyCaps(redis),
            content=ContentGuard(
                words=_sensitive_words(settings.sensitive_words),
                links=LinkSigner(settings.signing_secret(), settings.public_url),
            ),
            sent=ProviderMessages(redis, settings.dedup_ttl_seconds),
            budgets=budgets,
            costs=costs,
            cancelled=cancelled,
        ),
        track=Track(fallback=fallback, engagement=engagement),
        schedule=schedule,
        parked=ParkedDispatches(redis),
        counters=counters,
        fallback=fallback,
        fallbacks=FallbackDispatcher(directory, apps, available),
        engine=engine,
        offline=offline,
        directory=directory,
        rules=RulesWatcher(settings.rules, settings.templates, current=ruleset, catalog=templates),
        broadcasts=BroadcastExpander(
            jobs,
            directory.walk,
            counters,
            holder=f"{settings.app_id}:{uuid.uuid4().hex}",
            page=settings.broadcast_page,
            backlog=settings.broadcast_backlog,
            lease_seconds=settings.broadcast_lease_seconds,
            segments=segments.evaluator,
            cancelled=cancelled,
        ),
        approvals=ApprovalDesk(approvals, OperatorApprovers(OperatorStore(redis)), signing=apps,
                               templates=TemplateStore(redis)),
    )
    app, topics = create_app(
        settings.app_id,
        settings.kafka,
        topic_names(settings),
        settings.partitions,
        datadir=_faust_dir(settings),
        redis_outage=outage_of(redis),
    )
    register_agents(app, topics, stages)

    @app.timer(1.0, name="read_channel_accounts")  # type: ignore[untyped-decorator]
    async def read_channel_accounts() -> None:
        await channels.refresh()

    # Stored templates: a newly live version renders within a second or two, without a restart.
    stored_templates = first_stored_templates(settings, templates, TemplateStore(redis))

    @app.timer(1.0, name="read_stored_templates")  # type: ignore[untyped-decorator]
    async def read_stored_templates() -> None:
        try:
            await stored_templates.refresh()
        except Exception:  # the next tick tries again; the catalog keeps what it serves
            log.exception("reading the live stored templates failed")

    stage_topics = {"ingest": topics.events, "decide": topics.deliveries, "send": topics.dispatch,
                    "track": topics.receipts}
    watch = Watch(WatchWindow(redis), LagBoard(redis), Incidents(redis), schedule, stages.parked, alerts,
                  signing_keys=apps)
    register_watch(app, stage_topics, topics.events, watch)
    return Flow(app=app, topics=topics, stages=stages)


def first_stored_templates(
    settings: Settings, catalog: TemplateCatalog, store: TemplateStore
) -> StoredTemplateFeed:
    """The live stored templates read into the catalog before any stage runs, so an event naming one is
    not refused in the second before the feed's first tick. Redis away: the feed's ticks catch up."""
    import asyncio

    async def read() -> StoredTemplateFeed:
        # A client of this loop only: the flow's own is used on Faust's loop.
        redis = open_redis(settings.redis)
        try:
            feed = StoredTemplateFeed(TemplateStore(redis), catalog)
            await feed.refresh()
            return feed
        finally:
            await redis.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return asyncio.run(read()).reading(store)
        except Exception as exc:  # Redis not there yet: the worker starts, and reads them on its ticks
            log.warning("stored templates not read at start (%s); reading them once Redis answers", exc)
    return StoredTemplateFeed(store, catalog)


def _alerts(settings: Settings) -> AlertFile | None:
    """The alert file, checked before the worker starts; None (alerts off) when there is none."""
    if not settings.alerts.is_file():
        log.warning("no alert file at %s: Switchboard does not evaluate alerts", settings.alerts)
        return None
    try:
        return load_alerts(settings.alerts)
    except AlertFileError as exc:
        raise SwitchboardError(f"the alert file does not load (switchboard alerts check):\n{exc}") from None


def _sensitive_words(path: Path) -> SensitiveWords | None:
    """The configured list; an empty setting turns screening off (and a warning says so)."""
    if not str(path) or str(path) == ".":
        log.warning("SWITCHBOARD_SENSITIVE_WORDS is empty: messages are not screened")
        return None
    # A configured list that is missing is an error: silently sending unscreened is worse.
    return SensitiveWords.from_file(path)


def _faust_dir(settings: Settings) -> Path:
    folder = settings.var_dir / "faust"
    folder.mkdir(parents=True, exist_ok=True)  # Faust creates its app folder inside, not the parents
    return folder


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until SIGTERM/SIGINT; Faust stops the agents and commits what they acked."""
    flow = build_flow(settings)
    serve_metrics(settings.metrics_host, settings.metrics_port, "worker")
    if settings.runtime_tuning:
        tune_collection()
        if loglevel.lower() != "debug":
            quiet_debug_logging()

        @flow.app.task  # type: ignore[untyped-decorator]
        async def freeze_after_start() -> None:
            # Runs once the app has started: the start-up heap is built, the records not yet flowing.
            log.info("froze %d start-up objects out of garbage collection", freeze_startup_heap())

    worker = faust.Worker(flow.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
