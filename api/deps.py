"""What the API needs from the rest of Switchboard, passed in so tests can choose real or fake."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from api.access import Access, AppKeys
from api.analytics_reader import LazyReader
from api.approval_service import Approvals
from api.campaign_service import CampaignDesk
from api.dead_letter_replay import AcceptedEvents
from api.person_rights import DataRights
from api.publisher import Publisher
from api.template_service import Templates
from api.trace import Tracer
from channels.links import LinkSigner
from processors.dead_letter_shelf import DeadLetterShelf
from rules.schema import Ruleset
from settings import Settings
from state.budgets import BudgetStore
from state.channel_accounts import ChannelAccounts
from state.consent import ConsentStore
from state.inbox import InboxMessage
from state.provider_messages import ProviderMessages
from state.uploads import UploadStore
from state.users import UserDirectory
from state.watch import Incidents, LagBoard


class InboxStore(Protocol):
    """The per-user inbox (`state.inbox.Inbox`)."""

    async def list(self, user_id: str, limit: int = 20, offset: int = 0) -> list[InboxMessage]: ...

    async def unread_count(self, user_id: str) -> int: ...

    async def total(self, user_id: str) -> int: ...

    async def mark_read(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]: ...

    async def mark_clicked(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]: ...

    async def delete(self, user_id: str, message_id: str) -> bool: ...


class TemplateNames(Protocol):
    """The template catalog the worker renders with (`channels.templates.TemplateCatalog`)."""

    def __contains__(self, template: object) -> bool: ...

    def check_data(self, template: str, data: Mapping[str, Any]) -> list[str]: ...


class LoadedRules(Protocol):
    """The rule files as the worker runs them (`rules.watch.RulesWatcher`): None until first loaded."""

    @property
    def ruleset(self) -> Ruleset | None: ...


class Segments(Protocol):
    """Where segments live: definitions and saved sets (`state.segments.SegmentStore`)."""

    async def has_segment(self, segment: str) -> bool: ...


_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class UploadSettings:
    """The uploaded lists' store and how much of their row errors an answer shows, and is kept."""

    store: UploadStore
    errors_shown: int = _DEFAULTS["upload_errors_shown"].default
    errors_kept: int = _DEFAULTS["upload_errors_kept"].default


@dataclass(frozen=True)
class BodyLimits:
    """The largest request bodies, in bytes: an event (also each event of a batch), any other body."""

    event_bytes: int = _DEFAULTS["max_event_bytes"].default
    body_bytes: int = _DEFAULTS["max_body_bytes"].default
    upload_bytes: int = _DEFAULTS["upload_max_bytes"].default

    @classmethod
    def of(cls, settings: Settings) -> BodyLimits:
        return cls(event_bytes=settings.max_event_bytes, body_bytes=settings.max_body_bytes,
                   upload_bytes=settings.upload_max_bytes)


@dataclass(frozen=True)
class Analytics:
    """Reports and traces: the lazily opened ClickHouse reader, and the tracer over it and Redis."""

    reader: LazyReader
    tracer: Tracer


@dataclass(frozen=True)
class WatchBoard:
    """What the watch evaluator keeps in Redis (`state.watch`): the incidents firing, each stage's lag."""

    incidents: Incidents
    lag: LagBoard


class Pingable(Protocol):
    """A Redis client, as far as the health check is concerned."""

    def ping(self, **kwargs: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class ApiDeps:
    """The API's collaborators: app keys, the inbox, the publisher, Redis for the health check, and the
    template catalog and segments that events are checked against before they are accepted.

    The optional ones switch on their endpoints: `links` the tracking and unsubscribe links (and,
    with `consent`, the one-click unsubscribe), `consent` the consent endpoints, `provider_messages`
    the provider callbacks, `analytics` the reports and message traces. `access` authenticates every
    request and checks its permission (`api.access`).
    """

    apps: AppKeys
    inbox: InboxStore
    publisher: Publisher
    redis: Pingable
    templates: TemplateNames
    segments: Segments
    limits: BodyLimits = BodyLimits()
    links: LinkSigner | None = None
    consent: ConsentStore | None = None
    provider_messages: ProviderMessages | None = None
    analytics: Analytics | None = None
    channel_accounts: ChannelAccounts | None = None  # switches on /v1/channel-accounts
    # Dead letters for operators (api/dead_letters.py): the topic's reader, and ingest's dedup to say
    # whether a replay would be dropped as a duplicate.
    dead_letters: DeadLetterShelf | None = None
    accepted_events: AcceptedEvents | None = None
    approvals: Approvals | None = None
    events_signatures_required: bool = True
    """Ingest refuses unsigned `events` records (SWITCHBOARD_EVENTS_SIGNATURES): the API refuses (409) to
    publish for an app without a signing key instead of accepting what ingest would dead-letter."""
    access: Access = None  # type: ignore[assignment]  # None: app keys only, made from `apps` below
    data_rights: DataRights | None = None
    budgets: BudgetStore | None = None
    template_versions: Templates | None = None  # switches on /v1/templates (stored, versioned)
    rules: LoadedRules | None = None
    """The loaded rule files: switches on /v1/strategies, and refuses (422) an event naming a strategy
    they do not define."""
    uploads: UploadSettings | None = None  # switches on /v1/uploads (api/uploads.py)
    campaigns: CampaignDesk | None = None  # switches on /v1/campaigns
    people: UserDirectory | None = None  # switches on /v1/people (api/people.py)
    watch: WatchBoard | None = None  # open alerts and lag on the console's overview

    def __post_init__(self) -> None:
        # Tests that predate operators pass no `access`: their app keys still work, nothing else does.
        if self.access is None:
            object.__setattr__(self, "access", Access(self.apps))


__all__ = ["Access", "Analytics", "ApiDeps", "AppKeys", "BodyLimits", "UploadSettings"]
