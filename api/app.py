"""The HTTP API's app factory: events and conversions in, the inbox for the portal, signed links,
consent, provider callbacks, a health check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api.approvals import approvals_router
from api.apps import apps_router
from api.audit import audit_router
from api.auth import sessions_router
from api.body_limit import BodyLimit
from api.budgets import budgets_router
from api.callbacks import callbacks_router
from api.campaigns import campaigns_router
from api.channel_accounts import channel_accounts_router
from api.consent import consent_router
from api.console import mount_console
from api.conversions import conversions_router
from api.data_rights import data_rights_router
from api.dead_letters import dead_letters_router
from api.deps import ApiDeps, BodyLimits
from api.events import events_router
from api.inbox import inbox_router
from api.links import links_router
from api.metrics import RequestMetrics, metrics_router
from api.operators import operators_router
from api.people import people_router
from api.problems import install_problem_handlers
from api.publisher import PublishError
from api.reports import reports_router
from api.roles import roles_router
from api.segments import segments_router
from api.strategies import strategies_router
from api.templates import templates_router
from api.uploads import uploads_router
from api.user_tokens import user_tokens_router
from api.whitelist import whitelist_router
from channels.base import Channel
from metrics import catalog
from state.apps import AppRegistry
from state.segments import SegmentStore

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0

_DESCRIPTION = """\
Switchboard (消息中台) takes events from business systems and gets the right message to each
recipient on the right channel. Authenticate with `Authorization: Bearer ...`: an app's key (`sbk_...`,
or `X-Api-Key`), an operator's token or session (`sbo_...`, `sbs_...`), or an end-user token (`sbu_...`).
An event is accepted (202) only once it is durably on the `events` topic.
"""
_TAGS = [
    {"name": "events", "description": "Submit events from business systems."},
    {"name": "conversions", "description": "Report business outcomes, to be attributed to messages."},
    {"name": "inbox", "description": "The in-app inbox, for its user (with a token their app minted)."},
    {"name": "links", "description": "Open pixel, click redirects and one-click unsubscribe (signed)."},
    {"name": "consent", "description": "Unsubscriptions, opt-ins and the blacklist."},
    {"name": "whitelist", "description": "The whitelist (白名单) and test mode."},
    {"name": "callbacks", "description": "Delivery-status callbacks from providers, verified per provider."},
    {"name": "reports", "description": "The calling app's funnel and message traces (its messages only)."},
    {"name": "audit", "description": "The audit log, for auditors."},
    {"name": "dead letters", "description": "Dead-lettered events: list, inspect, replay (audited)."},
    {"name": "approvals", "description": "Held messages awaiting approval, and the approval policies."},
    {"name": "budgets", "description": "Budgets per app or campaign and period, with what was spent."},
    {"name": "templates", "description": "Stored templates with versions: save, preview, diff, publish."},
    {"name": "segments", "description": "Named segment definitions, evaluated at send; counts and samples."},
    {"name": "uploads", "description": "Recipient lists (CSV, XLSX) an event names as its audience."},
    {"name": "campaigns", "description": "Compose, submit, cancel and recall campaigns; their reach."},
    {"name": "operators", "description": "Log in; operators, their roles and tokens; who am I."},
    {"name": "apps", "description": "Upstream apps: register, disable, enable, rotate the key, remove."},
    {"name": "health", "description": "Liveness of Redis and the broker."},
    {"name": "people", "description": "Data rights: export or erase everything held about one person."},
]


def create_api(
    deps: ApiDeps, providers: Mapping[str, Channel] | None = None, metrics_allow: Sequence[str] = ()
) -> FastAPI:
    """Build the API around its collaborators; the publisher starts and stops with the app.

    `providers` maps the configured provider names to their adapters, for their callbacks;
    `metrics_allow` the networks that may scrape /metrics (none: it is not served).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await deps.publisher.start()
        # The catalog events are checked with follows the live versions of stored templates.
        following = asyncio.create_task(deps.template_versions.follow()) if deps.template_versions else None
        try:
            yield
        finally:
            if following is not None:
                following.cancel()
            await deps.publisher.stop()

    api = FastAPI(
        title="Switchboard API",
        description=_DESCRIPTION,
        version=_version(),
        openapi_tags=[tag for tag in _TAGS if tag["name"] in _mounted(deps)],
        lifespan=lifespan,
    )
    install_problem_handlers(api)
    limits = deps.limits
    api.add_middleware(BodyLimit, limit_for=lambda path: _body_limit(limits, path))
    api.add_middleware(RequestMetrics)
    if metrics_allow:
        api.include_router(metrics_router(metrics_allow))
    api.include_router(events_router(deps))
    api.include_router(conversions_router(deps))
    api.include_router(inbox_router(deps))
    if deps.channel_accounts is not None:
        api.include_router(channel_accounts_router(deps, deps.channel_accounts))
    if deps.links is not None:
        api.include_router(links_router(deps, deps.links))
    if deps.consent is not None:
        api.include_router(consent_router(deps, deps.consent))
        api.include_router(whitelist_router(deps, deps.consent.whitelist, deps.consent.test_mode_everywhere))
    if deps.provider_messages is not None:
        # `is None`, not falsy: a live directory of channel accounts may be empty at start-up.
        known = providers if providers is not None else {}
        api.include_router(callbacks_router(deps, known, deps.provider_messages))
    if deps.analytics is not None:
        api.include_router(reports_router(deps, deps.analytics))
        api.include_router(audit_router(deps, deps.analytics))
    if deps.data_rights is not None:
        api.include_router(data_rights_router(deps, deps.data_rights))
    if deps.dead_letters is not None:
        api.include_router(dead_letters_router(deps, deps.dead_letters, deps.accepted_events))
    if deps.approvals is not None:
        api.include_router(approvals_router(deps, deps.approvals))
    if deps.budgets is not None:
        api.include_router(budgets_router(deps, deps.budgets))
    if deps.template_versions is not None:
        api.include_router(templates_router(deps, deps.template_versions))
    if isinstance(deps.segments, SegmentStore):
        api.include_router(segments_router(deps, deps.segments))
    if deps.rules is not None:
        api.include_router(strategies_router(deps, deps.rules))
    if deps.uploads is not None:
        api.include_router(uploads_router(deps, deps.uploads))
    if deps.campaigns is not None:
        api.include_router(campaigns_router(deps, deps.campaigns))
    if deps.people is not None:
        api.include_router(people_router(deps, deps.people))
    operators = deps.access.operators
    if operators is not None:
        api.include_router(sessions_router(deps, operators))
        api.include_router(operators_router(deps, operators))
        api.include_router(roles_router(deps, operators))
        mount_console(api, deps)  # the operator console, on the same stores and checks (api/console)
    if isinstance(deps.apps, AppRegistry):
        api.include_router(apps_router(deps, deps.apps))
    if deps.access.user_tokens is not None:
        api.include_router(user_tokens_router(deps, deps.access.user_tokens))

    @api.exception_handler(PublishError)
    async def not_acknowledged(_: Request, exc: PublishError) -> JSONResponse:
        catalog.INFRASTRUCTURE_ERRORS.labels("broker", "api").inc()
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": f"not accepted, retry later: {exc}"},
            headers={"Retry-After": "1"},
        )

    @api.exception_handler(RedisError)
    async def state_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        log.warning("%s %s: Redis failed: %r", request.method, request.url.path, exc)
        catalog.infrastructure_error(exc, "api")
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": "state store unavailable, retry later"},
            headers={"Retry-After": "1"},
        )

    @api.get("/healthz", tags=["health"], summary="Check Redis and the broker")
    async def healthz() -> JSONResponse:
        checks = {"redis": await _check_redis(deps), "publisher": await _check_publisher(deps)}
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(
            status_code=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"status": "ok" if healthy else "down", **checks},
        )

    return api


def _body_limit(limits: BodyLimits, path: str) -> int:
    """One event per body at /v1/events: its limit is the event limit; an uploaded list has its own."""
    if path == "/v1/events":
        return limits.event_bytes
    return limits.upload_bytes if path == "/v1/uploads" else limits.body_bytes


def _mounted(deps: ApiDeps) -> set[str]:
    """The tags of the routers these deps switch on, so the docs list only what answers."""
    optional = {
        "links": deps.links,
        "consent": deps.consent,
        "callbacks": deps.provider_messages,
        "reports": deps.analytics,
        "people": deps.data_rights or deps.people,
        "audit": deps.analytics,
        "dead letters": deps.dead_letters,
        "approvals": deps.approvals,
        "budgets": deps.budgets,
        "templates": deps.template_versions,
        "segments": deps.segments if isinstance(deps.segments, SegmentStore) else None,
        "uploads": deps.uploads,
        "campaigns": deps.campaigns,
        "operators": deps.access.operators,
        "apps": deps.apps if isinstance(deps.apps, AppRegistry) else None,
    }
    always = {"events", "conversions", "inbox", "health"}
    return always | {name for name, part in optional.items() if part is not None}


async def _check_redis(deps: ApiDeps) -> str:
    try:
        await asyncio.wait_for(deps.redis.ping(), HEALTH_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"down: {exc!r}"
    return "ok"


async def _check_publisher(deps: ApiDeps) -> str:
    try:
        await deps.publisher.check()
    except PublishError as exc:
        return f"down: {exc}"
    return "ok"


def _version() -> str:
    try:
        return version("switchboard")
    except PackageNotFoundError:
        return "0.0.0"
